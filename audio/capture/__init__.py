"""Audio capture: backends behind one small interface, a ring buffer for consumers, and a supervisor.

How the node uses it::

    source = parse_audio_source("sounddevice:default?channels=2&rate=48000")
    ring = ring_for_source(source, seconds=30)           # one ring for the process's lifetime
    supervisor = CaptureSupervisor(source, ring, on_condition)
    supervisor.start()                                   # own thread; never raises
    meters = ring.reader(name="meters")                  # each consumer: its own position
    recorder = ring.reader(preroll_s=5, name="recorder") # ... starting 5 s in the past
    block = meters.read()                                # float32 frames x channels, poll at your pace
    supervisor.stop()

`on_condition(CaptureCondition)` is called from the supervisor's thread with `kind`
`audio.no_device` (nothing to capture from at start) or `audio.device_lost` (the stream ended
or stalled for `stall_s`), `state` "open" then "resolved" once samples flow again; the
supervisor reopens with jittered exponential backoff meanwhile. `list_input_devices()` gives
the `{id, name, channels, rates, default}` dicts of the node's status report. Backends:
`sounddevice`, `pyaudio` (both PortAudio), `file` (WAV/FLAC in a loop, paced) and `synthetic`;
`open_capture(source, ring)` starts one without supervision. Counters: `supervisor.stats`
(blocks, frames, PortAudio input overflows/underflows, opens) and `ring.reader_stats()`
(frames each reader lost by falling behind).
"""

from hark_fleet.audio.capture.backends import BACKENDS, capture_format, open_capture, ring_for_source
from hark_fleet.audio.capture.base import Capture, CaptureStats
from hark_fleet.audio.capture.devices import list_input_devices, rescan_devices
from hark_fleet.audio.capture.errors import BackendUnavailable, CaptureError, DeviceOpenError, NoInputDevice, SourceFileError
from hark_fleet.audio.capture.ring import ReaderStats, RingBuffer, RingReader
from hark_fleet.audio.capture.supervisor import DEVICE_LOST, NO_DEVICE, CaptureCondition, CaptureSupervisor

__all__ = [
    "BACKENDS",
    "DEVICE_LOST",
    "NO_DEVICE",
    "BackendUnavailable",
    "Capture",
    "CaptureCondition",
    "CaptureError",
    "CaptureStats",
    "CaptureSupervisor",
    "DeviceOpenError",
    "NoInputDevice",
    "ReaderStats",
    "RingBuffer",
    "RingReader",
    "SourceFileError",
    "capture_format",
    "list_input_devices",
    "open_capture",
    "rescan_devices",
    "ring_for_source",
]
