"""Real capture through PortAudio, with sounddevice and pyaudio: bit-exact from the ALSA file PCM, levels through PulseAudio."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hark_fleet.audio.capture import NoInputDevice, RingBuffer, list_input_devices, open_capture
from hark_fleet.audio.capture.devices import PROBE_RATES
from hark_fleet.audio.source import parse_audio_source
from hark_fleet.protocol.messages import AudioInterface

from tests.audio.conftest import ALSA_PCM, PulseServer
from tests.harness import terminate, wait_for

pytestmark = pytest.mark.usefixtures("capture_threads_stopped")
BACKENDS = ("sounddevice", "pyaudio")


class FirstFrames(RingBuffer):
    """A ring that also keeps its first `wanted` frames: the ALSA file PCM is not paced and would lap any reader."""

    def __init__(self, channels: int, rate: int, wanted: int) -> None:
        super().__init__(channels, rate, seconds=1.0)
        self.kept = np.zeros((wanted, channels), dtype=np.float32)
        self.count = 0

    def write(self, block: np.ndarray, scale: float | None = None, at: float | None = None) -> None:
        super().write(block, scale, at)
        take = min(len(block), len(self.kept) - self.count)
        if take > 0:
            self.kept[self.count : self.count + take] = block[:take] * (1.0 if scale is None else scale)
            self.count += take


def dbfs(value: float) -> float:
    return float(20 * np.log10(max(value, 1e-12)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_samples_from_the_alsa_file_pcm_arrive_bit_exact(backend: str, alsa_infile: np.ndarray) -> None:
    source = parse_audio_source(f"{backend}:{ALSA_PCM}?channels=2&rate=48000&format=int16")
    ring = FirstFrames(2, 48_000, wanted=len(alsa_infile))
    with open_capture(source, ring) as capture:
        wait_for(lambda: ring.count == len(alsa_infile), 10, "the file PCM's frames")
        assert capture.alive()
    assert np.array_equal(ring.kept * 32768, alsa_infile.astype(np.float32))
    assert capture.stats.frames >= len(alsa_infile) and capture.stats.opened == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tone_played_into_pulseaudio_is_captured_at_its_level(backend: str, pulse: PulseServer, tone_wav: Path) -> None:
    player = pulse.play(tone_wav)
    try:
        source = parse_audio_source(f"{backend}:pulse?channels=2&rate=48000")
        ring = RingBuffer(2, 48_000, seconds=5)
        with open_capture(source, ring) as capture:
            wait_for(lambda: ring.frames_written > 48_000, 10, "a second of audio from PulseAudio")
            reader = ring.reader(preroll_s=0.5)
            frames = reader.read()
            assert capture.alive()
            anchor = ring.anchor  # stamped from PortAudio's stream clock (or the arrival): never in the future
            assert anchor is not None and time.time() - 2.0 < anchor[1] <= time.time()
    finally:
        terminate(player)
    assert len(frames) == 24_000
    for channel in frames.T:
        assert abs(dbfs(np.abs(channel).max()) - (-20)) < 0.2
        assert abs(dbfs(np.sqrt(np.mean(channel**2))) - (-23.01)) < 0.2
        assert np.argmax(np.abs(np.fft.rfft(channel))) == 500  # 2 Hz bins over half a second: 1 kHz


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_devices_are_listed_with_channels_and_rates(backend: str, pulse: PulseServer) -> None:
    devices = list_input_devices(backend)
    by_name = {d["name"]: d for d in devices}
    assert {ALSA_PCM, "pulse"} <= set(by_name)
    for device in devices:
        assert set(device) == {"id", "name", "channels", "rates", "default"}
        msgspec.convert(device, AudioInterface)  # the shape the node reports
    assert by_name[ALSA_PCM]["id"] == f"{backend}:{ALSA_PCM}"
    assert by_name[ALSA_PCM]["rates"] == list(PROBE_RATES)  # the null PCM under it takes any rate
    assert by_name["pulse"]["channels"] >= 2 and 48_000 in by_name["pulse"]["rates"]  # type: ignore[operator]
    assert sum(bool(d["default"]) for d in devices) <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_that_is_not_there_is_named_in_the_error(backend: str) -> None:
    source = parse_audio_source(f"{backend}:no-such-interface")
    with pytest.raises(NoInputDevice, match=r"no input device named 'no-such-interface' \(inputs: .*harkfile"):
        open_capture(source, RingBuffer(2, 48_000))


def test_a_device_with_fewer_channels_than_asked_is_refused(pulse: PulseServer) -> None:
    source = parse_audio_source("sounddevice:pulse?channels=64")
    with pytest.raises(NoInputDevice, match="has 32 channels, the source asks for 64"):
        open_capture(source, RingBuffer(64, 48_000))


def test_frames_keep_flowing_from_pulseaudio_in_real_time(pulse: PulseServer) -> None:
    ring = RingBuffer(2, 48_000, seconds=5)
    with open_capture(parse_audio_source("sounddevice:pulse"), ring):
        wait_for(lambda: ring.frames_written > 0, 10, "the first block")
        start, started = ring.frames_written, time.monotonic()
        time.sleep(1.0)
        rate = (ring.frames_written - start) / (time.monotonic() - started)
    assert 40_000 < rate < 56_000


def test_portaudio_sources_take_a_sample_format_option() -> None:
    assert parse_audio_source("pyaudio:0?format=int16").sample_format == "int16"
    assert parse_audio_source("sounddevice:default").sample_format == "float32"
    with pytest.raises(ValueError, match="option 'format' must be one of float32, int32, int16, not 'int24'"):
        parse_audio_source("sounddevice:0?format=int24")
    with pytest.raises(ValueError, match="unknown option 'format'"):
        parse_audio_source("file:/tmp/a.wav?format=int16")
