"""Calibration: `cmd/calibrate` measures every channel's levels from the meter frames for a while and reports a baseline.

Per channel: the noise floor (10th percentile of the frames' RMS, the same statistic the
noise-floor detector compares with it), the median and 90th percentile RMS, the highest peak and
the mean DC; and the sample rate and channel count. The hub stores it with the policy; the node
gets it back in its policy. Each calibration id reports once, even when the command comes again
after a reconnect or a restart (the ids of the results handed to the outbox are kept in the data
dir, like the lifecycle ledger); one a restart cut short runs again when the hub sends it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.watchdog.detectors import percentile
from hark_fleet.node.watchdog.frame_watch import channel_key
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.messages import MeterFrame
from hark_fleet.protocol.watchdog import Baseline, CalibrateCommand, CalibrationResult, ChannelBaseline

log = logging.getLogger(__name__)

LEDGER_FILE = "calibrations.json"
LEDGER_KEEP = 200

Send = Callable[[str, Callable[[str], bytes]], Awaitable[object]]  # calibration id, build(msg_id) -> payload
Listeners = list[Callable[[MeterFrame], None]]


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def baseline_from(frames: Sequence[MeterFrame], duration_s: float) -> Baseline:
    """The baseline of `frames` (the channels of the last frame; values None where a channel was digitally silent)."""
    channels: dict[str, ChannelBaseline] = {}
    last = frames[-1] if frames else None
    for channel in last.channels if last is not None else []:
        key = channel_key(channel)
        rms: list[float] = []
        peaks: list[float] = []
        dcs: list[float] = []
        for frame in frames:
            for seen in frame.channels:
                if channel_key(seen) != key:
                    continue
                if seen.rms_dbfs is not None:
                    rms.append(seen.rms_dbfs)
                if seen.peak_dbfs is not None:
                    peaks.append(seen.peak_dbfs)
                if seen.dc is not None:
                    dcs.append(seen.dc)
        rms.sort()
        channels[key] = ChannelBaseline(
            noise_floor_dbfs=_rounded(percentile(rms, 0.10)) if rms else None,
            rms_median_dbfs=_rounded(percentile(rms, 0.50)) if rms else None,
            rms_p90_dbfs=_rounded(percentile(rms, 0.90)) if rms else None,
            peak_max_dbfs=_rounded(max(peaks)) if peaks else None,
            dc_mean=_rounded(sum(dcs) / len(dcs), 6) if dcs else None,
        )
    return Baseline(
        measured_at=utc_iso(),
        duration_s=duration_s,
        frames=len(frames),
        sample_rate=last.sample_rate if last is not None else None,
        channel_count=len(last.channels) if last is not None else None,
        channels=channels,
    )


class CalibrationLedger:
    """The calibration ids this node has taken, oldest first, in a small JSON file replaced atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.ids: list[str] = []
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
                self.ids = [str(i) for i in loaded] if isinstance(loaded, list) else []
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as err:
                log.error("calibration ledger %s unreadable (%s): starting a new one", path, err)

    def __contains__(self, calibration_id: str) -> bool:
        return calibration_id in self.ids

    def add(self, calibration_id: str) -> None:
        self.ids.append(calibration_id)
        del self.ids[:-LEDGER_KEEP]
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.ids))


class Calibrator:
    """Takes `cmd/calibrate`; listens to the meter frames for the duration and sends the result through the outbox."""

    def __init__(self, data_dir: Path | None, listeners: Listeners, send: Send, audio_state: Callable[[], str]) -> None:
        self.ledger = CalibrationLedger(data_dir / LEDGER_FILE if data_dir is not None else None)
        self._listeners = listeners
        self._send = send
        self._audio_state = audio_state
        self._tasks: set[asyncio.Task[CalibrationResult]] = set()
        self.running: set[str] = set()

    def submit(self, command: CalibrateCommand) -> bool:
        """Start a calibration (on the loop); False when this id is running or was reported before."""
        if command.calibration_id in self.ledger or command.calibration_id in self.running:
            log.info("calibration %s delivered again: already taken", command.calibration_id)
            return False
        self.running.add(command.calibration_id)
        task = asyncio.create_task(self.run(command), name=f"calibration-{command.calibration_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def run(self, command: CalibrateCommand) -> CalibrationResult:
        frames: list[MeterFrame] = []
        self._listeners.append(frames.append)
        log.info("calibration %s: measuring for %gs", command.calibration_id, command.duration_s)
        try:
            await asyncio.sleep(command.duration_s)
        except asyncio.CancelledError:
            self.running.discard(command.calibration_id)
            raise
        finally:
            self._listeners.remove(frames.append)
        if frames:
            result = CalibrationResult(
                msg_id="", ts=utc_iso(), calibration_id=command.calibration_id, baseline=baseline_from(frames, command.duration_s)
            )
        else:
            error = f"the audio was not running (capture {self._audio_state()}): no meter frames in {command.duration_s:g}s"
            result = CalibrationResult(msg_id="", ts=utc_iso(), calibration_id=command.calibration_id, error=error)
        log.info("calibration %s: %s", command.calibration_id, result.error or f"{len(frames)} frames measured")

        def build(msg_id: str) -> bytes:
            return msgspec.json.encode(msgspec.structs.replace(result, msg_id=msg_id, ts=utc_iso()))

        try:
            await self._send(command.calibration_id, build)
            self.ledger.add(command.calibration_id)
        finally:
            self.running.discard(command.calibration_id)
        return result

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
