"""CPU cost of hark's audio meters, and integrated loudness against libebur128 and pyloudnorm.

What is measured
----------------
1. Real-time metering. ``audio.meters.MeterEngine`` meters ``--seconds`` of 48 kHz noise with a level
   envelope, fed in 100 ms blocks (what the node does), for 2, 8 and 32 channels. Every meter runs:
   sample peak, RMS, DC, clip count, silence, true peak (4x), K-weighted momentary / short-term /
   integrated loudness and LRA for the default programme plus one stereo programme. Each count is run
   twice: with calibrated SPL on every channel (A-weighting, LAeq, LAmax, LA90) and without SPL. The
   figure is the share of one core the metering needs to keep up: CPU seconds (``time.process_time``,
   which counts every thread of the process) over audio seconds. The target is 8 channels under 2 %.

2. Integrated loudness of 60 s of stereo noise with an envelope, timed (``time.process_time``) for:
   ``pyebur128`` (libebur128 in C, MODE_I, fed at once), hark's ``LoudnessMeter`` fed at once and in
   100 ms blocks, and ``pyloudnorm`` (numpy, offline). Times are the best of ``--repeat`` runs and are
   shown as ratios to pyebur128, with each tool's reading. The target is hark no slower than 2x libebur128.

How
---
Signals are made in memory with a fixed seed (no I/O). One warm-up pass precedes each timing, and
each figure is the median (part 1) or the best (part 2) of ``--repeat`` runs, so a busy neighbour on the
machine shows up as spread rather than as the figure. Run it from the repository root::

    .venv/bin/python bench/meters.py [--seconds 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hark_fleet.audio.meters import LoudnessMeter, MeterEngine, Programme  # noqa: E402

RATE = 48000
BLOCK = RATE // 10
CHANNEL_COUNTS = (2, 8, 32)
TARGET_8CH_PCT = 2.0
TARGET_RATIO = 2.0
LOUDNESS_SECONDS = 60.0


def noise_with_envelope(seconds: float, channels: int, seed: int = 1) -> np.ndarray:
    """Float32 (frames, channels) Gaussian noise whose level jumps between -40 and 0 dB every 1.5 s."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * RATE)
    step = round(1.5 * RATE)
    gain = np.repeat(10.0 ** (rng.uniform(-40.0, 0.0, frames // step + 1) / 20.0), step)[:frames]
    return (0.1 * rng.standard_normal((frames, channels)) * gain[:, None]).astype(np.float32)


def metering_share(signal: np.ndarray, spl: bool, repeat: int) -> list[float]:
    """CPU share (percent of one core) of metering `signal` in real time, once per repeat."""
    channels = signal.shape[1]
    blocks = [signal[start : start + BLOCK] for start in range(0, len(signal), BLOCK)]
    audio_s = len(signal) / RATE
    shares = []
    for _ in range(repeat + 1):
        engine = MeterEngine(
            RATE,
            channels,
            programmes={"stereo": [0, 1]},
            calibration={c: 110.0 for c in range(channels)} if spl else None,
        )
        started = time.process_time()
        for block in blocks:
            engine.process(block)
        shares.append(100.0 * (time.process_time() - started) / audio_s)
    return shares[1:]  # the first pass warms caches and imports


def best_time(run: Callable[[], float], repeat: int) -> tuple[float, float]:
    """(best CPU seconds, reading) of `run` over a warm-up and `repeat` runs."""
    reading = run()
    times = []
    for _ in range(repeat):
        started = time.process_time()
        reading = run()
        times.append(time.process_time() - started)
    return min(times), reading


def with_pyebur128(signal: np.ndarray) -> float:
    """libebur128's integrated loudness of the signal."""
    import pyebur128

    state = pyebur128.R128State(signal.shape[1], RATE, pyebur128.MeasurementMode.MODE_I)
    state.add_frames(signal.reshape(-1), len(signal))
    return float(pyebur128.get_loudness_global(state))


def with_hark(signal: np.ndarray, block: int | None) -> float:
    """hark's integrated loudness of the signal, fed at once (block None) or in blocks."""
    meter = LoudnessMeter(RATE, signal.shape[1], [Programme("all", (0, 1), (1.0, 1.0))])
    samples = np.ascontiguousarray(signal.T, dtype=np.float64)
    step = block or samples.shape[1]
    for start in range(0, samples.shape[1], step):
        meter.process(samples[:, start : start + step])
    value = meter.readings()[0].integrated_lufs
    return float("nan") if value is None else value


def with_pyloudnorm(signal: np.ndarray) -> float:
    """pyloudnorm's integrated loudness of the signal."""
    import pyloudnorm

    return float(pyloudnorm.Meter(RATE).integrated_loudness(signal.astype(np.float64)))


def run(seconds: float, repeat: int) -> int:
    print("hark audio meters benchmark")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"  machine   {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({usable} usable)")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print(f"  params    {seconds:g} s of audio per run at {RATE} Hz, {BLOCK}-frame (100 ms) blocks, {repeat} runs")
    print()
    print("1. CPU share of one core to meter in real time (median of runs, min-max in brackets)")
    print(f"   {'channels':>8}  {'all meters + SPL':>24}  {'all meters, no SPL':>24}  {'per 100 ms block':>16}")
    ok = True
    for channels in CHANNEL_COUNTS:
        signal = noise_with_envelope(seconds, channels)
        cells = []
        medians = []
        for spl in (True, False):
            shares = metering_share(signal, spl, repeat)
            medians.append(statistics.median(shares))
            cells.append(f"{medians[-1]:6.2f} % [{min(shares):.2f}-{max(shares):.2f}]")
        block_ms = medians[0] / 100.0 * 100.0  # share x 100 ms of audio per block
        print(f"   {channels:>8}  {cells[0]:>24}  {cells[1]:>24}  {block_ms:>13.3f} ms")
        if channels == 8:
            ok = ok and medians[0] < TARGET_8CH_PCT
    print(f"   target: 8 channels under {TARGET_8CH_PCT:g} % of a core with every meter")
    print()
    print(f"2. Integrated loudness of {LOUDNESS_SECONDS:g} s of stereo noise with an envelope (best of {repeat})")
    signal = noise_with_envelope(LOUDNESS_SECONDS, 2, seed=7)
    reference_s, reference = best_time(lambda: with_pyebur128(signal), repeat)
    rows = [
        ("pyebur128 (libebur128)", reference_s, reference),
        ("hark, one call", *best_time(lambda: with_hark(signal, None), repeat)),
        ("hark, 100 ms blocks", *best_time(lambda: with_hark(signal, BLOCK), repeat)),
        ("pyloudnorm", *best_time(lambda: with_pyloudnorm(signal), repeat)),
    ]
    print(f"   {'tool':<24} {'CPU s':>8} {'x pyebur128':>12} {'LUFS':>9} {'vs libebur128':>14}")
    for name, cpu_s, value in rows:
        print(f"   {name:<24} {cpu_s:8.3f} {cpu_s / reference_s:12.2f} {value:9.3f} {value - reference:+14.3f}")
    print(f"   target: hark no slower than {TARGET_RATIO:g}x libebur128")
    hark_ratio = rows[1][1] / reference_s
    ok = ok and hark_ratio <= TARGET_RATIO
    print()
    print("targets met" if ok else "a target was missed")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU cost of hark's audio meters, and integrated loudness against references.")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of audio metered per run (default 30)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure, after one warm-up (default 3)")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.repeat < 1:
        parser.error("--seconds must be at least 1 and --repeat at least 1")
    return run(args.seconds, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
