"""Calibration: the baseline numbers from known frames, one result per calibration id, an error when no audio ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
from hark_fleet.node.watchdog.calibration import Calibrator, baseline_from
from hark_fleet.protocol.messages import MeterFrame
from hark_fleet.protocol.watchdog import CalibrateCommand, CalibrationResult

from tests.node.watchdog.frames import channel, frame


def test_the_baseline_of_known_frames() -> None:
    frames = [
        frame(channel("L", peak=-10.0 - i, rms=-40.0 + i, dc=0.001 * i), channel("R", peak=None, rms=None, dc=0.0))
        for i in range(11)  # L's RMS: -40 ... -30 dBFS in 1 dB steps
    ]
    baseline = baseline_from(frames, 1.1)
    assert (baseline.frames, baseline.duration_s, baseline.sample_rate, baseline.channel_count) == (11, 1.1, 48000, 2)
    left = baseline.channels["L"]
    assert left.noise_floor_dbfs == -39.0  # the 10th percentile (nearest rank) of the frame RMS
    assert (left.rms_median_dbfs, left.rms_p90_dbfs, left.peak_max_dbfs, left.dc_mean) == (-35.0, -31.0, -10.0, 0.005)
    right = baseline.channels["R"]  # digital silence: no levels at all
    assert (right.noise_floor_dbfs, right.rms_median_dbfs, right.peak_max_dbfs, right.dc_mean) == (None, None, None, 0.0)


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, CalibrationResult]] = []

    async def send(self, calibration_id: str, build: Callable[[str], bytes]) -> None:
        self.sent.append((calibration_id, msgspec.json.decode(build("m7"), type=CalibrationResult)))


def test_a_calibration_measures_the_frames_of_its_duration_and_runs_once_per_id(tmp_path: Path) -> None:
    outbox = Outbox()
    listeners: list[Callable[[MeterFrame], None]] = []

    async def scenario() -> bool:
        calibrator = Calibrator(tmp_path, listeners, outbox.send, lambda: "capturing")
        assert calibrator.submit(CalibrateCommand(calibration_id="cal_1", duration_s=1.0))
        assert not calibrator.submit(CalibrateCommand(calibration_id="cal_1", duration_s=1.0))  # delivered again meanwhile
        await asyncio.sleep(0)
        for _ in range(10):
            for listen in list(listeners):
                listen(frame(channel("M", rms=-50.0)))
            await asyncio.sleep(0.01)
        while not outbox.sent:
            await asyncio.sleep(0.05)
        assert listeners == []
        return Calibrator(tmp_path, listeners, outbox.send, lambda: "capturing").submit(CalibrateCommand(calibration_id="cal_1"))

    again = asyncio.run(scenario())
    assert not again  # a restarted agent remembers the id it reported
    assert len(outbox.sent) == 1
    calibration_id, result = outbox.sent[0]
    assert calibration_id == "cal_1" and result.msg_id == "m7" and result.error is None and result.baseline is not None
    assert result.baseline.frames == 10 and result.baseline.channels["M"].noise_floor_dbfs == -50.0


def test_without_audio_the_calibration_reports_an_error(tmp_path: Path) -> None:
    outbox = Outbox()

    async def scenario() -> None:
        calibrator = Calibrator(tmp_path, [], outbox.send, lambda: "waiting")
        await calibrator.run(CalibrateCommand(calibration_id="cal_2", duration_s=1.0))

    asyncio.run(scenario())
    result = outbox.sent[0][1]
    assert result.baseline is None and result.error is not None and "not running (capture waiting)" in result.error
