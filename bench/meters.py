"""CPU cost of hark's audio meters fed as a node feeds them, and integrated loudness against libebur128.

What is measured
----------------
1. All meters incl. SPL, 8 ch 48 kHz, as a share of one core. A child process runs ``audio.meters.MeterEngine``
   on 8 channels of 48 kHz noise with a level envelope, fed one 100 ms block every 100 ms of wall time (what the
   node's meter thread does), with every meter on: sample peak, RMS, DC, clip count, silence, true peak (4x),
   K-weighted momentary / short-term / integrated loudness and LRA for the whole source and a stereo programme,
   and calibrated SPL on every channel (A-weighting, LAeq, LAmax, LA90). The figure is the child's CPU time
   (every thread, ``time.process_time``) over the wall time it was fed for, after a 1 s warm-up; the parent
   also reads the child's utime + stime from /proc before and after, as an outside check. Metering as fast
   as possible in a loop reads about half of this (warm caches, no wake-ups), which is why it is not the figure.
   The same run without SPL alternates with it. Target: under 2 % of a core with SPL.

2. Integrated loudness against libebur128. 60 s of stereo noise with an envelope, cut into the (4800, 2)
   float32 blocks of 100 ms a node has, is fed block by block to ``pyebur128`` (libebur128, MODE_I) and to
   hark's ``LoudnessMeter`` (which includes turning each block into the (channels, frames) float64 it takes),
   and each reads integrated loudness at the end. The figure is hark's CPU time over libebur128's, per round
   (both measured in the same round), each the total of ``PASSES`` passes. Target: no slower than 1.2x.

How
---
Both figures come from alternating rounds (bench/rounds.py): with and without SPL, hark and libebur128, in the
same time window, order reversed every other round; each figure is the median of the rounds with its range,
and the 1-minute load average before and after each round is printed. A machine already busy when the bench
starts gets a warning. Run it from the repository root::

    .venv/bin/python bench/meters.py [--rounds 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hark_fleet.audio.meters import LoudnessMeter, MeterEngine, Programme  # noqa: E402
from rounds import MIN_ROUNDS, Round, alternate, busy_warning, load_average, load_text, ratios, summarize  # noqa: E402

RATE = 48000
BLOCK = RATE // 10  # 100 ms, the node's meter interval
CHANNELS = 8
WARM_UP_BLOCKS = 10
TARGET_SHARE_PCT = 2.0  # all meters incl. SPL, 8 ch 48 kHz, % of one core
TARGET_RATIO = 1.2  # integrated loudness, hark over libebur128, both fed 100 ms blocks
LOUDNESS_SECONDS = 60.0
PASSES = 5  # passes over the loudness signal per subject and round
SUBJECT_SPL, SUBJECT_PLAIN = "all meters incl. SPL", "all meters, no SPL"
SUBJECT_HARK, SUBJECT_EBUR = "hark LoudnessMeter", "libebur128"


def noise_with_envelope(seconds: float, channels: int, seed: int = 1) -> np.ndarray:
    """Float32 (frames, channels) Gaussian noise whose level jumps between -40 and 0 dB every 1.5 s."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * RATE)
    step = round(1.5 * RATE)
    gain = np.repeat(10.0 ** (rng.uniform(-40.0, 0.0, frames // step + 1) / 20.0), step)[:frames]
    return (0.1 * rng.standard_normal((frames, channels)) * gain[:, None]).astype(np.float32)


def blocks_of(signal: np.ndarray) -> list[np.ndarray]:
    """The signal as a node's meter thread gets it: contiguous (BLOCK, channels) float32 blocks."""
    return [np.ascontiguousarray(signal[start : start + BLOCK]) for start in range(0, len(signal) - BLOCK + 1, BLOCK)]


# -- 1. real-time metering, in a child process ------------------------------------------------------------------


def child(spl: bool, seconds: float) -> int:
    """Meter `seconds` of audio paced in real time; print the CPU and wall time of the paced part as JSON."""
    blocks = blocks_of(noise_with_envelope(seconds + WARM_UP_BLOCKS * BLOCK / RATE, CHANNELS))
    engine = MeterEngine(
        RATE,
        CHANNELS,
        programmes={"stereo": [0, 1]},
        calibration={c: 110.0 for c in range(CHANNELS)} if spl else None,
    )
    interval = BLOCK / RATE
    deadline = time.monotonic()
    late = 0
    started_cpu = started_wall = 0.0
    for number, block in enumerate(blocks):
        if number == WARM_UP_BLOCKS:
            print("start", flush=True)  # the parent reads /proc now
            started_cpu, started_wall = time.process_time(), time.monotonic()
            deadline = started_wall
        engine.process(block)
        deadline += interval
        wait = deadline - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
    cpu, wall = time.process_time() - started_cpu, time.monotonic() - started_wall
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "blocks": len(blocks) - WARM_UP_BLOCKS, "late": late}), flush=True)
    sys.stdin.readline()  # the parent reads /proc again before this process ends
    return 0


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, every thread, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def paced_round(spl: bool, seconds: float, number: int, subject: str) -> Round:
    """One child run: its CPU share of one core, by its own clock and from /proc."""
    result = Round(subject, number)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "spl" if spl else "plain", "--seconds", str(seconds)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stdin is not None
        if process.stdout.readline().strip() != "start":
            raise RuntimeError("the metering child did not start")
        outside_before, wall_before = proc_cpu_s(process.pid), time.monotonic()
        report = json.loads(process.stdout.readline())
        outside_after, wall_after = proc_cpu_s(process.pid), time.monotonic()
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait()
    figures = {"share_pct": 100.0 * report["cpu_s"] / report["wall_s"], "late": float(report["late"])}
    if outside_before is not None and outside_after is not None:
        figures["outside_pct"] = 100.0 * (outside_after - outside_before) / (wall_after - wall_before)
    return result.done(**figures)


# -- 2. integrated loudness against libebur128 ------------------------------------------------------------------


def with_libebur128(blocks: list[np.ndarray]) -> float:
    """libebur128's integrated loudness of the blocks, fed one by one (interleaved float32, as they come)."""
    import pyebur128

    state = pyebur128.R128State(blocks[0].shape[1], RATE, pyebur128.MeasurementMode.MODE_I)
    for block in blocks:
        state.add_frames(block.reshape(-1), len(block))
    return float(pyebur128.get_loudness_global(state))


def with_hark(blocks: list[np.ndarray]) -> float:
    """hark's integrated loudness of the blocks, fed one by one, each turned into (channels, frames) float64."""
    channels = blocks[0].shape[1]
    meter = LoudnessMeter(RATE, channels, [Programme("all", tuple(range(channels)), (1.0,) * channels)])
    for block in blocks:
        meter.process(np.ascontiguousarray(block.T, dtype=np.float64))
    value = meter.readings()[0].integrated_lufs
    return float("nan") if value is None else value


def loudness_round(blocks: list[np.ndarray], number: int, subject: str) -> Round:
    """CPU seconds of PASSES passes of one tool over the blocks, and its reading."""
    run = with_hark if subject == SUBJECT_HARK else with_libebur128
    result = Round(subject, number)
    started = time.process_time()
    for _ in range(PASSES):
        reading = run(blocks)
    return result.done(cpu_s=time.process_time() - started, lufs=reading)


# -- report ----------------------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def run(rounds: int, seconds: float) -> int:
    load_at_start = load_average()
    print("hark audio meters benchmark")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"  machine   {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({usable} usable)")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print(f"  params    {rounds} rounds; {CHANNELS} ch at {RATE} Hz in 100 ms blocks, {seconds:g} s paced per run")
    warning = busy_warning(load_at_start)
    if warning:
        print(warning)
    print()

    print(f"1. Real-time metering, {CHANNELS} ch {RATE // 1000} kHz, one 100 ms block every 100 ms (% of one core)")
    paced: list[Round] = []
    for number, subject in alternate([SUBJECT_SPL, SUBJECT_PLAIN], rounds):
        result = paced_round(subject == SUBJECT_SPL, seconds, number, subject)
        paced.append(result)
        outside = f", /proc {result.figures['outside_pct']:.2f} %" if "outside_pct" in result.figures else ""
        print(
            f"   round {number + 1} {subject:<22} {result.figures['share_pct']:5.2f} %{outside}, "
            f"{int(result.figures['late'])} late blocks, load {result.load_before:.2f} -> {result.load_after:.2f}"
        )

    blocks = blocks_of(noise_with_envelope(LOUDNESS_SECONDS, 2, seed=7))
    print()
    print(f"2. Integrated loudness of {LOUDNESS_SECONDS:g} s of stereo noise, both fed the same 100 ms blocks ({PASSES} passes)")
    loudness: list[Round] = []
    with_hark(blocks[:50]), with_libebur128(blocks[:50])  # warm-up: imports, first allocations
    for number, subject in alternate([SUBJECT_EBUR, SUBJECT_HARK], rounds):
        result = loudness_round(blocks, number, subject)
        loudness.append(result)
        print(
            f"   round {number + 1} {subject:<22} {result.figures['cpu_s']:6.3f} CPU s, {result.figures['lufs']:8.3f} LUFS, "
            f"load {result.load_before:.2f} -> {result.load_after:.2f}"
        )

    share = summarize(paced, SUBJECT_SPL, "share_pct")
    plain = summarize(paced, SUBJECT_PLAIN, "share_pct")
    outside = summarize(paced, SUBJECT_SPL, "outside_pct")
    ratio = ratios(loudness, SUBJECT_HARK, SUBJECT_EBUR, "cpu_s")
    hark_lufs = summarize(loudness, SUBJECT_HARK, "lufs").median
    ebur_lufs = summarize(loudness, SUBJECT_EBUR, "lufs").median
    share_met, ratio_met = share.median < TARGET_SHARE_PCT, ratio.median <= TARGET_RATIO
    print()
    print(f"Figures (median of {rounds} rounds, range in brackets; {load_text(paced + loudness)})")
    print(
        f"  all meters incl. SPL, {CHANNELS} ch {RATE // 1000} kHz:  {share.text('{:.2f}', '%')} of one core"
        f"   target < {TARGET_SHARE_PCT:g} %   {verdict(share_met)}"
    )
    print(f"      (from /proc: {outside.text('{:.2f}', '%')}; without SPL: {plain.text('{:.2f}', '%')})")
    print(
        f"  integrated loudness vs libebur128, 100 ms blocks:  {ratio.text('{:.2f}', 'x')}"
        f"   target <= {TARGET_RATIO:g}x   {verdict(ratio_met)}"
    )
    print(f"      (readings: hark {hark_lufs:.3f} LUFS, libebur128 {ebur_lufs:.3f} LUFS)")
    if warning:
        print(warning)
    return 0 if share_met and ratio_met else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU cost of hark's audio meters, and integrated loudness against libebur128.")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"alternating rounds (default and minimum {MIN_ROUNDS})")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of real-time metering per run (default 15)")
    parser.add_argument("--child", choices=["spl", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child == "spl", args.seconds)
    if args.rounds < MIN_ROUNDS or args.seconds < 2:
        parser.error(f"--rounds must be at least {MIN_ROUNDS} and --seconds at least 2")
    return run(args.rounds, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
