"""This hub process's load, for a load balancer (`GET /api/load`): cheap figures kept in memory.

A small task wakes every TICK_S and measures how late it woke (the event loop's lag: time the
loop spent on other work it could not interleave), and samples the MQTT messages received so
far, so the ingest rate is the difference over the last WINDOW_S. Reading the figures touches
no database and no disk: requests in flight and open streams are counters the hub keeps anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

TICK_S = 0.5
WINDOW_S = 5.0
SAMPLES = int(WINDOW_S / TICK_S) + 1


class LoadMonitor:
    """Event-loop lag and the MQTT ingest rate, measured in the background; the rest read on demand."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._lags: deque[float] = deque(maxlen=SAMPLES)  # seconds late, newest last
        self._received: deque[tuple[float, float]] = deque(maxlen=SAMPLES)  # (monotonic time, messages so far)
        self._task: asyncio.Task[None] | None = None
        self._shed_counted: dict[str, int] = {}  # what hark_mqtt_shed_total already holds, by kind

    async def start(self) -> None:
        self._sample_received()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(TICK_S)
            self._lags.append(max(0.0, loop.time() - asked - TICK_S))
            self._sample_received()
            self._count_shed()

    def _count_shed(self) -> None:
        """Bring `hark_mqtt_shed_total{kind}` up to what the in-process broker shed (it counts in plain integers)."""
        broker = self.hub.broker
        if broker is None:
            return
        for kind, total in broker.shedder.shed_counts.items():
            counted = self._shed_counted.get(kind, 0)
            if total > counted:
                self.hub.metrics.mqtt_shed.labels(kind).inc(total - counted)
                self._shed_counted[kind] = total

    def broker_figures(self) -> dict[str, Any]:
        """The broker's kind and state, with what the in-process broker shed (none for the others)."""
        figures = dict(self.hub.broker_figures())
        broker = self.hub.broker
        figures["shed_total"] = broker.shed_total if broker is not None else 0
        figures["shedding"] = broker.shedding if broker is not None else False
        return figures

    def _messages_received(self) -> float:
        """MQTT messages the bridge has taken in since the hub started (every kind)."""
        total = 0.0
        for metric in self.hub.metrics.mqtt_received.collect():
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return total

    def _sample_received(self) -> None:
        self._received.append((time.monotonic(), self._messages_received()))

    def mqtt_rate(self) -> float:
        """Messages a second over the last WINDOW_S (or since the hub started, if sooner)."""
        if len(self._received) < 2:
            return 0.0
        (first_at, first), (last_at, last) = self._received[0], self._received[-1]
        return (last - first) / (last_at - first_at) if last_at > first_at else 0.0

    def figures(self, own_request: bool = True) -> dict[str, Any]:
        """The load figures; `own_request` leaves out the request asking for them."""
        hub = self.hub
        lags = list(self._lags)
        return {
            "requests_in_flight": max(0, hub.requests_in_flight - (1 if own_request else 0)),
            "streams": hub.stream_count,
            "event_loop_lag_ms": round(lags[-1] * 1000, 2) if lags else 0.0,
            "event_loop_lag_max_ms": round(max(lags) * 1000, 2) if lags else 0.0,
            "mqtt_messages_per_s": round(self.mqtt_rate(), 2),
            "mqtt_connected": hub.bridge is not None and hub.bridge.connected,
            "broker": self.broker_figures(),
            "db_queue_depth": hub.db.queue_depth(),
            "window_s": WINDOW_S,
            "uptime_s": round(time.time() - hub.started_at, 1),
        }
