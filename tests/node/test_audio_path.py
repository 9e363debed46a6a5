"""The node's audio path: real capture from synthetic and file sources, metered, mapped, and its conditions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.audio_source import parse_audio_source
from hark_fleet.node.watchdog.frame_watch import FrameWatch
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.protocol.messages import MeterFrame
from hark_fleet.protocol.watchdog import NodeWatchdog


def run_path(
    source: str, seconds: float, policy: NodeWatchdog | None = None, **setup: Any
) -> tuple[list[MeterFrame], list[tuple]]:
    """Run an AudioPath on a real loop for `seconds`; the frames and condition reports it produced."""
    frames: list[MeterFrame] = []
    reports: list[tuple] = []

    async def scenario() -> None:
        watch = FrameWatch(policy or default_watchdog())
        path = AudioPath(parse_audio_source(source), frames.append, lambda *r: reports.append(r), 100, watch)
        if "channel_map" in setup:
            path.set_channel_map(setup["channel_map"])
        path.start(asyncio.get_running_loop())
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, path.stop)

    asyncio.run(scenario())
    return frames, reports


def test_a_synthetic_sine_is_metered_at_ten_frames_a_second_with_its_levels() -> None:
    frames, reports = run_path("synthetic:sine?freq=1000&dbfs=-20&channels=2", 1.6)
    assert 10 <= len(frames) <= 18, len(frames)
    last = frames[-1]
    assert [c.name for c in last.channels] == ["L", "R"] and last.sample_rate == 48000 and last.interval_ms == 100
    for channel in last.channels:
        assert channel.peak_dbfs == pytest.approx(-20.0, abs=0.05)
        assert channel.rms_dbfs == pytest.approx(-23.01, abs=0.05)
        assert channel.true_peak_dbtp == pytest.approx(-20.0, abs=0.2) and channel.clip == 0 and not channel.silent
    assert last.loudness is not None and last.loudness.momentary_lufs is not None
    # EBU Tech 3341 case 1 scaled: a 1 kHz stereo sine at -20 dBFS peak reads -20.0 LUFS
    assert last.loudness.momentary_lufs == pytest.approx(-20.0, abs=0.1)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert reports == []


def test_silence_opens_a_condition_after_the_hold_time() -> None:
    frames, reports = run_path("synthetic:silence?channels=1", 1.5, default_watchdog(silence_hold_s=0.5))
    assert frames[0].channels[0].peak_dbfs is None and not frames[0].channels[0].silent
    assert frames[-1].channels[0].silent
    silence = [r for r in reports if r[0] == "audio.silence"]
    assert [(r[0], r[1]) for r in silence] == [("audio.silence", "open")]
    details = silence[0][3]
    assert details["channels"] == ["M"] and details["detector"] == "silence" and details["policy_id"] is None
    assert details["thresholds"] == {"threshold_dbfs": -60.0, "hold_s": 0.5} and details["values"] == {"M": {"peak_dbfs": None}}


def test_a_clipping_file_opens_clipping_and_it_clears_once_clean(tmp_path: Path) -> None:
    rate = 48000
    t = np.arange(rate) / rate
    clipped = np.clip(1.5 * np.sin(2 * np.pi * 440 * t), -1.0, 1.0)
    clean = 0.1 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.concatenate([clipped[: rate // 2], np.tile(clean, 2)]).astype(np.float32), rate, subtype="FLOAT")
    frames, reports = run_path(f"file:{path}", 1.6, default_watchdog(clip_clear_s=0.5))
    assert any(f.channels[0].clip > 0 for f in frames)
    assert [(r[0], r[1]) for r in reports][:2] == [("audio.clipping", "open"), ("audio.clipping", "resolved")]


def test_a_channel_map_picks_inputs_names_them_and_calibrates_spl() -> None:
    template = {
        "name": "studio",
        "channels": [{"input": 1, "name": "room", "calibration_db": 114.0}],
        "programmes": [{"name": "ambience", "channels": ["room"]}],
    }
    frames, _ = run_path("synthetic:sine?freq=1000&dbfs=-20&channels=2", 1.2, channel_map=template)
    last = frames[-1]
    assert [(c.index, c.name) for c in last.channels] == [(0, "room")]
    spl = last.channels[0].spl
    assert spl is not None and spl.laeq_db == pytest.approx(114.0 - 23.01, abs=0.3)  # 1 kHz: A-weighting ~0 dB
    assert [p.name for p in last.programmes] == ["ambience"]


def test_a_channel_map_that_does_not_fit_the_source_is_refused() -> None:
    path = AudioPath(parse_audio_source("synthetic:sine?channels=2"), lambda f: None, lambda *a: None, 100)
    with pytest.raises(ValueError, match="input 5"):
        path.set_channel_map({"name": "big", "channels": [{"input": 5, "name": "x"}]})
    assert path.channel_map.name == "default"


def test_a_missing_file_reports_no_device_and_the_node_keeps_running(tmp_path: Path) -> None:
    frames, reports = run_path(f"file:{tmp_path / 'absent.wav'}?channels=1&rate=48000", 1.0)
    assert frames == []
    assert reports and reports[0][0] == "audio.no_device" and reports[0][1] == "open" and reports[0][2] == "critical"
