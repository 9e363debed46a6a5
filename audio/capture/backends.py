"""Which backend captures a source, and the ring format a source needs."""

from __future__ import annotations

from audio.capture.base import Capture, CaptureStats
from audio.capture.errors import CaptureError
from audio.capture.file_backend import FileCapture, file_format
from audio.capture.pyaudio_backend import PyaudioCapture
from audio.capture.ring import RingBuffer
from audio.capture.sounddevice_backend import SounddeviceCapture
from audio.capture.synthetic import SyntheticCapture
from audio.source import AudioSource

BACKENDS: dict[str, type[Capture]] = {
    "sounddevice": SounddeviceCapture,
    "pyaudio": PyaudioCapture,
    "file": FileCapture,
    "synthetic": SyntheticCapture,
}


def capture_format(source: AudioSource) -> tuple[int, int]:
    """(rate, channels) the capture runs at: the source's, or for a file without those options the file's own."""
    rate, channels = source.rate, source.channels
    if source.kind == "file":
        try:
            file_rate, file_channels = file_format(source.target)
        except CaptureError:  # unreadable now: the supervisor reports it and retries with the source's format
            return rate, channels
        rate = rate if "rate" in source.options else file_rate
        channels = channels if "channels" in source.options else file_channels
    return rate, channels


def ring_for_source(source: AudioSource, seconds: float = 30.0) -> RingBuffer:
    """A ring buffer holding `seconds` of the source's audio."""
    rate, channels = capture_format(source)
    return RingBuffer(channels, rate, seconds)


def open_capture(source: AudioSource, ring: RingBuffer, stats: CaptureStats | None = None) -> Capture:
    """A started capture of `source` into `ring`; raises CaptureError (BackendUnavailable, NoInputDevice, ...)."""
    capture = BACKENDS[source.kind](source, ring, stats)
    capture.start()
    return capture
