"""The sounddevice backend: a PortAudio input stream whose callback copies into the ring."""

from __future__ import annotations

import logging
import time
from typing import Any

from hark_fleet.audio.capture.base import SCALES, Capture, newest_frame_time
from hark_fleet.audio.capture.devices import find_input, load_sounddevice, sounddevice_inputs
from hark_fleet.audio.capture.errors import DeviceOpenError

log = logging.getLogger(__name__)


class SounddeviceCapture(Capture):
    """`sounddevice:<name or index>?channels=2&rate=48000&format=float32`."""

    kind = "sounddevice"

    _stream: Any = None
    _sd: Any = None
    device_name = ""

    def start(self) -> None:
        sd = self._sd = load_sounddevice()
        device = find_input(sounddevice_inputs(), self.source.target, self.ring.channels)
        self.device_name = device.name
        self._scale = SCALES[self.source.sample_format]
        try:
            self._stream = sd.InputStream(
                device=device.index,
                channels=self.ring.channels,
                samplerate=self.ring.rate,
                dtype=self.source.sample_format,
                callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as err:
            self.close()
            raise DeviceOpenError(f"cannot capture from {device.name!r}: {err}") from err
        self.stats.opened += 1

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        at = newest_frame_time(
            float(getattr(time_info, "inputBufferAdcTime", 0.0)),
            float(getattr(time_info, "currentTime", 0.0)),
            frames,
            self.ring.rate,
            time.time(),
        )
        self._deliver(indata, self._scale, bool(status.input_overflow), bool(status.input_underflow), at)

    def _finished(self) -> None:
        self._ended = True

    def alive(self) -> bool:
        stream = self._stream
        return not self._ended and stream is not None and bool(stream.active)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
        except self._sd.PortAudioError as err:  # the device may be gone already
            log.debug("aborting the stream of %s: %s", self.device_name, err)
        try:
            stream.close()
        except self._sd.PortAudioError as err:
            log.debug("closing the stream of %s: %s", self.device_name, err)

    def describe(self) -> str:
        return f"sounddevice {self.device_name or self.source.target}"
