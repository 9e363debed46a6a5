"""What node telemetry does to the hub's state: status, heartbeats, health reports, missed heartbeats.

Plain functions on a database worker. Each returns the fleet events it caused, so the
caller can publish them on the events stream after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import peewee

from hub.clock import iso, parse_iso, utcnow
from hub.db.models import Node, NodeStatusChange, ReceivedMessage, database_proxy
from hub.ids import new_id
from hub.mqtt.messages import HealthReport, Heartbeat, Status
from hub.services.health import event_to_api, has_open_critical, report_condition

MISSED_HEARTBEATS = 3  # offline after this many intervals without a heartbeat
FRESH_SLACK = timedelta(seconds=5)
DEDUP_KEEP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """Something the events stream tells subscribers: `node.online`, `health.opened`, ..."""

    type: str
    site: str | None
    data: dict[str, Any]


def _transition(node: Node, to: str, reason: str, at: datetime, events: list[FleetEvent]) -> None:
    if node.status == to:
        return
    NodeStatusChange.create(id=new_id("nsc"), node_id=node.id, at=at, from_status=node.status, to_status=to, reason=reason)
    Node.update(status=to, updated_at=at).where(Node.id == node.id).execute()
    events.append(
        FleetEvent(f"node.{to}", node.site, {"node_id": node.id, "from": node.status, "to": to, "reason": reason, "at": iso(at)})
    )
    node.status = to


def _connected_status(node: Node) -> str:
    return "degraded" if has_open_critical(node.id) else "online"


def apply_status(node_id: str, status: Status, at: datetime) -> list[FleetEvent]:
    """The node's retained status (or its last will) arrived."""
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        node = Node.get_or_none(Node.id == node_id)
        if node is None:
            return events
        if status.state == "online":
            Node.update(connected_at=at, last_seen_at=at, version=status.agent_version or node.version).where(
                Node.id == node.id
            ).execute()
            _transition(node, _connected_status(node), "connected", at, events)
        else:
            _transition(node, "offline", "disconnected", at, events)
    return events


def _apply_heartbeat(node: Node, beat: Heartbeat, at: datetime, events: list[FleetEvent]) -> None:
    try:
        sent = parse_iso(beat.ts)
    except ValueError:
        sent = at
    previous = (node.metrics or {}).get("ts")
    if previous is not None and previous > beat.ts:
        return  # an older heartbeat replayed from the outbox: already superseded
    metrics = {
        "ts": beat.ts,
        "seq": beat.seq,
        "uptime_s": beat.uptime_s,
        "cpu_pct": beat.cpu_pct,
        "memory": msgspec.to_builtins(beat.memory),
        "disk": msgspec.to_builtins(beat.disk),
        "temperature_c": beat.temperature_c,
        "outbox": msgspec.to_builtins(beat.outbox),
    }
    fields: dict[str, Any] = {
        "metrics": metrics,
        "version": beat.agent_version,
        "interfaces": merge_interfaces(node.interfaces or [], msgspec.to_builtins(beat.interfaces)),
        "last_heartbeat_at": sent,
        "last_seen_at": at,
    }
    if beat.clock is not None:
        fields["clock_offset_ms"] = beat.clock.offset_ms
        fields["time_quality"] = beat.clock.quality
    Node.update(**fields).where(Node.id == node.id).execute()
    node.last_seen_at = at
    if (
        node.status in ("pending", "offline")
        and at - sent <= timedelta(seconds=node.heartbeat_interval_s * MISSED_HEARTBEATS) + FRESH_SLACK
    ):
        _transition(node, _connected_status(node), "heartbeat", at, events)
    resolved, what = report_condition(node, "heartbeat.missed", "resolved", "warning", {}, at)
    if what == "resolved" and resolved is not None:
        events.append(FleetEvent("health.resolved", node.site, event_to_api(resolved)))


def merge_interfaces(known: list[dict[str, Any]], reported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reported interfaces, keeping the labels and enabled flags set at the hub."""
    kept: dict[Any, dict[str, Any]] = {i.get("id"): i for i in known}
    merged = []
    for interface in reported:
        old: dict[str, Any] = kept.get(interface.get("id"), {})
        kept_fields: dict[str, Any] = {k: old[k] for k in ("label", "enabled") if k in old}
        merged.append({**interface, **kept_fields})
    return merged


def _apply_health(node: Node, report: HealthReport, at: datetime, events: list[FleetEvent]) -> None:
    try:
        when = parse_iso(report.ts)
    except ValueError:
        when = at
    event, what = report_condition(node, report.kind, report.state, report.severity, dict(report.details), when)
    if what is not None and event is not None:
        events.append(FleetEvent(f"health.{what}", node.site, event_to_api(event)))
    if node.status in ("online", "degraded"):
        _transition(node, _connected_status(node), f"health {report.kind} {report.state}", at, events)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    node_id: str
    msg_id: str
    message: Heartbeat | HealthReport


def ingest_outbox(batch: list[OutboxMessage], at: datetime | None = None) -> tuple[dict[str, list[str]], list[FleetEvent]]:
    """Apply each outbox message once, in arrival order; return the ids to acknowledge per node, and the events."""
    at = at or utcnow()
    acks: dict[str, list[str]] = {}
    events: list[FleetEvent] = []
    nodes: dict[str, Node | None] = {}
    with database_proxy.atomic():
        for item in batch:
            if item.node_id not in nodes:
                nodes[item.node_id] = Node.get_or_none(Node.id == item.node_id)
            node = nodes[item.node_id]
            if node is None:
                continue  # deleted or never enrolled: not acknowledged, the node will hear about it elsewhere
            acks.setdefault(node.id, []).append(item.msg_id)
            try:
                with database_proxy.atomic():  # a savepoint: a duplicate only undoes itself
                    ReceivedMessage.insert(node_id=node.id, msg_id=item.msg_id, received_at=at).execute()
            except peewee.IntegrityError:
                continue  # applied before: acknowledge again, apply never twice
            if isinstance(item.message, Heartbeat):
                _apply_heartbeat(node, item.message, at, events)
            else:
                _apply_health(node, item.message, at, events)
    return acks, events


def sweep_missed_heartbeats(at: datetime | None = None) -> list[FleetEvent]:
    """Nodes that stopped heartbeating for MISSED_HEARTBEATS intervals go offline."""
    at = at or utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        for node in Node.select().where(Node.status.in_(("online", "degraded"))):
            last = node.last_seen_at or node.connected_at
            if last is not None and at - last > timedelta(seconds=node.heartbeat_interval_s * MISSED_HEARTBEATS):
                _transition(node, "offline", "heartbeat.missed", at, events)
                event, what = report_condition(
                    node,
                    "heartbeat.missed",
                    "open",
                    "warning",
                    {"last_seen_at": iso(last), "interval_s": node.heartbeat_interval_s},
                    at,
                )
                if what and event is not None:
                    events.append(FleetEvent(f"health.{what}", node.site, event_to_api(event)))
        ReceivedMessage.delete().where(ReceivedMessage.received_at < at - DEDUP_KEEP).execute()
    return events
