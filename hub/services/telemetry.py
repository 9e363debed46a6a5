"""What node telemetry does to the hub's state: status, heartbeats, health and lifecycle reports, missed heartbeats.

Plain functions on a database worker. Each returns the fleet events it caused, so the
caller can publish them on the events stream after the transaction commits.

Several hubs (issue 24) apply outbox messages at the same time, one node's messages on any of them (the
broker shares them out message by message), and a node sends a message again when its hub died before
acknowledging it, so two hubs may hold one msg_id at once. On PostgreSQL `ingest_outbox` claims each
msg_id with `INSERT ... ON CONFLICT DO NOTHING RETURNING`: the second hub's insert waits for the first's
transaction and then claims nothing, so the message is applied once and neither batch fails (a unique
violation would abort the whole transaction). Rows are claimed and nodes updated in key order, so two
batches wait for each other but never deadlock, and a heartbeat never replaces a newer one on the node row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import peewee
from hark_fleet.hub.clock import iso, parse_iso, utcnow
from hark_fleet.hub.db.models import HealthEvent, Node, NodeStatusChange, ReceivedMessage, database_proxy
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import lifecycle, technician, watchdog_reports
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.health import UNRESOLVED, event_to_api, has_open_critical, report_condition
from hark_fleet.hub.services.listening import silent_for
from hark_fleet.protocol.messages import HealthReport, Heartbeat, LifecycleReport, Status
from hark_fleet.protocol.watchdog import CalibrationResult, ConfigApplied, RemediationReport

MISSED_HEARTBEATS = 3  # offline after this many intervals without a heartbeat
MIN_JUDGED_INTERVAL_S = 1.0  # a node may beat faster; the hub's intake and sweep cannot judge finer than this
FRESH_SLACK = timedelta(seconds=5)
DEDUP_KEEP = timedelta(days=7)


def _transition(node: Node, to: str, reason: str, at: datetime, events: list[FleetEvent]) -> None:
    if node.status == to:
        return
    NodeStatusChange.create(id=new_id("nsc"), node_id=node.id, at=at, from_status=node.status, to_status=to, reason=reason)
    actor = SYSTEM if reason == "heartbeat.missed" or reason.startswith("health events") else _node_actor(node)
    record(
        actor,
        f"node.status.{to}",
        target=("node", node.id),
        before={"status": node.status},
        after={"status": to, "reason": reason},
    )
    Node.update(status=to, updated_at=at).where(Node.id == node.id).execute()
    events.append(
        FleetEvent(f"node.{to}", node.site, {"node_id": node.id, "from": node.status, "to": to, "reason": reason, "at": iso(at)})
    )
    node.status = to


def _node_actor(node: Node) -> Actor:
    return Actor("node", node.id, getattr(node, "name", None))


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


HEARTBEAT_COLUMNS = (
    "metrics",
    "version",
    "interfaces",
    "last_heartbeat_at",
    "last_seen_at",
    "clock_offset_ms",
    "time_quality",
    "reported_heartbeat_interval_s",
)


def _on_postgres() -> bool:
    return isinstance(database_proxy.obj, peewee.PostgresqlDatabase)


def _store_heartbeats(rows: list[tuple[Any, ...]]) -> None:
    """One prepared UPDATE for every node's newest heartbeat (rows end with the node id), in node order.

    PostgreSQL (several hubs): a row only moves forward, so another hub's newer heartbeat committed
    meanwhile stays (rows then end with the heartbeat's time again, `last_heartbeat_at` for the check).
    """
    db = database_proxy.obj
    assignments = ", ".join(f'"{column}" = {db.param}' for column in HEARTBEAT_COLUMNS)
    cursor = db.cursor()
    rows = sorted(rows, key=lambda row: row[-1])
    if _on_postgres():
        sent = HEARTBEAT_COLUMNS.index("last_heartbeat_at")
        newer = f'AND ("last_heartbeat_at" IS NULL OR "last_heartbeat_at" <= {db.param})'
        cursor.executemany(
            f'UPDATE "node" SET {assignments} WHERE "id" = {db.param} {newer}', [(*row, row[sent]) for row in rows]
        )
        return
    cursor.executemany(f'UPDATE "node" SET {assignments} WHERE "id" = {db.param}', rows)


def _apply_heartbeat(
    node: Node, beat: Heartbeat, at: datetime, events: list[FleetEvent], missed_open: bool
) -> tuple[Any, ...] | None:
    """Status and health consequences of a heartbeat; the node row's new values (or None if superseded)."""
    try:
        sent = parse_iso(beat.ts)
    except ValueError:
        sent = at
    previous = (node.metrics or {}).get("ts")
    if previous is not None and previous > beat.ts:
        return None  # an older heartbeat replayed from the outbox: already superseded
    metrics = {
        "ts": beat.ts,
        "seq": beat.seq,
        "uptime_s": beat.uptime_s,
        "cpu_pct": beat.cpu_pct,
        "memory": msgspec.to_builtins(beat.memory),
        "disk": msgspec.to_builtins(beat.disk),
        "temperature_c": beat.temperature_c,
        "outbox": msgspec.to_builtins(beat.outbox),
        "audio": beat.audio,
        "load": beat.load,
        "power": beat.power,
        "applied": beat.applied,  # what the node runs: {"watchdog": {"id", "version"}, "channel_map": ...}
        "disk_hours_left": beat.disk_hours_left,  # status: hours of recording the node's disk holds at its current rate
        "recording_bytes_per_s": beat.recording_bytes_per_s,
    }
    clock_offset = beat.clock.offset_ms if beat.clock is not None else node.clock_offset_ms
    quality = beat.clock.quality if beat.clock is not None else node.time_quality
    reported = beat.interval_s if beat.interval_s is not None else node.reported_heartbeat_interval_s
    row = (
        Node.metrics.db_value(metrics),
        beat.agent_version,
        Node.interfaces.db_value(merge_interfaces(node.interfaces or [], msgspec.to_builtins(beat.interfaces))),
        Node.last_heartbeat_at.db_value(sent),
        Node.last_seen_at.db_value(at),
        clock_offset,
        quality,
        reported,
        node.id,
    )
    node.last_seen_at = at
    interval_s = judged_interval_s(node.heartbeat_interval_s, reported)
    if (
        node.status in ("pending", "offline")
        and at - sent <= timedelta(seconds=interval_s * MISSED_HEARTBEATS) + FRESH_SLACK
        and not _sent_before_going_offline(node, sent)
    ):
        _transition(node, _connected_status(node), "heartbeat", at, events)
    if missed_open:
        resolved, what = report_condition(node, "heartbeat.missed", "resolved", "warning", {}, at)
        if what == "resolved" and resolved is not None:
            after = event_to_api(resolved)
            events.append(FleetEvent("health.resolved", node.site, after))
            record(_node_actor(node), "health.resolved", target=("health_event", resolved.id), after=after)
    return row


def _sent_before_going_offline(node: Node, sent: datetime) -> bool:
    """A heartbeat the node sent before its last disconnect (delivered late) does not bring it back online."""
    if node.status != "offline":
        return False
    change = (
        NodeStatusChange.select(NodeStatusChange.at)
        .where(NodeStatusChange.node_id == node.id, NodeStatusChange.to_status == "offline")
        .order_by(NodeStatusChange.at.desc())
        .first()
    )
    if change is None:
        return False
    offset = timedelta(milliseconds=node.clock_offset_ms or 0.0)  # the node's clock, moved onto the hub's
    return sent + offset <= change.at


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
    if report.kind == technician.ACTION_KIND:  # a technician's local action: an audit line, not a condition
        technician.record_local_action(node, dict(report.details))
        return
    try:
        when = parse_iso(report.ts)
    except ValueError:
        when = at
    event, what = report_condition(node, report.kind, report.state, report.severity, dict(report.details), when)
    if what is not None and event is not None:
        after = event_to_api(event)
        events.append(FleetEvent(f"health.{what}", node.site, after))
        if what != "repeated":  # a repeat only counts up: not a change worth an audit line
            record(_node_actor(node), f"health.{what}", target=("health_event", event.id), after=after)
    if node.status in ("online", "degraded"):
        _transition(node, _connected_status(node), f"health {report.kind} {report.state}", at, events)


NodeMessage = Heartbeat | HealthReport | LifecycleReport | RemediationReport | CalibrationResult | ConfigApplied


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    node_id: str
    msg_id: str
    message: NodeMessage


def _chunks(items: list[Any], size: int = 400) -> Iterator[list[Any]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _already_applied(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (node id, msg id) pairs the hub has applied before."""
    found: set[tuple[str, str]] = set()
    node_ids = sorted({n for n, _ in pairs})
    for chunk in _chunks(sorted({m for _, m in pairs})):
        query = ReceivedMessage.select(ReceivedMessage.node_id, ReceivedMessage.msg_id).where(
            ReceivedMessage.node_id.in_(node_ids), ReceivedMessage.msg_id.in_(chunk)
        )
        rows: Any = query.tuples()
        found.update((n, m) for n, m in rows if (n, m) in pairs)
    return found


def _claim(fresh: list[OutboxMessage], at: datetime) -> list[OutboxMessage]:
    """Record `fresh` messages as applied; those this transaction recorded back (arrival order).

    SQLite (one hub, one writer): all of them. PostgreSQL: `ON CONFLICT DO NOTHING RETURNING` in key order,
    so what another hub's transaction claimed first (committed meanwhile, or waited for) is left out.
    """
    if not _on_postgres():
        for chunk in _chunks(fresh):
            ReceivedMessage.insert_many([{"node_id": i.node_id, "msg_id": i.msg_id, "received_at": at} for i in chunk]).execute()
        return fresh
    claimed: set[tuple[str, str]] = set()
    for chunk in _chunks(sorted(fresh, key=lambda i: (i.node_id, i.msg_id))):
        query = (
            ReceivedMessage.insert_many([{"node_id": i.node_id, "msg_id": i.msg_id, "received_at": at} for i in chunk])
            .on_conflict_ignore()
            .returning(ReceivedMessage.node_id, ReceivedMessage.msg_id)
        )
        claimed.update((node_id, msg_id) for node_id, msg_id in query.tuples().execute())
    return [item for item in fresh if (item.node_id, item.msg_id) in claimed]


class Ingested(NamedTuple):
    """What a batch did: the ids to acknowledge per node, the events, and the heartbeats applied (for the history)."""

    acks: dict[str, list[str]]
    events: list[FleetEvent]
    heartbeats: list[tuple[str, Heartbeat]]


CONFLICT_ATTEMPTS = 3
CONFLICT_CODES = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure (the transaction is rolled back)


def ingest_outbox(batch: list[OutboxMessage], at: datetime | None = None) -> Ingested:
    """`apply_outbox`, tried again when PostgreSQL rolled it back for a deadlock with another hub's transaction
    (rows are locked in key order, so only rare paths, a status change and a heartbeat of one node on two hubs,
    can cross): a message the caller would drop as refused must not be one that merely lost a race."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return apply_outbox(batch, at)
        except Exception as err:
            code = getattr(err, "pgcode", None) or getattr(err.__context__, "pgcode", None)  # raw, or wrapped by peewee
            if attempt == CONFLICT_ATTEMPTS or code not in CONFLICT_CODES:
                raise
    raise AssertionError("unreachable")


def apply_outbox(batch: list[OutboxMessage], at: datetime | None = None) -> Ingested:
    """Apply each outbox message once; return the ids to acknowledge per node, the events and the heartbeats applied.

    One batch is one transaction with a handful of queries whatever its size: the nodes
    and the already-applied ids are read once, new ids are written in one insert, health
    reports and lifecycle reports are applied in arrival order, and of several heartbeats from one node only
    the newest updates it.
    """
    at = at or utcnow()
    acks: dict[str, list[str]] = {}
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        nodes = {n.id: n for n in Node.select().where(Node.id.in_(sorted({i.node_id for i in batch})))}
        known = [item for item in batch if item.node_id in nodes]  # others: deleted or never enrolled, not acknowledged
        for item in known:
            acks.setdefault(item.node_id, []).append(item.msg_id)
        applied = _already_applied({(i.node_id, i.msg_id) for i in known})
        fresh: list[OutboxMessage] = []
        for item in known:
            key = (item.node_id, item.msg_id)
            if key not in applied:
                applied.add(key)
                fresh.append(item)
        fresh = _claim(fresh, at)
        newest: dict[str, Heartbeat] = {}
        heartbeats: list[tuple[str, Heartbeat]] = []
        for item in fresh:
            if isinstance(item.message, Heartbeat):
                heartbeats.append((item.node_id, item.message))
                current = newest.get(item.node_id)
                if current is None or item.message.ts >= current.ts:
                    newest[item.node_id] = item.message
            elif isinstance(item.message, LifecycleReport):
                lifecycle.apply_report(nodes[item.node_id], item.message, at, events)
            elif isinstance(item.message, RemediationReport):
                watchdog_reports.apply_remediation(nodes[item.node_id], item.message, at, events)
            elif isinstance(item.message, CalibrationResult):
                watchdog_reports.apply_calibration(nodes[item.node_id], item.message, at, events)
            elif isinstance(item.message, ConfigApplied):
                watchdog_reports.apply_applied(nodes[item.node_id], item.message, at, events)
            else:
                _apply_health(nodes[item.node_id], item.message, at, events)
        if newest:
            open_missed: Any = (
                HealthEvent.select(HealthEvent.node_id)
                .where(
                    HealthEvent.kind == "heartbeat.missed",
                    HealthEvent.state.in_(UNRESOLVED),
                    HealthEvent.node_id.in_(sorted(newest)),
                )
                .tuples()
            )
            missed = {row[0] for row in open_missed}
            rows = [
                _apply_heartbeat(nodes[node_id], beat, at, events, node_id in missed) for node_id, beat in sorted(newest.items())
            ]
            _store_heartbeats([row for row in rows if row is not None])
    return Ingested(acks, events, heartbeats)


def judged_interval_s(configured_s: float, reported_s: float | None) -> float:
    """The interval a node's silence is judged by: what it last said it uses, else what the hub asked (at least 1 s)."""
    return max(MIN_JUDGED_INTERVAL_S, reported_s if reported_s is not None else configured_s)


def missed_heartbeats(last_seen: datetime | None, interval_s: float, listening_since: datetime | None, at: datetime) -> bool:
    """Whether a node stayed silent for MISSED_HEARTBEATS of its intervals while the hub could hear it."""
    return silent_for(last_seen, listening_since, at) > timedelta(seconds=interval_s * MISSED_HEARTBEATS)


def sweep_missed_heartbeats(listening_since: datetime | None, at: datetime | None = None) -> list[FleetEvent]:
    """Nodes that stopped heartbeating for MISSED_HEARTBEATS intervals (counted since `listening_since`) go offline."""
    at = at or utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        live = Node.select(
            Node.id,
            Node.site,
            Node.status,
            Node.last_seen_at,
            Node.connected_at,
            Node.heartbeat_interval_s,
            Node.reported_heartbeat_interval_s,
        )
        for node in live.where(Node.status.in_(("online", "degraded"))).order_by(Node.id):  # the order ingest locks nodes in
            last = node.last_seen_at or node.connected_at
            interval_s = judged_interval_s(node.heartbeat_interval_s, node.reported_heartbeat_interval_s)
            if missed_heartbeats(last, interval_s, listening_since, at):
                _transition(node, "offline", "heartbeat.missed", at, events)
                event, what = report_condition(
                    node,
                    "heartbeat.missed",
                    "open",
                    "warning",
                    {"last_seen_at": iso(last), "interval_s": interval_s},
                    at,
                )
                if what and event is not None:
                    after = event_to_api(event)
                    events.append(FleetEvent(f"health.{what}", node.site, after))
                    if what != "repeated":
                        record(SYSTEM, f"health.{what}", target=("health_event", event.id), after=after)
        ReceivedMessage.delete().where(ReceivedMessage.received_at < at - DEDUP_KEEP).execute()
    return events


def refresh_node_status(node: Node, at: datetime, events: list[FleetEvent]) -> None:
    """A connected node is `degraded` while it has an open critical event, `online` otherwise."""
    if node.status in ("online", "degraded"):
        _transition(node, _connected_status(node), "health events changed", at, events)


def node_sites() -> dict[str, str | None]:
    """Every node's site (for the live meter fan-out)."""
    rows: Any = Node.select(Node.id, Node.site).tuples()
    return dict(rows)


def node_site(node_id: str) -> tuple[bool, str | None]:
    """Whether the node exists, and its site."""
    node = Node.select(Node.site).where(Node.id == node_id).first()
    return (node is not None, node.site if node is not None else None)
