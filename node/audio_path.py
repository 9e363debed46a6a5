"""The node's audio path: capture (supervised, through device loss), the channel map, metering, the watchdog's detectors.

Three threads and the loop: the capture supervisor's thread (audio.capture) writes the ring; the
metering thread here reads `interval_ms` blocks from it, maps physical inputs to the channel map's
logical channels, meters them (audio.meters), runs the watchdog's detectors on each frame
(node.watchdog: no second pass over the audio) and hands frames and events to the loop. Nothing
here blocks the loop; frames, events and conditions cross over with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from hark_fleet.audio.capture import (
    CaptureCondition,
    CaptureSupervisor,
    RingBuffer,
    RingReader,
    list_input_devices,
    ring_for_source,
)
from hark_fleet.audio.capture.backends import capture_format
from hark_fleet.audio.capture.errors import CaptureError
from hark_fleet.audio.meters import InvalidSetup, MeterEngine
from hark_fleet.node.audio_source import AudioSource
from hark_fleet.node.channel_map import ChannelMap, default_map
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.frame_watch import FrameWatch
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.protocol.messages import AudioInterface, MeterFrame

log = logging.getLogger(__name__)

MAX_BLOCKS_PER_WAKE = 20  # a source faster than real time (a test device) is metered at most this far ahead

PublishFrame = Callable[[MeterFrame], None]
Report = Callable[[str, str, str, dict[str, Any]], None]  # kind, open|resolved, severity, details
OnWatch = Callable[[WatchEvent], None]


class AudioPath:
    """Capture, channel map and meters for one source; `start(loop)`, `restart()`, `stop()`."""

    def __init__(
        self,
        source: AudioSource,
        publish_frame: PublishFrame,
        report: Report,
        interval_ms: int,
        watch: FrameWatch | None = None,
        on_watch: OnWatch | None = None,
    ) -> None:
        """`watch` runs the detectors (default: the built-in policy); its events go to `on_watch` (default: `report`)."""
        self.source = source
        self.interval_ms = interval_ms
        self.watch = watch or FrameWatch(default_watchdog())
        self._publish_frame = publish_frame
        self._report = report
        self._on_watch = on_watch or self._report_event
        self.rate, self.inputs = capture_format(source)
        self.ring: RingBuffer = ring_for_source(source)
        self.channel_map: ChannelMap = default_map(self.inputs)
        self.supervisor: CaptureSupervisor | None = None
        self.restarts = 0
        self.frames_out = 0
        self._interfaces: list[AudioInterface] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rebuild = threading.Event()
        self._new_format = threading.Event()
        self._lost: str | None = None  # a device loss an earlier supervisor reported open
        self._seq = 0
        self._watch_failed = False
        self.meter_tick = time.monotonic()  # the metering thread was last seen alive (for a watchdog)

    # -- control (on the loop) -----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stop.clear()
        self._start_capture()
        self._thread = threading.Thread(target=self._meter_forever, name="hark-node-meters", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop metering and capture (blocking up to a few seconds: call it from an executor)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None

    def restart(self) -> str:
        """Close and reopen the device (what `restart-audio` does); blocking: call it from an executor."""
        if self.supervisor is not None:
            self.supervisor.stop()
            # the new supervisor knows nothing of a loss the old one reported: it resolves once frames flow again
            self._lost = self.supervisor.open_condition or self._lost
        self._start_capture()
        self._rebuild.set()  # meters start afresh with the new stream
        self.restarts += 1
        log.info("audio restarted: %s", self.source.describe())
        return f"audio restarted: {self.source.describe()}, {self.channel_map.describe()}"

    def set_interval(self, interval_ms: int) -> None:
        if interval_ms != self.interval_ms:
            self.interval_ms = interval_ms
            self._rebuild.set()

    def set_channel_map(self, template: dict[str, Any] | None) -> str:
        """Apply a channel map from the hub (None: every input as its own channel); ValueError if it does not fit."""
        mapped = default_map(self.inputs) if template is None else ChannelMap.from_template(template, self.inputs)
        self.channel_map = mapped
        self._new_format.set()  # the watchdog takes the next engine's frames as the node's format
        self._rebuild.set()
        log.info("channel map: %s", mapped.describe())
        return mapped.describe()

    # -- what others read ------------------------------------------------------------------

    def interfaces(self) -> list[AudioInterface]:
        return self._interfaces

    def load_interfaces(self) -> list[AudioInterface]:
        """The input devices this node offers (PortAudio sources enumerate them; blocking: use an executor)."""
        if self.source.kind in ("sounddevice", "pyaudio"):
            try:
                found = list_input_devices(self.source.kind)
            except CaptureError as err:
                log.warning("cannot list audio devices: %s", err)
                found = []
            self._interfaces = [msgspec.convert(d, AudioInterface) for d in found]
        else:
            self._interfaces = [
                AudioInterface(
                    id=self.source.kind, name=self.source.describe(), channels=self.inputs, rates=[self.rate], default=True
                )
            ]
        return self._interfaces

    def alive(self, now: float, within_s: float) -> dict[str, bool]:
        """Whether the metering and capture threads showed life within `within_s` (capture: also through its retries)."""
        supervisor = self.supervisor
        capture_ok = supervisor is not None and now - supervisor.last_tick <= within_s
        return {"meters": now - self.meter_tick <= within_s, "capture": capture_ok}

    def stats(self) -> dict[str, Any]:
        supervisor = self.supervisor
        capture = supervisor.stats.as_dict() if supervisor is not None else {}
        lost = sum(r.lost_frames for r in self.ring.reader_stats())
        return {
            "state": supervisor.state if supervisor is not None else "stopped",
            "source": self.source.describe(),
            "rate": self.rate,
            "inputs": self.inputs,
            "channel_map": self.channel_map.name,
            "capture": capture,
            "reader_lost_frames": lost,
            "frames_metered": self.frames_out,
        }

    # -- threads ---------------------------------------------------------------------------

    def _start_capture(self) -> None:
        self.supervisor = CaptureSupervisor(self.source, self.ring, self._on_condition)
        self.supervisor.start()

    def _on_condition(self, condition: CaptureCondition) -> None:
        """From the supervisor's thread: device lost / no device, opened or resolved, with the policy's severity."""
        details = {"message": condition.message, **condition.details}
        event = self.watch.device(condition.kind, condition.state, details)
        if event is not None:
            self._to_loop(self._on_watch, event)

    def _report_event(self, event: WatchEvent) -> None:
        self._report(event.kind, event.state, event.severity, event.details)

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _engine(self) -> MeterEngine:
        mapped = self.channel_map
        silence = self.watch.watchdog.node.detectors.silence  # the frames' `silent` flag: the node policy's silence
        try:
            return MeterEngine(
                self.rate,
                len(mapped.inputs),
                names=mapped.names,
                programmes=mapped.programmes,
                calibration=mapped.calibration,
                silence_threshold_dbfs=silence.threshold_dbfs,
                silence_hold_s=silence.hold_s,
            )
        except InvalidSetup as err:
            log.error("channel map %s cannot be metered (%s): metering every input instead", mapped.name, err)
            self.channel_map = default_map(self.inputs)
            return MeterEngine(self.rate, self.inputs, silence_threshold_dbfs=silence.threshold_dbfs)

    def _meter_forever(self) -> None:
        reader: RingReader = self.ring.reader(name="meters")
        engine = self._engine()
        silence = self.watch.watchdog.node.detectors.silence
        try:
            while not self._stop.wait(self.interval_ms / 4000.0):
                self.meter_tick = time.monotonic()
                if self.watch.watchdog.node.detectors.silence != silence:  # a new policy: the frames' `silent` follows it
                    silence = self.watch.watchdog.node.detectors.silence
                    self._rebuild.set()
                if self._rebuild.is_set():
                    self._rebuild.clear()
                    engine = self._engine()
                    if self._new_format.is_set():
                        self._new_format.clear()
                        self.watch.reset_format()
                    reader.skip_to_end()
                block = max(1, self.rate * self.interval_ms // 1000)
                done = 0
                while reader.available >= block and done < MAX_BLOCKS_PER_WAKE:
                    samples = reader.read(block)
                    if len(samples) < block:
                        break
                    self._meter_block(engine, samples)
                    done += 1
                if done == MAX_BLOCKS_PER_WAKE and reader.available > block:
                    reader.skip_to_end()  # faster than real time: stay live rather than fall behind
        except Exception:
            log.exception("metering stopped on an error")
        finally:
            reader.close()

    def _meter_block(self, engine: MeterEngine, samples: np.ndarray) -> None:
        body = engine.process(samples[:, self.channel_map.inputs])
        self._seq += 1
        body.update(ts=utc_iso(), seq=self._seq, interval_ms=self.interval_ms, sample_rate=self.rate)
        frame = msgspec.convert(body, MeterFrame)
        self.frames_out += 1
        if self._lost is not None:
            lost, self._lost = self._lost, None
            event = self.watch.device(lost, "resolved", {"message": "capturing again", "source": self.source.describe()})
            if event is not None:
                self._to_loop(self._on_watch, event)
        self._to_loop(self._publish_frame, frame)
        try:
            events = self.watch.update(frame)
        except Exception:  # a detector's bug must not stop the meters
            if not self._watch_failed:
                log.exception("the watchdog's detectors failed on a frame")
            self._watch_failed = True
            return
        for event in events:
            self._to_loop(self._on_watch, event)
