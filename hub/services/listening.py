"""When the hub could hear its nodes: silence while it was away or deaf is not the nodes' doing.

The hub hears nodes from its start (HTTP) and, over MQTT, from its latest connection to the
broker. A judgement like "no heartbeat for three intervals" or "no result within the timeout"
counts only the time since then: after a restart or a broker outage every node first gets a
full window to reconnect and replay its outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def silent_for(last_heard: datetime | None, listening_since: datetime | None, at: datetime) -> timedelta:
    """How long the hub has heard nothing from a node while it was listening (zero while it is not: None)."""
    if listening_since is None:
        return timedelta(0)
    quiet_from = listening_since if last_heard is None else max(last_heard, listening_since)
    return max(at - quiet_from, timedelta(0))


def listening_since(started_at: datetime, connected_since: datetime | None) -> datetime | None:
    """Since when the hub hears nodes over MQTT: its start or its broker reconnect, whichever is later (None: deaf)."""
    if connected_since is None:
        return None
    return max(started_at, connected_since)
