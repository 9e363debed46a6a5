"""The synthetic source's level step and stuck value, as parsed from the source string and generated block by block."""

from __future__ import annotations

import numpy as np
import pytest
from hark_fleet.audio.capture.synthetic import SignalGenerator
from hark_fleet.audio.source import parse_audio_source

RATE = 48000


def rms_db(block: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(block.astype(np.float64) ** 2)))


def test_the_level_steps_by_step_db_after_step_s_seconds_of_capture() -> None:
    source = parse_audio_source("synthetic:noise?dbfs=-30&step_s=1.05&step_db=-20&channels=2")
    assert (source.step_s, source.step_db) == (1.05, -20.0)
    assert source.describe() == "synthetic noise -30 dBFS RMS, -20 dB after 1.05s"
    generator = SignalGenerator(source.target, RATE, source.freq, source.dbfs, step_s=source.step_s, step_db=source.step_db)
    blocks = []
    for _ in range(20):
        block = np.zeros((RATE // 10, 2), dtype=np.float32)
        generator.fill(block)
        blocks.append(block)
    assert rms_db(blocks[5]) == pytest.approx(-30.0, abs=0.3)
    assert rms_db(blocks[15]) == pytest.approx(-50.0, abs=0.3)
    straddling = blocks[10]  # 1.00-1.10 s: the step falls in its middle, sample-exact
    assert rms_db(straddling[: RATE // 20]) == pytest.approx(-30.0, abs=0.5)
    assert rms_db(straddling[RATE // 20 :]) == pytest.approx(-50.0, abs=0.5)


def test_a_stuck_source_holds_one_sample_value_at_its_level() -> None:
    source = parse_audio_source("synthetic:stuck?dbfs=-12&channels=1")
    generator = SignalGenerator(source.target, RATE, source.freq, source.dbfs)
    block = np.zeros((RATE // 10, 1), dtype=np.float32)
    generator.fill(block)
    assert np.all(block == block[0, 0]) and float(block[0, 0]) == pytest.approx(10 ** (-12 / 20), rel=1e-6)
    assert source.describe() == "synthetic stuck -12 dBFS"


@pytest.mark.parametrize("bad", ["step_s=-1", "step_db=abc", "step_db=300"])
def test_bad_step_options_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="step_"):
        parse_audio_source(f"synthetic:noise?{bad}")
