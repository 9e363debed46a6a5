"""The watchdog on a real audio path: synthetic sources captured, metered and judged on the metering thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
import soundfile
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.audio_source import parse_audio_source
from hark_fleet.node.watchdog.calibration import Calibrator
from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.frame_watch import FrameWatch
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.protocol.messages import MeterFrame
from hark_fleet.protocol.watchdog import (
    Baseline,
    CalibrateCommand,
    CalibrationResult,
    ChannelBaseline,
    Detectors,
    FlatlineDetector,
    NodeWatchdog,
    NoiseFloorDetector,
    PolicyConfig,
)

DEADLINE_S = 20.0


def run_until(
    source: str, policy: NodeWatchdog, done: Callable[[list[WatchEvent]], bool], seconds: float = DEADLINE_S
) -> tuple[list[MeterFrame], list[WatchEvent]]:
    """Run an AudioPath on a real loop until `done(events)` or `seconds` passed; the frames and watchdog events."""
    frames: list[MeterFrame] = []
    events: list[WatchEvent] = []

    async def scenario() -> None:
        path = AudioPath(parse_audio_source(source), frames.append, lambda *r: None, 100, FrameWatch(policy), events.append)
        path.start(asyncio.get_running_loop())
        deadline = time.monotonic() + seconds
        try:
            while not done(events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, path.stop)

    asyncio.run(scenario())
    return frames, events


def opened(kind: str) -> Callable[[list[WatchEvent]], bool]:
    return lambda events: any(e.kind == kind and e.state == "open" for e in events)


def calibrated(floor_dbfs: float) -> NodeWatchdog:
    baseline = Baseline(
        measured_at="2026-12-06T09:00:00Z",
        duration_s=10.0,
        frames=100,
        sample_rate=48000,
        channel_count=1,
        channels={"M": ChannelBaseline(noise_floor_dbfs=floor_dbfs)},
    )
    detectors = Detectors(noise_floor=NoiseFloorDetector(shift_db=10.0, window_s=1.0, hold_s=0.5))
    return NodeWatchdog(node=PolicyConfig(policy_id="wdp_test", version=3, detectors=detectors, baseline=baseline))


def test_a_microphone_that_drops_20_db_after_calibration_raises_the_noise_floor_event() -> None:
    source = "synthetic:noise?dbfs=-30&step_s=4&step_db=-20&channels=1"
    detectors = Detectors(noise_floor=NoiseFloorDetector(shift_db=10.0, window_s=1.0, hold_s=0.5))
    frames: list[MeterFrame] = []
    events: list[WatchEvent] = []
    calibrations: list[CalibrationResult] = []

    async def send(calibration_id: str, build: Callable[[str], bytes]) -> None:
        calibrations.append(msgspec.json.decode(build("m1"), type=CalibrationResult))

    async def scenario() -> None:
        watch = FrameWatch(NodeWatchdog(node=PolicyConfig(policy_id="wdp_test", version=2, detectors=detectors)))
        listeners: list[Callable[[MeterFrame], None]] = []

        def publish(frame: MeterFrame) -> None:
            frames.append(frame)
            for listen in listeners:
                listen(frame)

        path = AudioPath(parse_audio_source(source), publish, lambda *r: None, 100, watch, events.append)
        path.start(asyncio.get_running_loop())
        try:
            # calibrate on the running node (the level holds for 4 s), then the hub sends the policy with the baseline
            result = await Calibrator(None, listeners, send, lambda: "capturing").run(CalibrateCommand("cal_1", duration_s=2.0))
            assert result.baseline is not None
            watch.set_policy(
                NodeWatchdog(node=PolicyConfig(policy_id="wdp_test", version=3, detectors=detectors, baseline=result.baseline))
            )
            deadline = time.monotonic() + DEADLINE_S
            while not opened("audio.noise_floor")(events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, path.stop)

    asyncio.run(scenario())
    baseline = calibrations[0].baseline
    assert baseline is not None and baseline.sample_rate == 48000 and baseline.channel_count == 1
    floor = baseline.channels["M"].noise_floor_dbfs
    assert floor is not None and -31.5 < floor < -29.0  # the 10th percentile of 100 ms RMS of -30 dBFS noise
    event = next(e for e in events if e.kind == "audio.noise_floor")
    assert event.state == "open" and event.channels == ("M",) and event.detector == "noise_floor"
    values = event.details["values"]["M"]
    assert values["baseline_dbfs"] == floor and values["shift_db"] == pytest.approx(-20.0, abs=1.5)
    assert event.details["policy_id"] == "wdp_test" and event.details["policy_version"] == 3
    assert event.details["thresholds"] == {"shift_db": 10.0, "window_s": 1.0, "hold_s": 0.5}
    assert frames[-1].channels[0].rms_dbfs == pytest.approx(-50.0, abs=1.0)


def test_restarting_the_audio_resolves_a_loss_the_old_capture_reported(tmp_path: Path) -> None:
    wav = tmp_path / "late.wav"
    events: list[WatchEvent] = []

    async def scenario() -> None:
        path = AudioPath(
            parse_audio_source(f"file:{wav}?channels=1&rate=48000"),
            lambda f: None,
            lambda *r: None,
            100,
            FrameWatch(default_watchdog()),
            events.append,
        )
        path.start(asyncio.get_running_loop())
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not opened("audio.no_device")(events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            soundfile.write(wav, np.full(48000, 0.1, dtype=np.float32) * np.sin(np.arange(48000)), 48000, subtype="FLOAT")
            await asyncio.get_running_loop().run_in_executor(None, path.restart)  # what restart-audio does
            deadline = time.monotonic() + DEADLINE_S
            while not any(e.state == "resolved" for e in events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, path.stop)

    asyncio.run(scenario())
    device = [(e.kind, e.state, e.severity) for e in events if e.detector == "device_loss"]
    assert device == [("audio.no_device", "open", "critical"), ("audio.no_device", "resolved", "critical")]


def test_the_level_it_was_calibrated_at_raises_nothing() -> None:
    frames, events = run_until("synthetic:noise?dbfs=-30&channels=1", calibrated(-30.0), lambda e: False, seconds=3.0)
    assert len(frames) > 20 and events == []


@pytest.mark.parametrize("source", ["synthetic:silence?channels=1", "synthetic:stuck?dbfs=-12&channels=1"])
def test_digital_zeros_and_a_stuck_sample_value_raise_flatline(source: str) -> None:
    policy = NodeWatchdog(node=PolicyConfig(detectors=Detectors(flatline=FlatlineDetector(hold_s=0.5))))
    frames, events = run_until(source, policy, opened("audio.flatline"))
    event = next(e for e in events if e.kind == "audio.flatline")
    assert event.severity == "critical" and event.channels == ("M",)
    assert event.details["values"]["M"]["zeros"] is ("silence" in source)


def test_a_sine_is_not_a_flatline() -> None:
    policy = NodeWatchdog(node=PolicyConfig(detectors=Detectors(flatline=FlatlineDetector(hold_s=0.5))))
    frames, events = run_until("synthetic:sine?dbfs=-12&channels=1", policy, lambda e: False, seconds=2.0)
    assert len(frames) > 10 and [e for e in events if e.kind == "audio.flatline"] == []
