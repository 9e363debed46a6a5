"""What a node's watchdog tells the hub through its outbox: remediation steps, calibration results, what it applied.

Called inside `telemetry.ingest_outbox`'s transaction, once per message (deduplicated there).
A change that moves some nodes' resolved policy (a new baseline) adds a `watchdog.config_changed`
fleet event naming them; the ingest sends those nodes `cmd/config` after the commit.
"""

from __future__ import annotations

from datetime import datetime

from hark_fleet.hub.clock import parse_iso
from hark_fleet.hub.db.models import HealthEvent, HealthEventStep, Node, WatchdogApplied
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import channel_map_plans, watchdog_calibrations
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.health import UNRESOLVED, step_to_api
from hark_fleet.protocol.watchdog import CalibrationResult, ConfigApplied, RemediationReport

CONFIG_CHANGED = "watchdog.config_changed"  # data: {"node_ids": [...]}: send them `cmd/config`
MAX_OUTPUT = 4000


def _node_actor(node: Node) -> Actor:
    return Actor("node", node.id, getattr(node, "name", None))


def _event_for(node: Node, kind: str) -> HealthEvent | None:
    """The node's open event of `kind`, else its latest one."""
    base = HealthEvent.select().where(HealthEvent.node_id == node.id, HealthEvent.kind == kind)
    open_event = base.where(HealthEvent.state.in_(UNRESOLVED)).order_by(HealthEvent.first_seen.desc()).first()
    return open_event or base.order_by(HealthEvent.first_seen.desc()).first()


def apply_remediation(node: Node, report: RemediationReport, at: datetime, events: list[FleetEvent]) -> None:
    """A rung of a remediation ladder: a step on the event's timeline and an audit line (`health.remediate`)."""
    try:
        when = parse_iso(report.ts)
    except ValueError:
        when = at
    event = _event_for(node, report.event_kind[:100])
    step = HealthEventStep.create(
        id=new_id("hes"),
        event_id=event.id if event is not None else "",
        node_id=node.id,
        at=when,
        type="remediation",
        detector=report.detector[:40],
        step=report.step,
        action=report.action[:40],
        outcome=report.outcome,
        reason=report.reason,
        output=report.output[:MAX_OUTPUT],
    )
    after = {
        **step_to_api(step),
        "event_id": event.id if event is not None else None,
        "event_kind": report.event_kind,
        "node_id": node.id,
        "channels": list(report.channels),
        "policy_id": report.policy_id,
        "policy_version": report.policy_version,
    }
    target = ("health_event", event.id) if event is not None else ("node", node.id)
    record(
        _node_actor(node),
        "health.remediate",
        target=target,
        after=after,
        outcome="failure" if report.outcome == "failed" else "success",
        reason=report.reason,
    )
    events.append(FleetEvent("health.remediation", node.site, after))


def apply_calibration(node: Node, result: CalibrationResult, at: datetime, events: list[FleetEvent]) -> None:
    changed = watchdog_calibrations.apply_result(node, result, at, events)
    if changed:
        events.append(FleetEvent(CONFIG_CHANGED, None, {"node_ids": changed}))


def apply_applied(node: Node, message: ConfigApplied, at: datetime, events: list[FleetEvent]) -> None:
    """The node now runs (or refused) a watchdog policy or a channel map."""
    if message.what == "channel_map":
        channel_map_plans.confirm_applied(node, message, at, events)
        return
    row = {
        "node_id": node.id,
        "policy_id": message.id,
        "version": message.version,
        "ok": message.ok,
        "error": (message.error or None) and message.error[:2000],
        "at": at,
    }
    current = WatchdogApplied.get_or_none(WatchdogApplied.node_id == node.id)
    if current is None:
        WatchdogApplied.create(**row)
    else:
        WatchdogApplied.update(**row).where(WatchdogApplied.node_id == node.id).execute()
    data = {"node_id": node.id, "policy_id": message.id, "version": message.version, "ok": message.ok, "error": message.error}
    events.append(FleetEvent("watchdog.applied", node.site, data))
