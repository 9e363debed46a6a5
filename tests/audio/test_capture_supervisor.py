"""The capture supervisor: device loss and stalls reported and recovered, a missing device reported and retried."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hark_fleet.audio.capture import (
    DEVICE_LOST,
    NO_DEVICE,
    CaptureCondition,
    CaptureStats,
    CaptureSupervisor,
    RingBuffer,
    ring_for_source,
)
from hark_fleet.audio.capture.base import Capture
from hark_fleet.audio.capture.synthetic import SyntheticCapture
from hark_fleet.audio.source import AudioSource, parse_audio_source

from tests.audio.conftest import PulseServer
from tests.harness import ROOT, terminate, wait_for

pytestmark = pytest.mark.usefixtures("capture_threads_stopped")


class Conditions:
    """Collects what a supervisor reports."""

    def __init__(self) -> None:
        self.seen: list[CaptureCondition] = []
        self._lock = threading.Lock()

    def __call__(self, condition: CaptureCondition) -> None:
        with self._lock:
            self.seen.append(condition)

    def states(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(c.kind, c.state) for c in self.seen]


def level(frames: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.abs(frames).max()) if len(frames) else 0.0, 1e-12)))


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_pulseaudio_losing_its_sink_is_reported_and_capture_resumes(backend: str, pulse: PulseServer, tone_wav: Path) -> None:
    conditions = Conditions()
    source = parse_audio_source(f"{backend}:pulse?channels=2&rate=48000")
    ring = ring_for_source(source, seconds=5)
    supervisor = CaptureSupervisor(source, ring, conditions, stall_s=1.0, backoff_base_s=0.2, backoff_cap_s=1.0)
    player = pulse.play(tone_wav)
    try:
        supervisor.start()
        wait_for(lambda: supervisor.state == "capturing" and ring.frames_written > 24_000, 10, "capture from PulseAudio")
        assert abs(level(ring.reader(preroll_s=0.2).read()) - (-20)) < 0.2
        assert conditions.states() == []

        pulse.unload_null_sink()  # the only source goes away under the running stream
        wait_for(lambda: conditions.states() == [(DEVICE_LOST, "open")], 10, "the loss to be reported")
        lost = conditions.seen[0]
        assert lost.severity == "critical" and "pulse" in lost.message
        time.sleep(1.0)  # reopening fails meanwhile, quietly
        assert conditions.states() == [(DEVICE_LOST, "open")] and supervisor.state == "waiting"

        pulse.load_null_sink()
        terminate(player)  # paplay's stream went with the sink
        player = pulse.play(tone_wav)
        wait_for(lambda: (DEVICE_LOST, "resolved") in conditions.states(), 10, "the recovery to be reported")
        reader = ring.reader()
        wait_for(lambda: reader.available > 24_000 and level(ring.reader(preroll_s=0.1).read()) > -20.5, 10, "the tone again")
        assert abs(level(reader.read()[-4800:]) - (-20)) < 0.2
        assert conditions.states() == [(DEVICE_LOST, "open"), (DEVICE_LOST, "resolved")]
        assert supervisor.stats.opened >= 2
    finally:
        supervisor.stop()
        terminate(player)
    assert supervisor.state == "stopped"


def test_a_source_missing_at_start_is_reported_retried_and_resolved(tmp_path: Path) -> None:
    import soundfile

    path = tmp_path / "later.wav"
    conditions = Conditions()
    source = parse_audio_source(f"file:{path}?channels=1&rate=48000")
    ring = RingBuffer(1, 48_000, seconds=2)
    supervisor = CaptureSupervisor(source, ring, conditions, backoff_base_s=0.1, backoff_cap_s=0.2)
    supervisor.start()
    try:
        wait_for(lambda: conditions.states() == [(NO_DEVICE, "open")], 5, "no device to be reported")
        assert "cannot open" in conditions.seen[0].message and supervisor.state == "waiting"
        soundfile.write(path, np.full(4800, 0.5, dtype=np.float32), 48_000, subtype="FLOAT")
        wait_for(lambda: conditions.states() == [(NO_DEVICE, "open"), (NO_DEVICE, "resolved")], 5, "the file to be found")
        wait_for(lambda: ring.frames_written > 4800, 5, "frames from the file")
        assert np.all(ring.reader(preroll_s=0.05).read() == 0.5)
    finally:
        supervisor.stop()


class StallingCapture(SyntheticCapture):
    """A synthetic capture whose blocks stop after a few, like a stream that hangs without an error."""

    def fill(self, block: np.ndarray) -> None:
        if self.generator.frame > 10 * len(block):
            self._stop.wait()
        super().fill(block)


def test_a_stream_that_stops_delivering_is_reopened() -> None:
    conditions = Conditions()
    source = parse_audio_source("synthetic:sine?channels=2")
    ring = RingBuffer(2, 48_000, seconds=2)
    opened: list[Capture] = []

    def opener(source: AudioSource, ring: RingBuffer, stats: CaptureStats) -> Capture:
        capture = (StallingCapture if not opened else SyntheticCapture)(source, ring, stats)
        capture.start()
        opened.append(capture)
        return capture

    supervisor = CaptureSupervisor(source, ring, conditions, stall_s=0.3, backoff_base_s=0.05, opener=opener)
    supervisor.start()
    try:
        wait_for(lambda: (DEVICE_LOST, "resolved") in conditions.states(), 5, "the stall to be reported and recovered")
        assert conditions.states() == [(DEVICE_LOST, "open"), (DEVICE_LOST, "resolved")]
        assert "no audio for" in conditions.seen[0].message
        assert [type(c) for c in opened] == [StallingCapture, SyntheticCapture]
        assert not opened[0].alive()  # the stalled one was closed
    finally:
        supervisor.stop()


def test_a_failing_condition_handler_and_a_failing_backend_do_not_stop_the_supervisor() -> None:
    calls: list[str] = []

    def handler(condition: CaptureCondition) -> None:
        calls.append(condition.state)
        raise RuntimeError("handler bug")

    def opener(source: AudioSource, ring: RingBuffer, stats: CaptureStats) -> Capture:
        if len(calls) < 1 or "open" not in calls:
            raise ZeroDivisionError("library bug")
        capture = SyntheticCapture(source, ring, stats)
        capture.start()
        return capture

    ring = RingBuffer(2, 48_000, seconds=1)
    supervisor = CaptureSupervisor(parse_audio_source("synthetic:"), ring, handler, backoff_base_s=0.05, opener=opener)
    supervisor.start()
    try:
        wait_for(lambda: calls == ["open", "resolved"] and ring.frames_written > 0, 5, "capture despite the bugs")
        assert "ZeroDivisionError: library bug" in supervisor.last_error
    finally:
        supervisor.stop()


def test_stop_returns_promptly_while_waiting_to_retry() -> None:
    conditions = Conditions()
    source = parse_audio_source("sounddevice:no-such-interface")
    supervisor = CaptureSupervisor(source, RingBuffer(2, 48_000), conditions, backoff_base_s=30, backoff_cap_s=30)
    supervisor.start()
    wait_for(lambda: conditions.states() == [(NO_DEVICE, "open")], 10, "no device to be reported")
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 1.0


def test_portaudio_missing_is_reported_with_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text('raise OSError("PortAudio library not found")\n')
    script = (
        "from audio.capture import CaptureSupervisor, RingBuffer\n"
        "from audio.source import parse_audio_source\n"
        "import time\n"
        "seen = []\n"
        "s = CaptureSupervisor(parse_audio_source('sounddevice:default'), RingBuffer(2, 48000), seen.append)\n"
        "s.start()\n"
        "while not seen: time.sleep(0.01)\n"
        "s.stop()\n"
        "print(seen[0].kind, '|', seen[0].message)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "audio.no_device | sounddevice cannot load PortAudio (PortAudio library not found): apt-get install libportaudio2"
    )
