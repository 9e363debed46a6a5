"""The live-listen streams a node runs: what the hub's `cmd/listen` asks for, each on a thread of its own.

`ListenStreams.apply(command)` (on the loop) replaces its sender's set (`command.hub`: each hub
instance of a deployment sends its own, issue 24) and makes the running set the union of every
sender's set by stream id: it starts the streams not running, stops those no sender lists, ignores
a command older than its sender's last one (`version`) and renews that sender's lease; a stream
stops by itself when no sender that wants it renewed its lease in time (a hub that went away
leaves no encoder running for it, while another instance's streams go on). A stream that cannot run (libopus missing,
a channel the channel map lacks) is reported as a `ListenError` and not started.

Each stream is a thread with its own RingReader (`listen-{stream_id}`) starting at the ring's end
(no backlog): it maps the logical channels through the channel map, resamples when the stream's
rate is not the capture rate (python-soxr, LQ: about 20 ms of filter latency at most instead of
HQ's 40), cuts 20 ms frames, encodes each once and hands it to `send` at once, which must not
block. A frame's capture time is the ring's time of its first sample (`ring.time_at`). A reader
that lost audio (overrun) or fell more than MAX_BEHIND_S behind starts a new segment: the next
frame carries FLAG_DISCONTINUITY and its seq skips the frames lost. Nothing here touches the
capture: the ring's writer never waits for a reader, and no lock is shared with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from hark_fleet.audio.capture import RingBuffer
from hark_fleet.node.channel_map import ChannelMap
from hark_fleet.node.listen.encoder import EncoderUnavailable, FrameEncoder, make_encoder
from hark_fleet.protocol.listen import FLAG_DISCONTINUITY, FRAME_MS, MAX_CHANNELS, ListenCommand, ListenError, ListenStream

log = logging.getLogger(__name__)

POLL_S = 0.005  # a stream looks for new audio this often (the ring has no wake-up: its writer never signals)
MAX_READ_S = 0.5  # at most this much audio per read
MAX_BEHIND_S = 0.5  # further behind than this (a stalled thread): jump to the live end, a discontinuity
RESAMPLE_QUALITY = "LQ"
JOIN_S = 2.0
MAX_SENDERS = 32  # hub instances remembered at once; the one whose lease ends first is forgotten beyond


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded 20 ms frame of a stream: its number, the capture time of its first sample, its bytes."""

    seq: int
    capture_us: int
    payload: bytes
    flags: int = 0


class AudioSource(Protocol):
    """What a stream reads: the node's AudioPath (its ring and its current channel map)."""

    ring: RingBuffer
    channel_map: ChannelMap


Send = Callable[[ListenStream, Frame, str], None]  # stream, frame, transport (mqtt | http); from the stream's thread
ReportError = Callable[[ListenError], None]  # from the loop or a stream's thread


class StreamFailure(Exception):
    """Why a stream cannot run (becomes its ListenError)."""


@dataclass(slots=True)
class SenderSet:
    """One hub instance's latest `cmd/listen`: its version, the end of its lease (on the clock) and its streams."""

    version: int
    lease_until: float
    streams: dict[str, ListenStream]


class ListenStreams:
    """The node's running listen streams, reconciled with each `cmd/listen`."""

    def __init__(
        self, audio: AudioSource, send: Send, report_error: ReportError, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.audio = audio
        self.send = send
        self.report_error = report_error
        self.clock = clock
        self.version: int | None = None  # of the last command applied, whichever its sender
        self.transport = "mqtt"  # the last command's: every instance of a deployment says the same
        self.senders: dict[str, SenderSet] = {}  # hub instance -> its set; the last applied last
        self.stale_commands = 0
        self.failed = 0
        self._runners: dict[str, StreamRunner] = {}
        self._stopping: list[StreamRunner] = []  # stopped, their threads perhaps still ending: `close` waits for them too
        self._ended = {"frames_sent": 0, "bytes_sent": 0, "encode_cpu_s": 0.0, "lost_frames": 0, "discontinuities": 0}
        self._closed = False

    def apply(self, command: ListenCommand) -> bool:
        """Make the command its sender's set and run the union of every sender's (on the loop).

        False when the command is older than its sender's last one.
        """
        if self._closed:
            return False
        previous = self.senders.get(command.hub)
        if previous is not None and command.version < previous.version:
            self.stale_commands += 1
            log.info("cmd/listen version %d from %r ignored: version %d is newer", command.version, command.hub, previous.version)
            return False
        self.version = command.version
        self.transport = command.transport
        self.senders.pop(command.hub, None)  # re-inserted last: on a stream id listed twice, the latest set's definition wins
        self.senders[command.hub] = SenderSet(
            command.version, self.clock() + command.lease_s, {stream.stream_id: stream for stream in command.streams}
        )
        self.reconcile()
        return True

    def reconcile(self) -> None:
        """Run exactly the union of the senders' sets whose lease has not ended; each stream's lease is its senders' latest."""
        now = self.clock()
        for hub, sender in list(self.senders.items()):
            if sender.lease_until < now:
                del self.senders[hub]  # its lease is over: its streams stopped by themselves, or stop now
        while len(self.senders) > MAX_SENDERS:
            del self.senders[min(self.senders, key=lambda h: self.senders[h].lease_until)]
        wanted: dict[str, ListenStream] = {}
        lease: dict[str, float] = {}
        for sender in self.senders.values():
            for stream_id, stream in sender.streams.items():
                wanted[stream_id] = stream
                lease[stream_id] = max(lease.get(stream_id, 0.0), sender.lease_until)
        for stream_id, runner in list(self._runners.items()):
            if wanted.get(stream_id) != runner.stream or not runner.alive:
                self._stop(stream_id, "no longer wanted" if stream_id not in wanted else "restarted")
        for stream_id, stream in wanted.items():
            running = self._runners.get(stream_id) or self._start(stream, lease[stream_id])
            if running is not None:
                running.lease_until = lease[stream_id]

    @property
    def lease_until(self) -> float:
        """When the last lease of any sender ends (on `clock`)."""
        return max((sender.lease_until for sender in self.senders.values()), default=0.0)

    def stop_all(self, why: str = "stopped") -> None:
        """Stop every stream (they end within a poll; `close` also waits for them)."""
        for stream_id in list(self._runners):
            self._stop(stream_id, why)

    def close(self) -> None:
        """Stop every stream and wait for the threads, those stopped earlier too (blocking: call it from an executor)."""
        self._closed = True
        self.stop_all("the agent stops")
        runners = self._stopping
        self._stopping = []
        for runner in runners:
            runner.join(JOIN_S)

    @property
    def running(self) -> list[str]:
        return [stream_id for stream_id, runner in self._runners.items() if runner.alive]

    def stats(self) -> dict[str, Any]:
        """Counters of every stream since the agent started, and each running stream's own."""
        runners = list(self._runners.values())
        totals: dict[str, Any] = dict(self._ended)
        for runner in runners:
            for key, value in runner.counters().items():
                totals[key] += value
        totals["encode_cpu_s"] = round(totals["encode_cpu_s"], 3)
        lease_left = max(0.0, self.lease_until - self.clock()) if runners else 0.0
        return {
            "running": sum(1 for r in runners if r.alive),
            "version": self.version,
            "transport": self.transport,
            "lease_left_s": round(lease_left, 1),
            "senders": [
                {
                    "hub": hub,
                    "version": sender.version,
                    "streams": sorted(sender.streams),
                    "lease_left_s": round(max(0.0, sender.lease_until - self.clock()), 1),
                }
                for hub, sender in self.senders.items()
            ],
            "failed": self.failed,
            "stale_commands": self.stale_commands,
            **totals,
            "streams": [
                {
                    "stream_id": r.stream.stream_id,
                    "codec": r.stream.codec,
                    "sample_rate": r.stream.sample_rate,
                    "channels": list(r.stream.channels),
                    "alive": r.alive,
                    **r.counters(),
                }
                for r in runners
            ],
        }

    # -- inside ------------------------------------------------------------------------

    def _start(self, stream: ListenStream, lease_until: float) -> StreamRunner | None:
        try:
            runner = StreamRunner(self, stream, lease_until)
        except (StreamFailure, EncoderUnavailable) as err:
            self.failed += 1
            log.warning("listen stream %s cannot run: %s", stream.stream_id, err)
            self.report_error(ListenError(stream.stream_id, str(err)))
            return None
        self._runners[stream.stream_id] = runner
        runner.start()
        log.info(
            "listen stream %s: channels %s, %s %d Hz, via %s",
            stream.stream_id,
            stream.channels,
            stream.codec,
            stream.sample_rate,
            self.transport,
        )
        return runner

    def _stop(self, stream_id: str, why: str) -> None:
        runner = self._runners.pop(stream_id)
        runner.stop()
        self._stopping = [r for r in self._stopping if r.thread_alive] + [runner]
        for key, value in runner.counters().items():
            self._ended[key] += value
        log.info("listen stream %s stopped: %s", stream_id, why)

    def physical_inputs(self, channels: list[int]) -> list[int]:
        """The ring's columns of these logical channels under the current channel map; StreamFailure if one is missing."""
        mapped = self.audio.channel_map
        inputs = mapped.inputs
        missing = [c for c in channels if not 0 <= c < len(inputs)]
        if missing:
            raise StreamFailure(f"channel {missing[0]} is not in the channel map {mapped.name!r} ({len(inputs)} channels)")
        columns = [inputs[c] for c in channels]
        if any(not 0 <= column < self.audio.ring.channels for column in columns):
            raise StreamFailure(f"the channel map {mapped.name!r} names an input the source does not have")
        return columns


class StreamRunner:
    """One stream's thread: ring -> channels -> resampler -> 20 ms frames -> encoder -> send."""

    def __init__(self, owner: ListenStreams, stream: ListenStream, lease_until: float = math.inf) -> None:
        if not 1 <= len(stream.channels) <= MAX_CHANNELS:
            raise StreamFailure(f"a stream has 1 to {MAX_CHANNELS} channels, not {len(stream.channels)}")
        self.owner = owner
        self.stream = stream
        self.lease_until = lease_until  # on the owner's clock: the latest lease of the senders that want it
        self.ring = owner.audio.ring
        owner.physical_inputs(stream.channels)  # refused now rather than on the thread
        self.encoder: FrameEncoder = make_encoder(stream.codec, stream.sample_rate, len(stream.channels), stream.bitrate)
        self.in_rate = self.ring.rate
        self.out_rate = stream.sample_rate
        self.frame_samples = self.out_rate * FRAME_MS // 1000
        self.frames_sent = 0
        self.bytes_sent = 0
        self.encode_cpu_s = 0.0
        self.lost_frames = 0  # capture frames this stream missed (overruns, stalls)
        self.discontinuities = 0
        self.send_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hark-listen-{stream.stream_id}", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def counters(self) -> dict[str, Any]:
        return {
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "encode_cpu_s": self.encode_cpu_s,
            "lost_frames": self.lost_frames,
            "discontinuities": self.discontinuities,
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        reader = self.ring.reader(name=f"listen-{self.stream.stream_id}")
        try:
            self._stream(reader)
        except StreamFailure as err:
            log.warning("listen stream %s stopped: %s", self.stream.stream_id, err)
            self.owner.report_error(ListenError(self.stream.stream_id, str(err)))
        except Exception as err:  # an encoder's or resampler's failure ends this stream, never the node
            log.exception("listen stream %s failed", self.stream.stream_id)
            self.owner.report_error(ListenError(self.stream.stream_id, f"the stream failed: {err}"))
        finally:
            reader.close()
            self._stop.set()

    def _stream(self, reader: Any) -> None:
        owner = self.owner
        channels = len(self.stream.channels)
        max_read = max(1, int(MAX_READ_S * self.in_rate))
        max_behind = int(MAX_BEHIND_S * self.in_rate)
        in_frame = self.in_rate * FRAME_MS / 1000.0  # capture frames per listen frame
        resampler = self._resampler()
        pending = np.zeros((0, channels), dtype=np.float32)  # output-rate samples not yet a whole frame
        segment_start = reader.position  # ring frame of the segment's first output sample
        emitted = 0  # output samples sent as frames in this segment
        seq = 0
        flags = 0
        while not self._stop.wait(POLL_S):
            if owner.clock() > self.lease_until:
                log.info("listen stream %s: no cmd/listen renewed its lease, stopping", self.stream.stream_id)
                return
            columns = owner.physical_inputs(self.stream.channels)  # the channel map may change while we listen
            lost_before = reader.lost_frames
            skipped = reader.skip_to_end() if reader.available > max_behind else 0
            data = reader.read(max_read)
            lost = reader.lost_frames - lost_before + skipped
            if lost:
                data_start = reader.position - len(data)
                gap = data_start - (segment_start + emitted * self.in_rate / self.out_rate)
                seq += max(1, math.ceil(gap / in_frame))
                flags = FLAG_DISCONTINUITY
                self.lost_frames += lost
                self.discontinuities += 1
                resampler = self._resampler()
                pending = pending[:0]
                segment_start, emitted = data_start, 0
            if not len(data):
                continue
            samples = data[:, columns]
            if resampler is not None:
                samples = resampler.resample_chunk(samples)
            pending = np.concatenate((pending, samples)) if len(pending) else samples
            used = 0
            while len(pending) - used >= self.frame_samples:
                frame = pending[used : used + self.frame_samples]
                used += self.frame_samples
                started = time.thread_time()
                payload = self.encoder.encode(frame)
                self.encode_cpu_s += time.thread_time() - started
                at = self.ring.time_at(segment_start)
                capture_us = round(((at or time.time()) + emitted / self.out_rate) * 1_000_000)
                self._send(Frame(seq, capture_us, payload, flags))
                flags = 0
                seq += 1
                emitted += self.frame_samples
            pending = pending[used:]

    def _send(self, frame: Frame) -> None:
        try:
            self.owner.send(self.stream, frame, self.owner.transport)
        except Exception:
            self.send_errors += 1
            if self.send_errors == 1:
                log.exception("listen stream %s: sending a frame failed", self.stream.stream_id)
            return
        self.frames_sent += 1
        self.bytes_sent += len(frame.payload)

    def _resampler(self) -> Any:
        if self.in_rate == self.out_rate:
            return None
        import soxr

        channels = len(self.stream.channels)
        return soxr.ResampleStream(self.in_rate, self.out_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY)
