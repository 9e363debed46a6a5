"""Fixtures of the audio tests: a private PulseAudio with a null sink, the ALSA file PCM, and capture thread checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.harness import spawn, terminate, wait_for

ALSA_PCM = "harkfile"
ALSA_INFILE_ENV = "HARK_ALSA_INFILE"
NULL_SINK_ARGS = ["module-null-sink", "sink_name=hark_null", "rate=48000", "channels=2"]


def need(command: str, package: str) -> str:
    """The path of `command`, or a failure naming the Debian package to install."""
    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} is missing: apt-get install {package} (tests/services.sh installs it)")
    return path


@dataclass
class PulseServer:
    """A PulseAudio daemon of the tests' own, with one null sink whose monitor is the default source."""

    root: Path
    socket: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PULSE_SERVER": self.server, "HOME": str(self.root), "PULSE_RUNTIME_PATH": str(self.root / "run")}

    def pactl(self, *args: str) -> str:
        done = subprocess.run(["pactl", *args], env=self.env(), capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise AssertionError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def unload_null_sink(self) -> None:
        self.pactl("unload-module", "module-null-sink")

    def load_null_sink(self) -> None:
        self.pactl("load-module", *NULL_SINK_ARGS)

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start `paplay` on the null sink; stop it with `tests.harness.terminate`."""
        return spawn(["paplay", "--device=hark_null", str(wav)], env=self.env(), log_path=self.root / "paplay.log")

    def log(self) -> str:
        path = self.root / "pulseaudio.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """PulseAudio for the session (as root without --system: a private HOME and runtime dir), PULSE_SERVER pointing at it."""
    binary = need("pulseaudio", "pulseaudio")
    need("pactl", "pulseaudio-utils")
    need("paplay", "pulseaudio-utils")
    root = tmp_path_factory.mktemp("pulse")
    server = PulseServer(root, root / "native")
    args = [
        binary,
        "-n",  # no default.pa: only the modules below
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--use-pid-file=no",
        "--disable-shm=yes",
        "--log-target=stderr",
        "--log-level=warning",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={server.socket}",
        f"--load={' '.join(NULL_SINK_ARGS)}",
    ]
    env = {**server.env(), "XDG_RUNTIME_DIR": str(root), "PULSE_STATE_PATH": str(root / "state")}
    server.process = spawn(args, env=env, log_path=root / "pulseaudio.log")

    def answers() -> bool:
        assert server.process is not None and server.process.poll() is None, f"pulseaudio exited:\n{server.log()}"
        return subprocess.run(["pactl", "info"], env=server.env(), capture_output=True, timeout=5).returncode == 0

    previous = os.environ.get("PULSE_SERVER")
    try:
        wait_for(answers, 15, "PulseAudio to answer")
        os.environ["PULSE_SERVER"] = server.server  # the ALSA `pulse` PCM that PortAudio opens reads it
        rescan_portaudio()
        yield server
    finally:
        if previous is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = previous
        terminate(server.process)


def rescan_portaudio() -> None:
    """Make PortAudio list the devices that exist now (it lists them once, at sounddevice's import)."""
    from hark_fleet.audio.capture import BackendUnavailable, rescan_devices

    try:
        rescan_devices()
    except BackendUnavailable as err:
        pytest.fail(str(err))


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """60 s of a 1 kHz sine at -20 dBFS peak, 48 kHz stereo 16-bit."""
    import soundfile

    rate = 48_000
    t = np.arange(rate * 60) / rate
    tone = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.column_stack([tone, tone]), rate, subtype="PCM_16")
    return path


@pytest.fixture
def alsa_infile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """Known S16_LE stereo samples behind the ALSA PCM `harkfile` (HARK_ALSA_INFILE); returns them (frames x 2)."""
    conf = Path("/etc/asound.conf")
    if not conf.exists() or f"pcm.{ALSA_PCM} " not in conf.read_text():
        pytest.fail(f"/etc/asound.conf has no pcm.{ALSA_PCM}: run tests/services.sh as root (it writes it)")
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32767, size=(48_000, 2), dtype=np.int16, endpoint=True)
    samples[:8] = [[0, 1], [-1, 32767], [-32768, 2], [3, -3], [100, -100], [4, 5], [6, 7], [8, 9]]
    path = tmp_path / "infile.raw"
    samples.astype("<i2").tofile(path)
    monkeypatch.setenv(ALSA_INFILE_ENV, str(path))
    return samples


@pytest.fixture
def capture_threads_stopped() -> Iterator[None]:
    """Fail when a test leaves a capture thread running (PortAudio's own callback threads are not Python's to join)."""
    yield
    left = [t for t in threading.enumerate() if t.name.startswith("hark-capture") and t.is_alive()]
    for thread in left:
        thread.join(timeout=5)
    assert not [t.name for t in left if t.is_alive()], f"capture threads left running: {[t.name for t in left]}"
