"""The pyaudio backend: a PortAudio input stream (through pyaudio's own binding) whose callback copies into the ring."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from hark_fleet.audio.capture.base import SCALES, Capture, newest_frame_time
from hark_fleet.audio.capture.devices import find_input, load_pyaudio, pyaudio_inputs
from hark_fleet.audio.capture.errors import DeviceOpenError

log = logging.getLogger(__name__)

DTYPES = {"float32": np.float32, "int32": np.int32, "int16": np.int16}


class PyaudioCapture(Capture):
    """`pyaudio:<index or name>?channels=2&rate=48000&format=float32`; each stream has its own PyAudio instance."""

    kind = "pyaudio"

    _pa: Any = None
    _stream: Any = None
    device_name = ""

    def start(self) -> None:
        pyaudio = load_pyaudio()
        self._continue = pyaudio.paContinue
        self._pa = pyaudio.PyAudio()
        try:
            device = find_input(pyaudio_inputs(self._pa), self.source.target, self.ring.channels)
        except Exception:
            self.close()
            raise
        self.device_name = device.name
        self._dtype = DTYPES[self.source.sample_format]
        self._scale = SCALES[self.source.sample_format]
        formats = {"float32": pyaudio.paFloat32, "int32": pyaudio.paInt32, "int16": pyaudio.paInt16}
        try:
            self._stream = self._pa.open(
                format=formats[self.source.sample_format],
                channels=self.ring.channels,
                rate=self.ring.rate,
                input=True,
                input_device_index=device.index,
                frames_per_buffer=pyaudio.paFramesPerBufferUnspecified,
                stream_callback=self._callback,
            )
        except (OSError, ValueError) as err:
            self.close()
            raise DeviceOpenError(f"cannot capture from {device.name!r}: {err}") from err
        self.stats.opened += 1

    def _callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
        if in_data:
            block = np.frombuffer(in_data, dtype=self._dtype).reshape(frame_count, self.ring.channels)
            # paInputUnderflow = 1, paInputOverflow = 2 (portaudio.h PaStreamCallbackFlags)
            times = time_info or {}
            at = newest_frame_time(
                float(times.get("input_buffer_adc_time", 0.0)),
                float(times.get("current_time", 0.0)),
                frame_count,
                self.ring.rate,
                time.time(),
            )
            self._deliver(block, self._scale, bool(status & 2), bool(status & 1), at)
        return None, self._continue

    def alive(self) -> bool:
        stream = self._stream
        if self._ended or stream is None:
            return False
        try:
            return bool(stream.is_active())
        except OSError:
            return False

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop_stream()
            except OSError as err:  # the device may be gone already
                log.debug("stopping the stream of %s: %s", self.device_name, err)
            try:
                stream.close()
            except OSError as err:
                log.debug("closing the stream of %s: %s", self.device_name, err)
        pa, self._pa = self._pa, None
        if pa is not None:
            pa.terminate()

    def describe(self) -> str:
        return f"pyaudio {self.device_name or self.source.target}"
