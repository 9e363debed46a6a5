"""Which backend captures a source, and the ring format a source needs."""

from __future__ import annotations

from hark_fleet.audio.capture.base import Capture, CaptureStats
from hark_fleet.audio.capture.errors import CaptureError
from hark_fleet.audio.capture.file_backend import FileCapture, file_format
from hark_fleet.audio.capture.pyaudio_backend import PyaudioCapture
from hark_fleet.audio.capture.ring import RingBuffer
from hark_fleet.audio.capture.sounddevice_backend import SounddeviceCapture
from hark_fleet.audio.capture.synthetic import SyntheticCapture
from hark_fleet.audio.source import AudioSource

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
