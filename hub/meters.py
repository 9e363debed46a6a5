"""Live meters at the hub, in memory only: the latest frame per node, one point per second for the
last hour, each node's minute in progress (its summary is what `hub.history` stores once the minute
ends), and the fan-out to SSE subscribers (bounded outboxes; a client that falls behind is dropped).

Frames arrive at 10 Hz from every node: nothing here touches the database, and each frame is
encoded for the stream once, whatever the number of subscribers. A subscriber may ask for at most
`max_rate` frames per second of each node (an overview of hundreds of nodes needs no more): the
frames in between are not queued for it, except those with clipped samples, which always go out. A frame costs O(channels)
updates of running sums and maxima in place; a second is folded into its minute when it ends,
and a minute becomes a summary when it ends.

A coalesced stream (`subscribe_coalesced`) gets instead one event per tick (a wall-clock multiple of its interval,
50 ms to 5 s) with the latest frame of each node it sees that sent one since the last tick: a frame only marks its
node for the next tick, and at the tick each node's frame is encoded once and each group of clients that see the
same nodes (sites, node filter, interval) gets one event, encoded once, whatever the number of clients or nodes.
Clipped samples of the frames in between are added up into the frame that goes out. The interval's timer runs on
the loop only while it has clients.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.outbox import MAX_UNSENT_BYTES, Outbox
from hark_fleet.hub.services.history import MINUTE_S, MeterSummary
from hark_fleet.protocol.messages import MeterFrame

HISTORY_S = 3600
RANGES_S = {"5m": 300, "15m": 900, "1h": 3600}
SUBSCRIBER_QUEUE = 1024  # frames a client's socket may leave unsent (1 s of 100 nodes) before it is dropped
UNKNOWN_SITE = object()
NEG_INF = float("-inf")  # "none yet" for a maximum: compared without a None check on the hot path

log = logging.getLogger(__name__)


def _db(power: float) -> float | None:
    return None if power <= 0.0 else round(10.0 * math.log10(power), 2)


def _db_unrounded(power: float) -> float | None:
    return None if power <= 0.0 else 10.0 * math.log10(power)


def _level(value: float) -> float | None:
    return None if value == NEG_INF else value


@dataclass(slots=True)
class _Levels:
    """Running per-channel maxima and energy sums (peak and RMS), and loudness maxima, of some frames."""

    peaks: list[float] = field(default_factory=list)  # highest peak dBFS
    peak_energy: list[float] = field(default_factory=list)  # sum over frames of 10^(peak/10)
    rms_highs: list[float] = field(default_factory=list)  # highest RMS dBFS
    powers: list[float] = field(default_factory=list)  # sum over frames of 10^(rms/10)
    frames: int = 0
    momentary_max: float = NEG_INF
    short_term_max: float = NEG_INF
    integrated: float | None = None

    def widen(self, channels: int) -> None:
        missing = channels - len(self.peaks)
        self.peaks += [NEG_INF] * missing
        self.peak_energy += [0.0] * missing
        self.rms_highs += [NEG_INF] * missing
        self.powers += [0.0] * missing

    def copy(self) -> _Levels:
        return _Levels(
            list(self.peaks),
            list(self.peak_energy),
            list(self.rms_highs),
            list(self.powers),
            self.frames,
            self.momentary_max,
            self.short_term_max,
            self.integrated,
        )

    def fold(self, other: _Levels) -> None:
        """Add another's frames (a second into its minute): O(channels), once per second."""
        if len(self.peaks) < len(other.peaks):
            self.widen(len(other.peaks))
        for i in range(len(other.peaks)):
            if other.peaks[i] > self.peaks[i]:
                self.peaks[i] = other.peaks[i]
            if other.rms_highs[i] > self.rms_highs[i]:
                self.rms_highs[i] = other.rms_highs[i]
            self.peak_energy[i] += other.peak_energy[i]
            self.powers[i] += other.powers[i]
        self.frames += other.frames
        if other.momentary_max > self.momentary_max:
            self.momentary_max = other.momentary_max
        if other.short_term_max > self.short_term_max:
            self.short_term_max = other.short_term_max
        if other.integrated is not None:
            self.integrated = other.integrated


@dataclass(slots=True)
class _Second(_Levels):
    """The frames of one wall-clock second, folded into one history point as they arrive."""

    second: int = 0
    momentary: float | None = None
    short_term: float | None = None

    def add(self, frame: MeterFrame) -> None:
        channels = frame.channels
        if len(self.peaks) < len(channels):
            self.widen(len(channels))
        peaks, peak_energy, rms_highs, powers = self.peaks, self.peak_energy, self.rms_highs, self.powers
        for i, channel in enumerate(channels):
            peak = channel.peak_dbfs
            if peak is not None:
                if peak > peaks[i]:
                    peaks[i] = peak
                peak_energy[i] += 10.0 ** (peak / 10.0)
            rms = channel.rms_dbfs
            if rms is not None:
                if rms > rms_highs[i]:
                    rms_highs[i] = rms
                powers[i] += 10.0 ** (rms / 10.0)
        self.frames += 1
        loudness = frame.loudness
        if loudness is not None:
            momentary = self.momentary = loudness.momentary_lufs
            short_term = self.short_term = loudness.short_term_lufs
            if momentary is not None and momentary > self.momentary_max:
                self.momentary_max = momentary
            if short_term is not None and short_term > self.short_term_max:
                self.short_term_max = short_term
            if loudness.integrated_lufs is not None:
                self.integrated = loudness.integrated_lufs

    def point(self) -> dict[str, Any]:
        """Peak: the loudest frame's; RMS: the power mean over the second; loudness: the last reading."""
        return {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.second)),
            "channels": [
                {"index": i, "peak_dbfs": _level(peak), "rms_dbfs": _db(power / self.frames)}
                for i, (peak, power) in enumerate(zip(self.peaks, self.powers, strict=True))
            ],
            "momentary_lufs": self.momentary,
            "short_term_lufs": self.short_term,
        }


@dataclass(slots=True)
class _Minute(_Levels):
    """The seconds of one minute, folded as each ends."""

    minute: int = 0

    def summary(self, node_id: str, extra: _Levels | None = None) -> MeterSummary:
        """What is stored for the minute (with `extra`, the second in progress too, without changing this one).

        Unrounded: at a minute's end every node's summary is made at once, on the loop; rounding waits
        for the database worker.
        """
        levels: _Levels = self
        if extra is not None:
            levels = self.copy()
            levels.fold(extra)
        frames = levels.frames or 1
        channels = tuple(
            (
                _level(levels.peaks[i]),
                _db_unrounded(levels.peak_energy[i] / frames),
                _level(levels.rms_highs[i]),
                _db_unrounded(levels.powers[i] / frames),
            )
            for i in range(len(levels.peaks))
        )
        return MeterSummary(
            node_id,
            self.minute,
            levels.frames,
            channels,
            _level(levels.momentary_max),
            _level(levels.short_term_max),
            levels.integrated,
        )


@dataclass(slots=True)
class NodeMeters:
    latest: MeterFrame
    received_at: float
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_S))
    current: _Second | None = None
    minute: _Minute | None = None  # the minute in progress (its seconds that ended)
    encoded: bytes | None = None  # the latest frame as a coalesced event's `"node_id":{frame}`, once one needed it

    def add(self, frame: MeterFrame, now: float) -> _Minute | None:
        """Fold a frame in; the minute that ended with it, if one did."""
        second = int(now)
        current = self.current
        closed = None
        if current is None or current.second != second:
            closed = self._roll(second)
            current = self.current = _Second(second=second)
        current.add(frame)
        self.latest, self.received_at, self.encoded = frame, now, None
        return closed

    def close(self, now: float | None) -> _Minute | None:
        """End what `now` has left behind (None: everything, the minute in progress too); the minute that ended."""
        if now is not None and self.current is not None and self.current.second == int(now):
            return None
        return self._roll(None if now is None else int(now))

    def _roll(self, second: int | None) -> _Minute | None:
        """The second in progress ends: into the per-second history and its minute; the minute if `second` is past it."""
        current = self.current
        if current is not None:
            self.history.append(current.point())
            if self.minute is None:
                self.minute = _Minute(minute=current.second - current.second % MINUTE_S)
            self.minute.fold(current)
            self.current = None
        minute = self.minute
        if minute is not None and (second is None or second - second % MINUTE_S != minute.minute):
            self.minute = None
            return minute
        return None

    def in_progress(self, node_id: str) -> MeterSummary | None:
        """The minute in progress so far, the second in progress included (for reads; nothing changes)."""
        current = self.current
        if self.minute is not None:
            return self.minute.summary(node_id, current)
        if current is not None:
            return _Minute(minute=current.second - current.second % MINUTE_S).summary(node_id, current)
        return None


class MeterSubscriber(Outbox):
    """One SSE client: the nodes it asked for (None: all it may see), its scope, its bounded outbox of encoded
    frames (dropped past `size` frames or `max_bytes` bytes not yet sent), and with `max_rate` the time each
    node's next frame is due."""

    __slots__ = ("scope", "node_ids", "gap", "due")

    def __init__(
        self,
        scope: SiteScope,
        node_ids: frozenset[str] | None,
        size: int = SUBSCRIBER_QUEUE,
        max_rate: int | None = None,
        max_bytes: int = MAX_UNSENT_BYTES,
    ) -> None:
        super().__init__(size, max_bytes)
        self.scope = scope
        self.node_ids = node_ids
        self.gap = 1.0 / max_rate if max_rate else 0.0  # 0: every frame
        self.due: dict[str, float] = {}

    def wants(self, node_id: str, site: str | None) -> bool:
        return (self.node_ids is None or node_id in self.node_ids) and self.scope.allows(site)

    def takes(self, node_id: str, frame: MeterFrame, now: float) -> bool:
        """With a max_rate, whether this frame of the node goes out now.

        The next one is due a gap after the last one was due (not after it came), so that frames
        arriving a little early or late keep the rate; half a gap early still counts. After a
        pause the count starts again from now. A frame with clipped samples always goes out.
        """
        gap = self.gap
        due = self.due.get(node_id)
        if due is not None and now < due - gap / 2:
            return any(channel.clip for channel in frame.channels)
        self.due[node_id] = due + gap if due is not None and now - due < gap else now + gap
        return True


class MeterStore:
    """The latest frames, per-second history, minutes that ended and live subscribers; `site_of` finds a node's site (cached)."""

    def __init__(self, lookup_site: Callable[[str], None] | None = None) -> None:
        self.nodes: dict[str, NodeMeters] = {}
        self.ended: list[MeterSummary] = []  # minutes that ended, until `take_minutes`
        self.sites: dict[str, str | None] = {}
        self.subscribers: set[MeterSubscriber] = set()
        self._lookup_site = lookup_site
        self._looking_up: set[str] = set()
        self.frames_in = 0
        self.frames_out = 0
        self.subscribers_dropped = 0
        self.tickers: dict[int, _Ticker] = {}  # coalesced streams by interval (ms)
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.ticks_encoded = 0  # coalesced events encoded (one per tick per group)
        self.ticks_out = 0  # ... and put in a client's outbox

    def add(self, node_id: str, frame: MeterFrame, now: float | None = None) -> None:
        now = time.time() if now is None else now
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = self.nodes[node_id] = NodeMeters(frame, now)
        ended = entry.add(frame, now)
        if ended is not None:
            self.ended.append(ended.summary(node_id))
        self.frames_in += 1
        if self.tickers:
            self._mark(node_id, frame)
        if self.subscribers:
            self._fan_out(node_id, frame, now)

    def add_batch(self, frames: list[tuple[str, MeterFrame]], now: float | None = None) -> int:
        """The frames of one MQTT read (node id, frame), in order: stored, then fanned out on this loop; how many."""
        now = time.time() if now is None else now
        nodes = self.nodes
        for node_id, frame in frames:
            entry = nodes.get(node_id)
            if entry is None:
                entry = nodes[node_id] = NodeMeters(frame, now)
            ended = entry.add(frame, now)
            if ended is not None:
                self.ended.append(ended.summary(node_id))
        self.frames_in += len(frames)
        if self.tickers:
            for node_id, frame in frames:
                self._mark(node_id, frame)
        if self.subscribers:
            self._fan_out_batch(frames, now)
        return len(frames)

    def _fan_out_batch(self, frames: list[tuple[str, MeterFrame]], now: float) -> None:
        """A read's frames to every subscriber: those that follow every node everywhere at full rate (an overview)
        get the batch as one chunk, encoded and joined once; the others frame by frame."""
        whole = [sub for sub in self.subscribers if sub.node_ids is None and not sub.gap and sub.scope.everywhere]
        if len(whole) < 2:  # one chunk for one subscriber saves nothing
            for node_id, frame in frames:
                self._fan_out(node_id, frame, now)
            return
        others = self.subscribers.difference(whole)
        sites, payloads = self.sites, []
        for node_id, frame in frames:
            site = sites.get(node_id, UNKNOWN_SITE)
            if site is UNKNOWN_SITE:
                self._fan_out(node_id, frame, now)  # looks the site up; nobody sees it yet
                continue
            payload = sse_frame(node_id, frame)
            payloads.append(payload)
            if others:
                self._fan_out(node_id, frame, now, others, payload)
        if not payloads:
            return
        chunk, count = b"".join(payloads), len(payloads)
        dropped = [sub for sub in whole if not sub.put_many(chunk, count)]
        self.frames_out += count * (len(whole) - len(dropped))
        if dropped:
            self.subscribers.difference_update(dropped)
            self.subscribers_dropped += len(dropped)

    def _fan_out(
        self,
        node_id: str,
        frame: MeterFrame,
        now: float,
        subscribers: set[MeterSubscriber] | None = None,
        payload: bytes | None = None,
    ) -> None:
        """One frame to every subscriber that wants it (or to those of `subscribers`), encoded once."""
        site = self.sites.get(node_id, UNKNOWN_SITE)
        if site is UNKNOWN_SITE:
            self._look_up_site(node_id)
            return  # nobody sees a frame before the hub knows which site it belongs to
        sent = 0
        dropped: list[MeterSubscriber] | None = None
        for sub in self.subscribers if subscribers is None else subscribers:
            if sub.dropped or not sub.wants(node_id, site) or (sub.gap and not sub.takes(node_id, frame, now)):  # type: ignore[arg-type]
                continue
            if payload is None:
                payload = sse_frame(node_id, frame)
            if sub.put(payload):
                sent += 1
            else:
                dropped = [sub] if dropped is None else [*dropped, sub]
        self.frames_out += sent
        if dropped:
            self.subscribers.difference_update(dropped)
            self.subscribers_dropped += len(dropped)

    def _look_up_site(self, node_id: str) -> None:
        if self._lookup_site is not None and node_id not in self._looking_up:
            self._looking_up.add(node_id)
            self._lookup_site(node_id)

    def set_site(self, node_id: str, site: str | None, known: bool = True) -> None:
        """The node's site, from the database (`known` False: the node does not exist; forget it)."""
        self._looking_up.discard(node_id)
        if known:
            self.sites[node_id] = site
        else:
            self.forget(node_id)

    def forget(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)
        self.sites.pop(node_id, None)
        if any(s.node_id == node_id for s in self.ended):
            self.ended = [s for s in self.ended if s.node_id != node_id]

    def take_minutes(self, now: float | None) -> list[MeterSummary]:
        """The minutes that ended by `now` (None: the minutes in progress too), of every node, taken out."""
        for node_id, entry in self.nodes.items():
            ended = entry.close(now)
            if ended is not None:
                self.ended.append(ended.summary(node_id))
        taken, self.ended = self.ended, []
        return taken

    def pending(self, node_id: str) -> list[MeterSummary]:
        """A node's minutes not taken yet: those that ended and the one in progress (for reads)."""
        found = [s for s in self.ended if s.node_id == node_id]
        entry = self.nodes.get(node_id)
        in_progress = entry.in_progress(node_id) if entry is not None else None
        return found if in_progress is None else [*found, in_progress]

    def forget_site(self, node_id: str) -> None:
        """The node moved to another site: look it up again before the next frame goes out."""
        self.sites.pop(node_id, None)

    def subscribe(self, scope: SiteScope, node_ids: frozenset[str] | None, max_rate: int | None = None) -> MeterSubscriber:
        sub = MeterSubscriber(scope, node_ids, max_rate=max_rate)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: MeterSubscriber) -> None:
        self.subscribers.discard(sub)

    def latest(self, node_id: str) -> dict[str, Any] | None:
        entry = self.nodes.get(node_id)
        if entry is None:
            return None
        return {"received_at": entry.received_at, **msgspec.to_builtins(entry.latest)}

    def history(self, node_id: str, range_s: int, now: float | None = None) -> list[dict[str, Any]]:
        """One point per second over the last `range_s` seconds, oldest first (the second in progress excluded)."""
        entry = self.nodes.get(node_id)
        if entry is None:
            return []
        now = time.time() if now is None else now
        points = list(entry.history)
        if entry.current is not None and entry.current.second < int(now):
            points.append(entry.current.point())
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(now) - range_s))
        return [p for p in points if p["ts"] >= cutoff]

    # -- coalesced streams ---------------------------------------------------------------------------

    def subscribe_coalesced(self, scope: SiteScope, node_ids: frozenset[str] | None, interval_ms: int) -> CoalescedSubscriber:
        """A client of the coalesced stream: one event per tick of `interval_ms` with the latest frame of each node it
        sees that sent one since the last tick. Clients with the same sites, node filter and interval share a group.
        On the loop, the interval's timer starts with its first group (outside a loop, `tick` is called by hand)."""
        ticker = self.tickers.get(interval_ms)
        if ticker is None:
            ticker = self.tickers[interval_ms] = _Ticker(interval_ms, time.time())
            self._start_timer(ticker)
        key = (interval_ms, scope.sites, scope.hidden, node_ids)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(key, SiteScope(scope.sites, None, scope.hidden), node_ids)
            ticker.groups.add(group)
        behind = max(3, math.ceil(COALESCED_BEHIND_S * 1000 / interval_ms))
        sub = CoalescedSubscriber(group, behind)
        group.subscribers.add(sub)
        return sub

    def unsubscribe_coalesced(self, sub: CoalescedSubscriber) -> None:
        """The client left (or was dropped): its group goes with its last client, the interval's timer with its last group."""
        group = sub.group
        group.subscribers.discard(sub)
        if group.subscribers or self.groups.get(group.key) is not group:
            return
        del self.groups[group.key]
        ticker = self.tickers.get(group.key[0])
        if ticker is None:
            return
        ticker.groups.discard(group)
        if not ticker.groups:
            del self.tickers[ticker.interval_ms]
            if ticker.handle is not None:
                ticker.handle.cancel()
                ticker.handle = None

    def snapshot(self, sub: CoalescedSubscriber, now: float | None = None) -> bytes:
        """The first event of a coalesced stream (`snapshot: true`): the latest frame of every node the client sees that
        sent one in the last `SNAPSHOT_RECENT_S`; b"" when there is none. Encoded once per tick for its group: the frames
        that came after it are in the next tick."""
        group = sub.group
        ticker = self.tickers.get(group.key[0])
        tick = ticker.tick if ticker is not None else -1
        if group.snapshot_tick == tick and tick >= 0:
            return group.snapshot
        now = time.time() if now is None else now
        nodes, sites = self.nodes, self.sites
        candidates = nodes.keys() if group.node_ids is None else group.node_ids
        parts = []
        for node_id in candidates:
            entry = nodes.get(node_id)
            if entry is None or now - entry.received_at > SNAPSHOT_RECENT_S:
                continue
            site = sites.get(node_id, UNKNOWN_SITE)
            if site is UNKNOWN_SITE or not group.scope.allows(site):  # type: ignore[arg-type]
                continue
            parts.append(_node_piece(node_id, entry))
        payload = _tick_head(tick, now, group.key[0], True) + b",".join(parts) + b"}}\n\n" if parts else b""
        group.snapshot, group.snapshot_tick = payload, tick
        return payload

    def tick(self, interval_ms: int, now: float | None = None) -> int:
        """One tick of `interval_ms`: to each group, one event with the latest frame of each node it sees that sent one
        since the last tick (each channel's `clip` the clipped samples of all those frames), encoded once and put in
        every client's outbox (a client too far behind is dropped); no event when nothing changed. How many events."""
        ticker = self.tickers.get(interval_ms)
        if ticker is None:
            return 0
        now = time.time() if now is None else now
        number = ticker.tick = max(ticker.tick + 1, int(now * 1000 // interval_ms))
        dirty, clips = ticker.dirty, ticker.clips
        if not dirty:
            return 0
        ticker.dirty, ticker.clips = set(), {}
        nodes, sites = self.nodes, self.sites
        pieces: dict[str, bytes] = {}
        visible: list[tuple[str, str | None]] = []
        for node_id in dirty:
            site = sites.get(node_id, UNKNOWN_SITE)
            if site is UNKNOWN_SITE:
                self._look_up_site(node_id)  # nobody sees a frame before the hub knows which site it belongs to
            elif node_id in nodes:
                visible.append((node_id, site))  # type: ignore[arg-type]
        head = _tick_head(number, now, interval_ms, False)
        events = 0
        for group in list(ticker.groups):
            scope, wanted = group.scope, group.node_ids
            parts = []
            for node_id, site in visible:
                if (wanted is None or node_id in wanted) and scope.allows(site):
                    piece = pieces.get(node_id)
                    if piece is None:
                        entry = nodes[node_id]
                        clipped = clips.get(node_id)
                        piece = pieces[node_id] = (
                            _node_piece(node_id, entry) if clipped is None else _clipped_piece(node_id, entry.latest, clipped)
                        )
                    parts.append(piece)
            if not parts:
                continue
            payload = head + b",".join(parts) + b"}}\n\n"
            self.ticks_encoded += 1
            events += 1
            dropped = [sub for sub in group.subscribers if not sub.put(payload)]
            self.ticks_out += len(group.subscribers) - len(dropped)
            for sub in dropped:
                self.subscribers_dropped += 1
                self.unsubscribe_coalesced(sub)
        return events

    def _mark(self, node_id: str, frame: MeterFrame) -> None:
        """A node's new frame, for the next tick of every interval (its clipped samples added up until then)."""
        clipped = None
        for channel in frame.channels:
            if channel.clip:
                clipped = [c.clip for c in frame.channels]
                break
        for ticker in self.tickers.values():
            ticker.dirty.add(node_id)
            if clipped is not None:
                seen = ticker.clips.get(node_id)
                if seen is None:
                    ticker.clips[node_id] = list(clipped)
                else:
                    seen.extend([0] * (len(clipped) - len(seen)))
                    for i, count in enumerate(clipped):
                        seen[i] += count

    def _start_timer(self, ticker: _Ticker) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): ticks come from `tick`
        self._schedule(loop, ticker)

    def _schedule(self, loop: asyncio.AbstractEventLoop, ticker: _Ticker) -> None:
        """The next tick at the next wall-clock multiple of the interval (at once when the last one came late)."""
        due = (ticker.tick + 1) * ticker.interval_ms / 1000
        ticker.handle = loop.call_later(max(0.0, due - time.time()), self._on_timer, loop, ticker)

    def _on_timer(self, loop: asyncio.AbstractEventLoop, ticker: _Ticker) -> None:
        ticker.handle = None
        if self.tickers.get(ticker.interval_ms) is not ticker:
            return  # its last group left
        try:
            self.tick(ticker.interval_ms)
        except Exception:
            log.exception("a coalesced meter tick failed")
        if self.tickers.get(ticker.interval_ms) is ticker:
            self._schedule(loop, ticker)


def sse_frame(node_id: str, frame: MeterFrame) -> bytes:
    """`event: meter` with the frame and its `node_id`, encoded once for every subscriber."""
    body = msgspec.json.encode(frame)
    prefix = b'{"node_id":' + msgspec.json.encode(node_id) + (b"," if len(body) > 2 else b"")
    return b"event: meter\ndata: " + prefix + body[1:] + b"\n\n"


# -- coalesced streams -------------------------------------------------------------------------------

COALESCE_MIN_MS = 50
COALESCE_MAX_MS = 5000
COALESCED_BEHIND_S = 2.0  # a coalesced client that has not taken this much of its ticks (at least 3) is dropped...
COALESCED_MAX_BYTES = 4 << 20  # ... or this many bytes (a tick of 1,000 nodes is about 400 KB)
SNAPSHOT_RECENT_S = 3.0  # the first event of a coalesced stream has the nodes that sent a frame this recently


class CoalescedSubscriber(Outbox):
    """One client of a coalesced stream: its group (what it sees, at which tick) and its bounded outbox of ticks."""

    __slots__ = ("group",)

    def __init__(self, group: _Group, max_frames: int, max_bytes: int = COALESCED_MAX_BYTES) -> None:
        super().__init__(max_frames, max_bytes)
        self.group = group


class _Group:
    """The coalesced clients that see the same nodes at the same ticks (one scope, one node filter, one interval):
    one event is encoded per tick for all of them, and one snapshot per tick for those that join in it."""

    __slots__ = ("key", "scope", "node_ids", "subscribers", "snapshot", "snapshot_tick")

    def __init__(self, key: tuple[Any, ...], scope: SiteScope, node_ids: frozenset[str] | None) -> None:
        self.key = key
        self.scope = scope
        self.node_ids = node_ids
        self.subscribers: set[CoalescedSubscriber] = set()
        self.snapshot = b""
        self.snapshot_tick = -1


class _Ticker:
    """The ticks of one interval: the nodes with a new frame since the last tick, the clipped samples of every frame
    in between (by node and channel), and the loop's timer, which runs only while the interval has a group."""

    __slots__ = ("interval_ms", "groups", "dirty", "clips", "tick", "handle")

    def __init__(self, interval_ms: int, now: float) -> None:
        self.interval_ms = interval_ms
        self.groups: set[_Group] = set()
        self.dirty: set[str] = set()
        self.clips: dict[str, list[int]] = {}
        self.tick = int(now * 1000 // interval_ms)  # the last tick's number: ticks are wall-clock multiples of the interval
        self.handle: asyncio.TimerHandle | None = None


def _iso_ms(at: float) -> bytes:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z").encode()


def _tick_head(number: int, at: float, interval_ms: int, snapshot: bool) -> bytes:
    return b'event: meters\ndata: {"tick":%d,"snapshot":%s,"ts":"%s","interval_ms":%d,"frames":{' % (
        number,
        b"true" if snapshot else b"false",
        _iso_ms(at),
        interval_ms,
    )


def _node_piece(node_id: str, entry: NodeMeters) -> bytes:
    """`"node_id":{frame}` of a node's latest frame, for a coalesced event: encoded once per frame, whatever the ticks."""
    piece = entry.encoded
    if piece is None:
        piece = entry.encoded = msgspec.json.encode(node_id) + b":" + msgspec.json.encode(entry.latest)
    return piece


def _clipped_piece(node_id: str, frame: MeterFrame, clipped: list[int]) -> bytes:
    """As `_node_piece`, with each channel's `clip` the clipped samples of every frame of the tick."""
    channels = [
        msgspec.structs.replace(channel, clip=clipped[i]) if i < len(clipped) and clipped[i] != channel.clip else channel
        for i, channel in enumerate(frame.channels)
    ]
    return msgspec.json.encode(node_id) + b":" + msgspec.json.encode(msgspec.structs.replace(frame, channels=channels))
