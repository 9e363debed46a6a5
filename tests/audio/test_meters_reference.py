"""Agreement with libebur128 (through pyebur128) on programme-like material: noise with level changes, speech, music.

Both meters cut the stream into the same 100 ms steps, gate the same 400 ms blocks and take LRA from 3 s
blocks 1 s apart, so integrated loudness differs only by the rounding of our reported values (0.005) and by
the one 0.01 LU histogram bin that straddles the relative gate; LRA additionally by the bins of its two
percentiles. Momentary and short-term read the same windows ending at the last sample.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pyebur128 as ebur128
import pytest
from hark_fleet.audio.meters import MeterEngine
from scipy.signal import resample_poly

from tests.audio.test_meters_signals import blocks, envelope, noise

INTEGRATED_LU = 0.02  # rounding (0.005) plus one straddling 0.01 LU bin; the brief asks for 0.05
WINDOW_LU = 0.01  # momentary and short-term: the same windows, only our rounding differs
LRA_LU = 0.05  # two percentile bins of 0.01 LU plus rounding
SPEECH = (
    "The quick brown fox jumps over the lazy dog. Recording boxes in the field send their meters to the hub "
    "ten times a second. Loudness is measured as the European Broadcasting Union describes it, with gates "
    "that ignore the quiet parts. Silence, please, for two seconds. Thank you, that is all for today."
)
EBUR128_CHANNELS = {
    "L": ebur128.ChannelType.LEFT,
    "R": ebur128.ChannelType.RIGHT,
    "C": ebur128.ChannelType.CENTER,
    "LFE": ebur128.ChannelType.UNUSED,
    "Ls": ebur128.ChannelType.LEFT_SURROUND,
    "Rs": ebur128.ChannelType.RIGHT_SURROUND,
    "M": ebur128.ChannelType.LEFT,
}


def libebur128(signal: np.ndarray, rate: int, names: list[str]) -> dict[str, float]:
    """libebur128's integrated, LRA, momentary and short-term loudness of the whole signal."""
    modes = ebur128.MeasurementMode
    state = ebur128.R128State(signal.shape[1], rate, modes.MODE_I | modes.MODE_LRA | modes.MODE_S)
    for index, name in enumerate(names):
        state.set_channel(index, EBUR128_CHANNELS[name])
    state.add_frames(np.ascontiguousarray(signal, dtype=np.float32).reshape(-1), len(signal))
    return {
        "integrated_lufs": ebur128.get_loudness_global(state),
        "lra_lu": ebur128.get_loudness_range(state),
        "momentary_lufs": ebur128.get_loudness_momentary(state),
        "short_term_lufs": ebur128.get_loudness_shortterm(state),
    }


def ours(signal: np.ndarray, rate: int, names: list[str], block: int) -> dict[str, Any]:
    engine = MeterEngine(rate, signal.shape[1], names=names)
    frame: dict[str, Any] = {}
    for part in blocks(signal.astype(np.float32), block):
        frame = engine.process(part)
    return frame["loudness"]


def assert_agrees(signal: np.ndarray, rate: int, names: list[str], block: int | None = None) -> None:
    expected = libebur128(signal, rate, names)
    got = ours(signal, rate, names, block or rate // 10)
    assert expected["integrated_lufs"] > -70 and expected["lra_lu"] > 0.5  # the material is not trivial
    assert got["integrated_lufs"] == pytest.approx(expected["integrated_lufs"], abs=INTEGRATED_LU), (got, expected)
    assert got["lra_lu"] == pytest.approx(expected["lra_lu"], abs=LRA_LU), (got, expected)
    assert got["momentary_lufs"] == pytest.approx(expected["momentary_lufs"], abs=WINDOW_LU), (got, expected)
    assert got["short_term_lufs"] == pytest.approx(expected["short_term_lufs"], abs=WINDOW_LU), (got, expected)


@pytest.fixture(scope="module")
def pink_with_level_changes() -> np.ndarray:
    """60 s of stereo pink noise whose level jumps every 2 s between -45 and 0 dB, with a silent gap."""
    signal = noise(60.0, pink=True, seed=11) * envelope(48000 * 60, 48000, 2.0, -45.0, 0.0, seed=2)
    signal[48000 * 20 : 48000 * 26] = 0.0
    return signal


@pytest.fixture(scope="module")
def speech_22k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng speaking SPEECH: mono 22050 Hz, as it writes it."""
    assert shutil.which("espeak-ng"), "espeak-ng is missing: tests/services.sh installs it (apt-get install espeak-ng)"
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPEECH], check=True, capture_output=True, timeout=60)
    return read_wav(path)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV as (frames, channels) float64 in [-1, 1], checked to be 22050 Hz."""
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2 and wav.getframerate() == 22050
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return raw.reshape(-1, wav.getnchannels()) / 32768.0


def music_like(seconds: float, rate: int) -> np.ndarray:
    """Stereo chords of harmonic tones with attack/decay envelopes, panned, over a soft pad."""
    rng = np.random.default_rng(7)
    frames = round(seconds * rate)
    t = np.arange(frames) / rate
    out = np.zeros((frames, 2))
    pad = 0.02 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.1 * t))
    out += pad[:, None]
    start = 0.0
    while start < seconds - 0.5:
        length = rng.uniform(0.25, 1.5)
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        first, last = round(start * rate), min(frames, round((start + length) * rate))
        local = t[first:last] - start
        shape = np.minimum(local / 0.01, 1.0) * np.exp(-local * rng.uniform(1.0, 6.0))
        note = sum(np.sin(2 * np.pi * root * h * local) / h for h in range(1, 7)) * shape * 10 ** (rng.uniform(-30, -6) / 20)
        pan = rng.uniform(0.2, 0.8)
        out[first:last, 0] += note * (1 - pan)
        out[first:last, 1] += note * pan
        start += length * rng.uniform(0.3, 1.0)
    return out / max(1.0, np.abs(out).max() / 0.9)


def test_pink_noise_with_level_changes_agrees_with_libebur128(pink_with_level_changes: np.ndarray) -> None:
    assert_agrees(pink_with_level_changes, 48000, ["L", "R"])


def test_pink_noise_agrees_with_libebur128_in_odd_blocks(pink_with_level_changes: np.ndarray) -> None:
    assert_agrees(pink_with_level_changes[: 48000 * 40 + 123], 48000, ["L", "R"], block=997)


def test_white_noise_in_51_agrees_with_libebur128_surround_weights_and_lfe_included() -> None:
    names = ["L", "R", "C", "LFE", "Ls", "Rs"]
    signal = noise(30.0, channels=6, seed=4) * envelope(48000 * 30, 48000, 1.0, -30.0, 0.0, seed=5)
    signal[:, 3] *= 3.0  # a hot LFE, which neither meter may count
    assert_agrees(signal, 48000, names)


def test_speech_at_22050_hz_agrees_with_libebur128(speech_22k: np.ndarray) -> None:
    assert len(speech_22k) > 22050 * 8
    assert_agrees(speech_22k, 22050, ["M"])


def test_speech_resampled_to_48_khz_agrees_with_libebur128(speech_22k: np.ndarray) -> None:
    resampled = resample_poly(speech_22k, 320, 147, axis=0)
    assert_agrees(np.clip(resampled, -1.0, 1.0), 48000, ["M"])


@pytest.mark.parametrize("rate", [44100, 48000])
def test_music_like_multitone_agrees_with_libebur128(rate: int) -> None:
    assert_agrees(music_like(45.0, rate), rate, ["L", "R"])
