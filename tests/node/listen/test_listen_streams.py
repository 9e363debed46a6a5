"""Live-listen streams on a real AudioPath (synthetic capture, the ring, the channel map), frames caught as sent."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import opuslib_next
import pytest
from hark_fleet.node.audio_path import AudioPath
from hark_fleet.node.audio_source import parse_audio_source
from hark_fleet.node.listen import encoder as encoder_module
from hark_fleet.node.listen.encoder import EncoderUnavailable
from hark_fleet.node.listen.streams import Frame, ListenStreams
from hark_fleet.protocol.listen import FLAG_DISCONTINUITY, ListenCommand, ListenError, ListenStream

from tests.harness import wait_for

SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"


class Caught:
    """The send and error callables of a ListenStreams: what it sent, from the streams' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[ListenStream, Frame, str]] = []
        self.errors: list[ListenError] = []
        self.stall_at: int | None = None  # the send of this seq blocks for a second (a stalled stream thread)

    def send(self, stream: ListenStream, frame: Frame, transport: str) -> None:
        if frame.seq == self.stall_at:
            self.stall_at = None
            threading.Event().wait(1.0)
        with self.lock:
            self.sent.append((stream, frame, transport))

    def error(self, error: ListenError) -> None:
        with self.lock:
            self.errors.append(error)

    def frames(self, stream_id: str) -> list[Frame]:
        with self.lock:
            return [f for s, f, _ in self.sent if s.stream_id == stream_id]

    def wait(self, stream_id: str, count: int) -> list[Frame]:
        wait_for(lambda: len(self.frames(stream_id)) >= count, 20, f"{count} frames of {stream_id}")
        return self.frames(stream_id)


def _consecutive_run(frames: list[Frame], count: int) -> list[Frame] | None:
    """The first `count` frames in a row with consecutive seq numbers, or None."""
    start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i].seq != frames[i - 1].seq + 1:
            if i - start >= count:
                return frames[start : start + count]
            start = i
    return None


@contextmanager
def listening(source: str = SINE, channel_map: dict[str, Any] | None = None) -> Iterator[tuple[AudioPath, ListenStreams, Caught]]:
    loop = asyncio.new_event_loop()  # the path hands meter frames to it; nothing here needs them run
    path = AudioPath(parse_audio_source(source), lambda frame: None, lambda *report: None, 100)
    if channel_map is not None:
        path.set_channel_map(channel_map)
    path.start(loop)
    caught = Caught()
    streams = ListenStreams(path, caught.send, caught.error)
    try:
        wait_for(lambda: path.ring.frames_written > 0, 10, "capture to start")
        yield path, streams, caught
    finally:
        streams.close()
        path.stop()
        loop.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hark-listen-")]


def command(version: int, *streams: ListenStream, lease_s: float = 30.0, transport: str = "mqtt") -> ListenCommand:
    return ListenCommand(version, list(streams), lease_s, transport)


def opus(stream_id: str = "lst_a", channels: list[int] | None = None, rate: int = 48000) -> ListenStream:
    return ListenStream(stream_id, channels or [0], "opus", rate, 64000)


def pcm(stream_id: str = "lst_p", channels: list[int] | None = None, rate: int = 48000) -> ListenStream:
    return ListenStream(stream_id, channels or [0], "pcm16", rate)


def pcm_samples(frame: Frame, channels: int) -> np.ndarray:
    return np.frombuffer(frame.payload, dtype="<i2").reshape(-1, channels).astype(np.float64) / 32768.0


def dbfs_rms(samples: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(samples**2))))


def test_an_opus_stream_sends_consecutive_20_ms_frames_that_decode_to_the_sines_level() -> None:
    with listening() as (path, streams, caught):
        assert streams.apply(command(1, opus(channels=[0, 1])))
        # 50 consecutive frames: from the start, or after the jump to live audio a stream makes (seq skipping, flagged
        # a discontinuity) when a stall of the whole process leaves it more than MAX_BEHIND_S behind (streams.py)
        wait_for(lambda: _consecutive_run(caught.frames("lst_a"), 50) is not None, 30, "50 consecutive frames of lst_a")
        frames = _consecutive_run(caught.frames("lst_a"), 50)
        assert frames is not None
        seqs = [f.seq for f in caught.frames("lst_a")]
        assert seqs[0] == 0 and all(b > a for a, b in zip(seqs, seqs[1:], strict=False))  # never restarted
        sent = caught.frames("lst_a")
        assert all(b.flags & FLAG_DISCONTINUITY for a, b in zip(sent, sent[1:], strict=False) if b.seq != a.seq + 1)
        assert all(f.flags == 0 for f in frames[1:])
        # about 20 ms apart: the sine's ring anchor is the wall time of each write, as late as the capture thread ran
        # (the click source's exact timeline shows exactly 20 ms in the test below)
        assert abs((frames[-1].capture_us - frames[0].capture_us) - 49 * 20_000) < 50_000
        assert "listen-lst_a" in [r.name for r in path.ring.reader_stats()]
        stats = streams.stats()
    decoder = opuslib_next.Decoder(48000, 2)
    decoded = [np.frombuffer(decoder.decode(f.payload, 960), dtype="<i2").reshape(-1, 2) for f in frames]
    assert {d.shape for d in decoded} == {(960, 2)}
    audio = np.concatenate(decoded[5:]).astype(np.float64) / 32768.0
    assert dbfs_rms(audio[:, 0]) == pytest.approx(-23.01, abs=1.0)  # a -20 dBFS peak sine
    assert dbfs_rms(audio[:, 1]) == pytest.approx(-23.01, abs=1.0)
    assert stats["running"] == 1 and stats["frames_sent"] >= 50 and stats["encode_cpu_s"] > 0
    assert stats["bytes_sent"] == sum(len(f.payload) for f in caught.frames("lst_a")[: stats["frames_sent"]])
    assert {t for _, _, t in caught.sent} == {"mqtt"}


def test_pcm16_frames_are_the_rings_samples_of_the_chosen_channels_in_their_order() -> None:
    # independent noise per input: a frame matches exactly one place in the ring, and only in the right column order
    with listening("synthetic:noise?dbfs=-20&channels=2") as (path, streams, caught):
        streams.apply(command(1, pcm(channels=[1, 0])))
        frames = caught.wait("lst_p", 10)[5:10]
        ring = path.ring
        for frame in frames:
            samples = np.frombuffer(frame.payload, dtype="<i2").reshape(-1, 2)
            assert samples.shape == (960, 2)
            near = ring.position_at(frame.capture_us / 1e6)
            assert near is not None
            reader = ring.reader_at(near - 4800)
            window = reader.read(9600 + 960)
            reader.close()
            expected = np.clip(np.rint(window[:, [1, 0]] * 32768.0), -32768, 32767).astype(np.int16)
            matches = [d for d in range(len(expected) - 959) if np.array_equal(expected[d : d + 960], samples)]
            assert len(matches) == 1, "the frame's samples are not the ring's"
            # the capture time points at them, within the sine's ring anchor's jitter (the window: 100 ms)


def test_capture_time_and_seq_place_each_click_on_its_whole_period() -> None:
    """With the click source, capture_us + the click's offset in the frame is the click's instant (what the player uses)."""
    with listening("synthetic:click?period=0.1&channels=1") as (_, streams, caught):
        streams.apply(command(1, pcm(channels=[0]), pcm("lst_16k", [0], rate=16000)))
        for stream_id, rate, tolerance in (("lst_p", 48000, 0.0005), ("lst_16k", 16000, 0.002)):
            frames = caught.wait(stream_id, 40)[:40]
            assert {len(f.payload) for f in frames} == {rate // 50 * 2}
            steps = np.diff([f.capture_us for f in frames])
            assert np.all(np.abs(steps - 20_000) <= 1)  # the click source's ring anchor is exact
            assert [f.seq for f in frames] == list(range(40))
            clicks = 0
            for frame in frames:
                samples = pcm_samples(frame, 1)[:, 0]
                for onset in np.flatnonzero((samples[1:] > 0.1) & (samples[:-1] <= 0.1)) + 1:
                    at = frame.capture_us / 1e6 + onset / rate
                    assert abs(at - round(at / 0.1) * 0.1) <= tolerance, f"{stream_id}: click at {at:.6f}"
                    clicks += 1
            assert clicks >= 6


def test_a_stream_at_16_khz_is_resampled_into_320_sample_frames() -> None:
    with listening() as (_, streams, caught):
        streams.apply(command(1, opus("lst_o16", [1], rate=16000), pcm("lst_p16", [0], rate=16000)))
        opus_frames = caught.wait("lst_o16", 30)[:30]
        pcm_frames = caught.wait("lst_p16", 30)[:30]
    decoder = opuslib_next.Decoder(16000, 1)
    decoded = [np.frombuffer(decoder.decode(f.payload, 320), dtype="<i2") for f in opus_frames]
    assert {len(d) for d in decoded} == {320}
    assert dbfs_rms(np.concatenate(decoded[5:]).astype(np.float64) / 32768.0) == pytest.approx(-23.01, abs=1.0)
    assert {len(f.payload) for f in pcm_frames} == {640}
    assert dbfs_rms(np.concatenate([pcm_samples(f, 1) for f in pcm_frames[5:]])) == pytest.approx(-23.01, abs=0.2)


def test_the_lease_ends_every_stream_when_no_command_renews_it() -> None:
    with listening() as (_, streams, caught):
        streams.apply(command(1, opus(), pcm(), lease_s=0.5))
        caught.wait("lst_a", 5)
        wait_for(lambda: streams.running == [], 10, "the lease to end the streams")
        wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("hark-listen-")], 10, "threads to end")
        assert streams.stats()["running"] == 0 and caught.errors == []
        # the hub comes back with a newer command: the streams run again
        streams.apply(command(2, opus()))
        before = len(caught.frames("lst_a"))
        caught.wait("lst_a", before + 5)
        assert streams.running == ["lst_a"]


def test_a_stale_version_is_ignored_and_the_empty_set_stops_everything() -> None:
    with listening() as (_, streams, caught):
        assert streams.apply(command(5, opus(), pcm()))
        caught.wait("lst_a", 3)
        caught.wait("lst_p", 3)
        assert not streams.apply(command(4, opus()))  # late: the pcm stream keeps running
        assert sorted(streams.running) == ["lst_a", "lst_p"] and streams.stats()["stale_commands"] == 1
        assert streams.apply(command(5, opus()))  # the same version again (a renewal) is applied
        assert streams.running == ["lst_a"]
        assert streams.apply(command(6))
        assert streams.running == []
        wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("hark-listen-")], 10, "threads to end")
        stats = streams.stats()
        assert stats["running"] == 0 and stats["frames_sent"] >= 6 and stats["version"] == 6


def test_a_channel_the_map_lacks_is_reported_and_the_other_streams_run() -> None:
    with listening() as (_, streams, caught):
        streams.apply(command(1, opus("lst_bad", [0, 3]), opus("lst_ok", [1])))
        caught.wait("lst_ok", 3)
        assert caught.errors == [ListenError("lst_bad", "channel 3 is not in the channel map 'default' (2 channels)")]
        assert streams.running == ["lst_ok"] and streams.stats()["failed"] == 1


def test_missing_libopus_is_reported_as_the_streams_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_opus() -> Any:
        raise EncoderUnavailable("libopus cannot be loaded (test): install libopus0")

    monkeypatch.setattr(encoder_module, "load_opus", no_opus)
    with listening() as (_, streams, caught):
        streams.apply(command(1, opus(), pcm()))
        caught.wait("lst_p", 3)  # pcm16 needs no libopus
        assert caught.errors == [ListenError("lst_a", "libopus cannot be loaded (test): install libopus0")]
        assert streams.running == ["lst_p"]


def test_a_stalled_stream_jumps_to_the_live_audio_with_a_discontinuity_and_a_seq_skip() -> None:
    with listening() as (_, streams, caught):
        caught.stall_at = 5
        streams.apply(command(1, pcm()))
        frames = caught.wait("lst_p", 15)
        flagged = [i for i, f in enumerate(frames) if f.flags & FLAG_DISCONTINUITY]
        assert len(flagged) == 1
        before, after = frames[flagged[0] - 1], frames[flagged[0]]
        skipped = after.seq - before.seq
        assert skipped > 10  # about a second of frames lost
        assert abs((after.capture_us - before.capture_us) - skipped * 20_000) <= 20_000
        assert [f.seq for f in frames[flagged[0] :]] == list(range(after.seq, after.seq + len(frames) - flagged[0]))
        stats = streams.stats()
        assert stats["discontinuities"] == 1 and stats["lost_frames"] > 24_000
