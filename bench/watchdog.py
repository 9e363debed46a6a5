"""CPU the node's signal-chain watchdog adds to metering: every detector on 8 channels at 48 kHz.

What is measured
----------------
The node meters each 100 ms block (``audio.meters.MeterEngine``: peak, RMS, DC, clips, silence,
true peak, loudness) and turns the body into a ``MeterFrame``; the watchdog then runs every
detector on that frame (``node.watchdog.frame_watch.FrameWatch.update``: silence, clipping,
flatline, DC offset, the noise floor against a calibrated baseline, format change), per channel,
with no second pass over the audio. Two set-ups run on the same ``--seconds`` of 8-channel 48 kHz
noise whose level jumps between -60 and 0 dB every 1.5 s (so detectors open and resolve):

* reference: metering alone (engine + frame), what the node did before the watchdog;
* subject: the same plus every detector, with a baseline for every channel (so the noise-floor
  detector keeps its window and percentile) and channel policies on half the channels.

They run in alternating rounds in the same window (reference, subject, reference, ...), each a
fresh engine over the whole signal, timed with ``time.process_time`` (CPU of this process) over
audio seconds: the share of one core needed to keep up in real time. A round's "added" figure is
the subject minus the reference of its pair; the headline is the median over ``--rounds`` pairs,
with the spread (min-max) in brackets, so a busy neighbour shows up as spread. Because the added
cost is small against metering, the detectors are also timed alone on the frames the engine made
(the same frames, replayed: ``--rounds`` runs, median), which is the figure with the least noise.
The load average is printed before and after. The target is under 0.5 % of one core added.

How
---
Signals are made in memory with a fixed seed (no I/O); one warm-up pair precedes the timed ones.
Run it from the repository root::

    .venv/bin/python bench/watchdog.py [--seconds 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hark_fleet.audio.meters import MeterEngine  # noqa: E402
from hark_fleet.node.watchdog.frame_watch import FrameWatch  # noqa: E402
from hark_fleet.protocol.messages import MeterFrame  # noqa: E402
from hark_fleet.protocol.watchdog import (  # noqa: E402
    Baseline,
    ChannelBaseline,
    DcOffsetDetector,
    Detectors,
    FlatlineDetector,
    NodeWatchdog,
    NoiseFloorDetector,
    PolicyConfig,
    SilenceDetector,
)

RATE = 48000
BLOCK = RATE // 10
CHANNELS = 8
NAMES = [f"ch{i + 1}" for i in range(CHANNELS)]
TARGET_ADDED_PCT = 0.5


def noise_with_envelope(seconds: float, seed: int = 1) -> np.ndarray:
    """Float32 (frames, channels) noise whose level jumps between -60 and 0 dB every 1.5 s."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * RATE)
    step = round(1.5 * RATE)
    gain = np.repeat(10.0 ** (rng.uniform(-60.0, 0.0, frames // step + 1) / 20.0), step)[:frames]
    return (0.1 * rng.standard_normal((frames, CHANNELS)) * gain[:, None]).astype(np.float32)


def policy() -> NodeWatchdog:
    """Every detector on, a baseline for every channel, and channel policies (own thresholds and baselines) on half."""
    baseline = Baseline(
        measured_at="2026-12-06T09:00:00Z",
        duration_s=60.0,
        frames=600,
        sample_rate=RATE,
        channel_count=CHANNELS,
        channels={name: ChannelBaseline(noise_floor_dbfs=-45.0, rms_median_dbfs=-30.0) for name in NAMES},
    )
    detectors = Detectors(
        silence=SilenceDetector(threshold_dbfs=-60.0, hold_s=2.0),
        flatline=FlatlineDetector(hold_s=1.0),
        dc_offset=DcOffsetDetector(limit=0.01, hold_s=1.0),
        noise_floor=NoiseFloorDetector(shift_db=10.0, window_s=10.0, hold_s=2.0),
    )
    node = PolicyConfig(policy_id="wdp_node", version=1, detectors=detectors, baseline=baseline)
    own = Detectors(silence=SilenceDetector(threshold_dbfs=-50.0, hold_s=1.0), noise_floor=NoiseFloorDetector(window_s=5.0))
    channels = {name: PolicyConfig(policy_id=f"wdp_{name}", version=2, detectors=own, baseline=baseline) for name in NAMES[::2]}
    return NodeWatchdog(node=node, channels=channels)


def metering_round(
    blocks: list[np.ndarray], watch: FrameWatch | None, frames_out: list[MeterFrame] | None = None
) -> tuple[float, int]:
    """CPU seconds to meter every block like the node (and run the detectors when `watch` is given); events raised."""
    engine = MeterEngine(RATE, CHANNELS, names=NAMES)
    events = 0
    started = time.process_time()
    for seq, block in enumerate(blocks, 1):
        body = engine.process(block)
        body.update(ts="2026-12-06T09:00:00.000Z", seq=seq, interval_ms=100, sample_rate=RATE)
        frame = msgspec.convert(body, MeterFrame)
        if watch is not None:
            events += len(watch.update(frame))
        if frames_out is not None:
            frames_out.append(frame)
    return time.process_time() - started, events


def detectors_alone(frames: list[MeterFrame]) -> tuple[float, int]:
    """CPU seconds of the detectors over `frames` (a fresh watch); events raised."""
    watch = FrameWatch(policy())
    events = 0
    started = time.process_time()
    for frame in frames:
        events += len(watch.update(frame))
    return time.process_time() - started, events


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} % [{min(values):.3f} .. {max(values):.3f}]"


def run(seconds: float, rounds: int) -> int:
    print("hark node watchdog benchmark")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"  machine   {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({usable} usable)")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print(f"  params    {CHANNELS} channels at {RATE} Hz, {BLOCK}-frame (100 ms) blocks, {seconds:g} s of audio per round,")
    print(f"            {rounds} alternating pairs after one warm-up pair; every detector, baselines, 4 channel policies")
    load_before = os.getloadavg()
    print(f"  load      {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} (1, 5, 15 min) before")
    signal = noise_with_envelope(seconds)
    blocks = [signal[start : start + BLOCK] for start in range(0, len(signal) - BLOCK + 1, BLOCK)]
    audio_s = len(blocks) * BLOCK / RATE
    reference: list[float] = []
    subject: list[float] = []
    events = 0
    frames: list[MeterFrame] = []
    for i in range(rounds + 1):
        ref_s, _ = metering_round(blocks, None, frames if i == 0 else None)
        sub_s, events = metering_round(blocks, FrameWatch(policy()))
        if i == 0:
            continue  # warm-up: caches, imports, allocations
        reference.append(100.0 * ref_s / audio_s)
        subject.append(100.0 * sub_s / audio_s)
    added = [s - r for s, r in zip(subject, reference, strict=True)]
    alone = []
    for _ in range(rounds):
        cpu_s, alone_events = detectors_alone(frames)
        alone.append(100.0 * cpu_s / audio_s)
    load_after = os.getloadavg()
    print(f"  load      {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (1, 5, 15 min) after")
    print()
    print("CPU share of one core to keep up in real time (median of rounds, min .. max in brackets)")
    print(f"   metering alone (reference)          {spread(reference)}")
    print(f"   metering + every detector (subject) {spread(subject)}")
    print(f"   added by the watchdog (pairs)       {spread(added)}")
    print(f"   the detectors alone, same frames    {spread(alone)}")
    per_frame_us = statistics.median(alone) / 100.0 * 0.1 * 1e6
    print(f"   per 100 ms frame (8 channels)       {per_frame_us:8.1f} us; {events} events opened or resolved per round")
    print(f"   target: under {TARGET_ADDED_PCT:g} % of one core added")
    headline = statistics.median(alone)
    ok = headline < TARGET_ADDED_PCT and statistics.median(added) < TARGET_ADDED_PCT
    print()
    print("target met" if ok else "the target was missed")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU the node's watchdog detectors add to metering (8 channels, 48 kHz).")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per round (default 20)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating reference/subject pairs after a warm-up (default 7)")
    args = parser.parse_args(argv)
    if args.seconds < 2 or args.rounds < 1:
        parser.error("--seconds must be at least 2 and --rounds at least 1")
    return run(args.seconds, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
