"""Loudness against EBU Tech 3341 (M, S, I) and Tech 3342 (LRA) conformance signals, generated here.

Tech 3341 cases 7 and 8 (and Tech 3342 cases 5 and 6) are recorded programmes only the EBU's files carry;
the agreement with libebur128 on programme-like material (test_meters_reference.py) stands in for them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hark_fleet.audio.meters import MeterEngine
from hark_fleet.audio.meters.kweighting import HIGHPASS_48K, SHELF_48K, k_weighting_biquads, k_weighting_prototype
from hark_fleet.audio.meters.loudness import LoudnessMeter, Programme, channel_weight

from tests.audio.test_meters_signals import envelope, meter_frames, meter_last, noise, sine, stereo_tones

TOLERANCE_LU = 0.1  # Tech 3341's tolerance for M, S and I
LRA_TOLERANCE_LU = 1.0  # Tech 3342's


def near(value: float | None, expected: float, tolerance: float) -> bool:
    return value is not None and abs(value - expected) <= tolerance


def test_k_weighting_prototype_reproduces_the_published_48k_coefficients() -> None:
    published = np.array([SHELF_48K, HIGHPASS_48K]).ravel()
    np.testing.assert_allclose(np.array(k_weighting_prototype(48000)).ravel(), published, rtol=0, atol=1e-12)
    assert k_weighting_biquads(48000) == (SHELF_48K, HIGHPASS_48K)
    assert not np.allclose(np.array(k_weighting_biquads(44100)).ravel(), published, atol=1e-4)


@pytest.mark.parametrize(("case", "dbfs"), [(1, -23.0), (2, -33.0)])
@pytest.mark.parametrize("rate", [48000, 44100])
def test_tech3341_steady_tone_reads_its_level_as_momentary_short_term_and_integrated(case: int, dbfs: float, rate: int) -> None:
    frame = meter_last(stereo_tones([(20.0, dbfs)], rate=rate), block=rate // 10, rate=rate)
    loudness = frame["loudness"]
    for key in ("momentary_lufs", "short_term_lufs", "integrated_lufs"):
        assert near(loudness[key], dbfs, TOLERANCE_LU), (case, key, loudness)


@pytest.mark.parametrize(
    ("case", "steps"),
    [
        (3, [(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)]),
        (4, [(10.0, -72.0), (10.0, -36.0), (60.0, -23.0), (10.0, -36.0), (10.0, -72.0)]),
        (5, [(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)]),
    ],
)
def test_tech3341_gated_tone_sequences_integrate_to_minus_23(case: int, steps: list) -> None:
    frame = meter_last(stereo_tones(steps))
    assert near(frame["loudness"]["integrated_lufs"], -23.0, TOLERANCE_LU), (case, frame["loudness"])


def test_tech3341_case4_would_fail_without_the_relative_gate() -> None:
    # the plain energy mean of case 4's tones is about -24.5 LUFS: only the gates bring it to -23
    steps = [(10.0, -72.0), (10.0, -36.0), (60.0, -23.0), (10.0, -36.0), (10.0, -72.0)]
    mono = stereo_tones(steps)[:, 0].astype(np.float64)
    ungated = 10 * np.log10(2 * np.mean(mono**2))  # at 1 kHz K-weighting's +0.691 dB cancels the -0.691 offset
    assert ungated < -24.0
    assert near(meter_last(stereo_tones(steps))["loudness"]["integrated_lufs"], -23.0, TOLERANCE_LU)


@pytest.mark.parametrize("with_lfe", [False, True])
def test_tech3341_case6_surround_channels_weigh_141_and_lfe_is_left_out(with_lfe: bool) -> None:
    levels = {"L": -28.0, "R": -28.0, "C": -24.0, "Ls": -30.0, "Rs": -30.0}
    if with_lfe:
        levels = {"L": -28.0, "R": -28.0, "C": -24.0, "LFE": -6.0, "Ls": -30.0, "Rs": -30.0}  # a loud LFE must not count
    block = np.stack([sine(20.0, dbfs) for dbfs in levels.values()], axis=1)
    engine = MeterEngine(48000, len(levels), names=list(levels), programmes={"front": [0, 1]})
    for start in range(0, len(block), 4800):
        frame = engine.process(block[start : start + 4800])
    assert near(frame["loudness"]["integrated_lufs"], -23.0, TOLERANCE_LU), frame["loudness"]
    front = frame["programmes"][0]
    assert front["name"] == "front" and front["channels"] == [0, 1]
    assert near(front["integrated_lufs"], -28.0, TOLERANCE_LU)


def test_channel_weights_follow_bs1770_names() -> None:
    assert [channel_weight(n) for n in ("L", "R", "C", "LFE", "Ls", "rs", None, "ch7")] == [1, 1, 1, 0, 1.41, 1.41, 1, 1]


def test_tech3341_case9_short_term_stays_at_minus_23_after_3_s() -> None:
    signal = stereo_tones([(1.34, -20.0), (1.66, -30.0)] * 20)
    readings = [f["loudness"]["short_term_lufs"] for f in meter_frames(signal)[30:]]
    assert all(near(value, -23.0, TOLERANCE_LU) for value in readings), (min(readings), max(readings))
    # and the momentary meter, on the same signal, swings by 10 LU: the window really is 3 s
    momentary = [f["loudness"]["momentary_lufs"] for f in meter_frames(signal)[30:]]
    assert max(momentary) - min(momentary) > 9.0


def test_tech3341_case12_momentary_stays_at_minus_23_after_1_s() -> None:
    signal = stereo_tones([(0.18, -20.0), (0.22, -30.0)] * 50)
    frames = meter_frames(signal, block=480)  # read every 10 ms: the window ends at the block, not on a 100 ms grid
    readings = [f["loudness"]["momentary_lufs"] for f in frames[100:]]
    assert all(near(value, -23.0, TOLERANCE_LU) for value in readings), (min(readings), max(readings))


@pytest.mark.parametrize(
    ("case", "steps", "expected"),
    [
        (1, [(20.0, -20.0), (20.0, -30.0)], 10.0),
        (2, [(20.0, -20.0), (20.0, -15.0)], 5.0),
        (3, [(20.0, -40.0), (20.0, -20.0)], 20.0),
        (4, [(20.0, -50.0), (20.0, -35.0), (20.0, -20.0), (20.0, -35.0), (20.0, -50.0)], 15.0),
    ],
)
def test_tech3342_tone_sequences_have_their_loudness_range(case: int, steps: list, expected: float) -> None:
    frame = meter_last(stereo_tones(steps))
    assert near(frame["loudness"]["lra_lu"], expected, LRA_TOLERANCE_LU), (case, frame["loudness"])


def test_integrated_loudness_and_lra_do_not_depend_on_block_size() -> None:
    pink = noise(40.0, pink=True, seed=3)
    signal = (pink * envelope(len(pink), 48000, 1.5, -30.0, 0.0)).astype(np.float32)
    results = {size: meter_last(signal, block=size)["loudness"] for size in (4800, 1031, 441, 48000 * 7)}
    reference = results[4800]
    assert reference["integrated_lufs"] is not None and reference["lra_lu"] is not None and reference["lra_lu"] > 3
    for size, loudness in results.items():
        assert loudness == reference, size


def test_momentary_and_short_term_are_none_in_digital_silence_and_come_back() -> None:
    engine = MeterEngine(48000, 2)
    silent = engine.process(np.zeros((4800, 2), np.float32))["loudness"]
    assert silent == {"momentary_lufs": None, "short_term_lufs": None, "integrated_lufs": None, "lra_lu": None}
    tone = stereo_tones([(0.5, -23.0)])
    loud = engine.process(tone)["loudness"]
    assert near(loud["momentary_lufs"], -23.0, TOLERANCE_LU)
    assert loud["lra_lu"] is None  # no 3 s short-term block yet


def test_reset_starts_integrated_loudness_again() -> None:
    engine = MeterEngine(48000, 2)
    engine.process(stereo_tones([(20.0, -23.0)]))
    engine.reset_loudness()
    assert engine.process(np.zeros((1, 2), np.float32))["loudness"]["integrated_lufs"] is None
    frame = engine.process(stereo_tones([(20.0, -33.0)]))
    # only blocks wholly after the reset count: each one still holding the -23 tone would pull this up by about 0.1 LU
    assert near(frame["loudness"]["integrated_lufs"], -33.0, 0.02), frame["loudness"]
    assert near(frame["loudness"]["lra_lu"], 0.0, 0.05), frame["loudness"]


def test_loudness_state_stays_bounded_on_long_runs() -> None:
    meter = LoudnessMeter(8000, 1, [Programme("all", (0,), (1.0,))])
    rng = np.random.default_rng(5)

    def state_bytes() -> int:
        arrays = [v for v in vars(meter).values() if isinstance(v, np.ndarray)]
        histograms = [h for group in (meter._integrated, meter._range) for h in group]
        arrays += [a for h in histograms for a in (h.counts, h.sums)]
        return sum(a.nbytes for a in arrays)

    minute = rng.standard_normal((1, 8000 * 60)) * 0.05
    meter.process(minute)
    after_one = state_bytes()
    for _ in range(20):
        meter.process(minute * rng.uniform(0.1, 1.0))
    assert state_bytes() == after_one
    assert int(meter._integrated[0].counts.sum()) == 21 * 600 - 3  # every 400 ms block, 100 ms apart, was counted
