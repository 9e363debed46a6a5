"""Plain levels (peak, RMS, DC, clip, silence) and the frame the engine builds from every meter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hark_fleet.audio.meters import InvalidBlock, InvalidSetup, MeterEngine, Programme

from tests.audio.test_meters_signals import meter_frames, sine

FRAME_CHANNEL_KEYS = {"index", "name", "peak_dbfs", "rms_dbfs", "true_peak_dbtp", "clip", "dc", "silent", "spl"}
LOUDNESS_KEYS = {"momentary_lufs", "short_term_lufs", "integrated_lufs", "lra_lu"}


def one_channel(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32).reshape(-1, 1)


@pytest.mark.parametrize("dbfs", [0.0, -6.0, -20.0, -60.0])
def test_sine_peak_reads_its_level_and_rms_3_01_db_under(dbfs: float) -> None:
    frame = MeterEngine(48000, 1).process(one_channel(sine(0.1, dbfs)))
    channel = frame["channels"][0]
    assert channel["peak_dbfs"] == pytest.approx(dbfs, abs=0.01)
    assert channel["rms_dbfs"] == pytest.approx(dbfs - 3.01, abs=0.01)


def test_dc_is_the_mean_of_the_interval() -> None:
    samples = sine(0.1, -20.0) + 0.0125
    assert MeterEngine(48000, 1).process(one_channel(samples))["channels"][0]["dc"] == pytest.approx(0.0125, abs=1e-6)


def test_clip_counts_samples_at_or_over_the_threshold_per_interval() -> None:
    samples = np.full(4800, 0.5)
    samples[[10, 20, 30]] = [1.0, -1.0, 0.9995]  # three clipped
    samples[40] = 0.998  # just under 0.999: not clipped
    engine = MeterEngine(48000, 1)
    assert engine.process(one_channel(samples))["channels"][0]["clip"] == 3
    assert engine.process(one_channel(np.full(4800, 0.5)))["channels"][0]["clip"] == 0  # counts do not carry over
    strict = MeterEngine(48000, 1, clip_threshold=0.9)
    assert strict.process(one_channel(samples))["channels"][0]["clip"] == 4


def test_a_full_scale_square_clips_on_every_sample_and_reads_0_dbfs() -> None:
    channel = MeterEngine(48000, 1).process(one_channel(np.sign(sine(0.1, 0.0) + 1e-9)))["channels"][0]
    assert channel["clip"] == 4800 and channel["peak_dbfs"] == 0.0 and channel["rms_dbfs"] == 0.0


def test_a_channel_turns_silent_only_after_the_hold_time() -> None:
    engine = MeterEngine(48000, 2, silence_hold_s=2.0)
    loud = np.stack([sine(0.1, -20.0), sine(0.1, -20.0)], axis=1)
    quiet = np.stack([np.zeros(4800), sine(0.1, -20.0)], axis=1).astype(np.float32)
    engine.process(loud)
    states = [engine.process(quiet)["channels"] for _ in range(25)]
    silent_left = [c[0]["silent"] for c in states]
    assert silent_left == [False] * 19 + [True] * 6  # 2 s of quiet ends with the 20th block
    assert not any(c[1]["silent"] for c in states)
    assert engine.process(loud)["channels"][0]["silent"] is False  # sound ends it at once


def test_silence_ends_on_a_single_loud_sample_and_the_hold_starts_after_it() -> None:
    engine = MeterEngine(48000, 1, silence_hold_s=0.5)
    for _ in range(10):
        frame = engine.process(np.zeros((4800, 1), np.float32))
    assert frame["channels"][0]["silent"]
    click = np.zeros((4800, 1), np.float32)
    click[100] = 0.01  # -40 dBFS, over the -60 threshold
    assert engine.process(click)["channels"][0]["silent"] is False
    # 4699 quiet samples followed the click; 24000 - 4699 = 19301 more are needed
    assert engine.process(np.zeros((19300, 1), np.float32))["channels"][0]["silent"] is False
    assert engine.process(np.zeros((1, 1), np.float32))["channels"][0]["silent"] is True


def test_noise_under_the_silence_threshold_counts_as_silent() -> None:
    rng = np.random.default_rng(0)
    hum = one_channel(rng.uniform(-0.0009, 0.0009, 48000))  # peaks under -60 dBFS
    frames = meter_frames(hum, silence_hold_s=0.5)
    assert frames[4]["channels"][0]["silent"] is True and frames[4]["channels"][0]["rms_dbfs"] is not None
    louder = meter_frames(hum * 2, silence_hold_s=0.5)  # peaks reach -60 dBFS
    assert not any(f["channels"][0]["silent"] for f in louder)


def test_digital_silence_reads_none_never_minus_infinity() -> None:
    frame = MeterEngine(48000, 2).process(np.zeros((4800, 2), np.float32))
    for channel in frame["channels"]:
        assert channel["peak_dbfs"] is None and channel["rms_dbfs"] is None and channel["true_peak_dbtp"] is None
        assert channel["dc"] == 0.0 and channel["clip"] == 0
    json.dumps(frame, allow_nan=False)  # no inf or nan anywhere


def test_frame_has_exactly_the_api_meter_frame_fields() -> None:
    engine = MeterEngine(48000, 6, programmes={"stereo": [0, 1], "surround": [0, 1, 2, 3, 4, 5]}, calibration={2: 100.0})
    frame = engine.process(np.stack([sine(0.1, -20.0)] * 6, axis=1))
    assert set(frame) == {"channels", "loudness", "programmes"}
    assert [c["name"] for c in frame["channels"]] == ["L", "R", "C", "LFE", "Ls", "Rs"]
    assert [c["index"] for c in frame["channels"]] == list(range(6))
    for channel in frame["channels"]:
        assert set(channel) == FRAME_CHANNEL_KEYS
        assert (channel["spl"] is None) == (channel["index"] != 2)
    assert set(frame["loudness"]) == LOUDNESS_KEYS
    assert [p["name"] for p in frame["programmes"]] == ["stereo", "surround"]
    for programme in frame["programmes"]:
        assert set(programme) == {"name", "channels"} | LOUDNESS_KEYS
    json.dumps(frame, allow_nan=False)


def test_default_names_are_m_lr_and_none_beyond() -> None:
    assert [c["name"] for c in MeterEngine(48000, 1).process(np.zeros((10, 1), np.float32))["channels"]] == ["M"]
    assert [c["name"] for c in MeterEngine(48000, 3).process(np.zeros((10, 3), np.float32))["channels"]] == [None] * 3
    named = MeterEngine(48000, 2, names=["mic", "room"]).process(np.zeros((10, 2), np.float32))
    assert [c["name"] for c in named["channels"]] == ["mic", "room"]


@pytest.mark.parametrize(
    "block",
    [
        np.zeros((100, 3), np.float32),  # wrong channel count
        np.zeros((100, 2), np.int16),  # not floats
        np.zeros((0, 2), np.float32),  # empty
        np.array([[0.1, np.nan]] * 100, np.float32),  # not finite
        [[0.0, 0.0]],  # not an array
    ],
)
def test_a_bad_block_is_refused_and_leaves_the_meters_as_they_were(block: object) -> None:
    engine = MeterEngine(48000, 2)
    engine.process(np.stack([sine(1.0, -23.0)] * 2, axis=1))
    before = engine.process(np.zeros((1, 2), np.float32))["loudness"]
    with pytest.raises(InvalidBlock):
        engine.process(block)  # type: ignore[arg-type]
    assert engine.process(np.zeros((0 + 1, 2), np.float32))["loudness"]["integrated_lufs"] == before["integrated_lufs"]


def test_float64_and_mono_1d_blocks_are_accepted() -> None:
    assert MeterEngine(48000, 1).process(sine(0.1, -6.0).astype(np.float64))["channels"][0]["peak_dbfs"] == pytest.approx(
        -6.0, abs=0.01
    )


@pytest.mark.parametrize(
    "options",
    [
        {"programmes": {"x": [0, 5]}},
        {"programmes": {"x": []}},
        {"calibration": {3: 100.0}},
        {"names": ["L"]},
        {"programmes": [("a", [0]), ("a", [1])]},
        {"programmes": [Programme("p", (0, 1), (1.0,))]},
    ],
)
def test_a_setup_that_cannot_work_is_refused_with_its_reason(options: dict) -> None:
    with pytest.raises(InvalidSetup):
        MeterEngine(48000, 2, **options)
