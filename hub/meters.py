"""Live meters at the hub, in memory only: the latest frame per node, one point per second for the
last hour, and the fan-out to SSE subscribers (bounded queues; a client that falls behind is dropped).

Frames arrive at 10 Hz from every node: nothing here touches the database, and each frame is
encoded for the stream once, whatever the number of subscribers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.protocol.messages import MeterFrame

HISTORY_S = 3600
RANGES_S = {"5m": 300, "15m": 900, "1h": 3600}
SUBSCRIBER_QUEUE = 256  # frames a slow client may lag (about 2.5 s of 10 nodes) before it is dropped
UNKNOWN_SITE = object()


def _power(dbfs: float | None) -> float:
    return 0.0 if dbfs is None else 10 ** (dbfs / 10.0)


def _db(power: float) -> float | None:
    return None if power <= 0.0 else round(10.0 * math.log10(power), 2)


@dataclass(slots=True)
class _Second:
    """The frames of one wall-clock second, folded into one history point as they arrive."""

    second: int
    peaks: list[float | None] = field(default_factory=list)
    powers: list[float] = field(default_factory=list)
    frames: int = 0
    momentary: float | None = None
    short_term: float | None = None

    def add(self, frame: MeterFrame) -> None:
        channels = frame.channels
        if len(self.peaks) < len(channels):
            self.peaks += [None] * (len(channels) - len(self.peaks))
            self.powers += [0.0] * (len(channels) - len(self.powers))
        for i, channel in enumerate(channels):
            peak = channel.peak_dbfs
            if peak is not None and (self.peaks[i] is None or peak > self.peaks[i]):  # type: ignore[operator]
                self.peaks[i] = peak
            self.powers[i] += _power(channel.rms_dbfs)
        self.frames += 1
        if frame.loudness is not None:
            self.momentary = frame.loudness.momentary_lufs
            self.short_term = frame.loudness.short_term_lufs

    def point(self) -> dict[str, Any]:
        """Peak: the loudest frame's; RMS: the power mean over the second; loudness: the last reading."""
        return {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.second)),
            "channels": [
                {"index": i, "peak_dbfs": peak, "rms_dbfs": _db(power / self.frames)}
                for i, (peak, power) in enumerate(zip(self.peaks, self.powers, strict=True))
            ],
            "momentary_lufs": self.momentary,
            "short_term_lufs": self.short_term,
        }


@dataclass(slots=True)
class NodeMeters:
    latest: MeterFrame
    received_at: float
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_S))
    current: _Second | None = None

    def add(self, frame: MeterFrame, now: float) -> None:
        second = int(now)
        if self.current is not None and self.current.second != second:
            self.history.append(self.current.point())
            self.current = None
        if self.current is None:
            self.current = _Second(second)
        self.current.add(frame)
        self.latest, self.received_at = frame, now


class MeterSubscriber:
    """One SSE client: the nodes it asked for (None: all it may see), its scope, a bounded queue."""

    def __init__(self, scope: SiteScope, node_ids: frozenset[str] | None, size: int = SUBSCRIBER_QUEUE) -> None:
        self.scope = scope
        self.node_ids = node_ids
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.dropped = False

    def wants(self, node_id: str, site: str | None) -> bool:
        return (self.node_ids is None or node_id in self.node_ids) and self.scope.allows(site)


class MeterStore:
    """The latest frames, per-second history and live subscribers; `site_of` finds a node's site (cached)."""

    def __init__(self, lookup_site: Callable[[str], None] | None = None) -> None:
        self.nodes: dict[str, NodeMeters] = {}
        self.sites: dict[str, str | None] = {}
        self.subscribers: set[MeterSubscriber] = set()
        self._lookup_site = lookup_site
        self._looking_up: set[str] = set()
        self.frames_in = 0
        self.frames_out = 0
        self.subscribers_dropped = 0

    def add(self, node_id: str, frame: MeterFrame, now: float | None = None) -> None:
        now = time.time() if now is None else now
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = self.nodes[node_id] = NodeMeters(frame, now)
        entry.add(frame, now)
        self.frames_in += 1
        if self.subscribers:
            self._fan_out(node_id, frame)

    def _fan_out(self, node_id: str, frame: MeterFrame) -> None:
        site = self.sites.get(node_id, UNKNOWN_SITE)
        if site is UNKNOWN_SITE:
            if self._lookup_site is not None and node_id not in self._looking_up:
                self._looking_up.add(node_id)
                self._lookup_site(node_id)
            return  # nobody sees a frame before the hub knows which site it belongs to
        payload: bytes | None = None
        for sub in list(self.subscribers):
            if not sub.wants(node_id, site):  # type: ignore[arg-type]
                continue
            if payload is None:
                payload = sse_frame(node_id, frame)
            try:
                sub.queue.put_nowait(payload)
                self.frames_out += 1
            except asyncio.QueueFull:
                sub.dropped = True
                self.subscribers.discard(sub)
                self.subscribers_dropped += 1

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

    def forget_site(self, node_id: str) -> None:
        """The node moved to another site: look it up again before the next frame goes out."""
        self.sites.pop(node_id, None)

    def subscribe(self, scope: SiteScope, node_ids: frozenset[str] | None) -> MeterSubscriber:
        sub = MeterSubscriber(scope, node_ids)
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


def sse_frame(node_id: str, frame: MeterFrame) -> bytes:
    """`event: meter` with the frame and its `node_id`, encoded once for every subscriber."""
    body = msgspec.json.encode(frame)
    prefix = b'{"node_id":' + msgspec.json.encode(node_id) + (b"," if len(body) > 2 else b"")
    return b"event: meter\ndata: " + prefix + body[1:] + b"\n\n"
