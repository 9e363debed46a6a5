"""Health events: one open event per node and condition, counted while it repeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import HealthEvent, HealthEventStep, Node
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of

SEVERITIES = ("info", "warning", "critical")
STATES = ("open", "acknowledged", "suppressed", "resolved")
UNRESOLVED = ("open", "acknowledged", "suppressed")


def event_to_api(event: HealthEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "node_id": event.node_id,
        "site": event.site,
        "kind": event.kind,
        "severity": event.severity,
        "state": event.state,
        "first_seen": iso(event.first_seen),
        "last_seen": iso(event.last_seen),
        "count": event.count,
        "details": event.details or {},
        "acknowledged_by": event.acknowledged_by,
        "acknowledged_at": iso(event.acknowledged_at),
        "suppressed_until": iso(event.suppressed_until),
        "resolved_at": iso(event.resolved_at),
    }


HEALTH_LIST = ListSpec(
    model=HealthEvent,
    serialize=event_to_api,
    filters=(
        Filter("node_id", HealthEvent.node_id),
        Filter("site", HealthEvent.site),
        Filter("kind", HealthEvent.kind),
        Filter("severity", HealthEvent.severity, one_of(SEVERITIES)),
        Filter("state", HealthEvent.state, one_of(STATES)),
    ),
    search=(HealthEvent.kind,),
    time_field=HealthEvent.last_seen,
    site_field=HealthEvent.site,
    descending=True,
    export_columns=("id", "node_id", "site", "kind", "severity", "state", "first_seen", "last_seen", "count", "details"),
)


def report_condition(
    node: Node, kind: str, state: str, severity: str, details: dict[str, Any], at: datetime
) -> tuple[HealthEvent | None, str | None]:
    """Apply a node's condition report; return the event and what happened (opened, repeated, resolved) or None."""
    return _report(node.id, node.site, kind, state, severity, details, at)


def report_hub_condition(
    kind: str, state: str, severity: str, details: dict[str, Any], at: datetime
) -> tuple[HealthEvent | None, str | None]:
    """The hub's own condition (a full data disk...): an event with no node and no site, kept the same way."""
    return _report(None, None, kind, state, severity, details, at)


def _report(
    node_id: str | None, site: str | None, kind: str, state: str, severity: str, details: dict[str, Any], at: datetime
) -> tuple[HealthEvent | None, str | None]:
    owner = HealthEvent.node_id.is_null() if node_id is None else HealthEvent.node_id == node_id
    current = (
        HealthEvent.select()
        .where(owner, HealthEvent.kind == kind, HealthEvent.state.in_(UNRESOLVED))
        .order_by(HealthEvent.first_seen.desc())
        .first()
    )
    if state == "open":
        if current is not None:
            HealthEvent.update(
                count=HealthEvent.count + 1,
                last_seen=at,
                details=details,
                severity=severity if severity in SEVERITIES else current.severity,
            ).where(HealthEvent.id == current.id).execute()
            return HealthEvent.get_by_id(current.id), "repeated"
        event = HealthEvent.create(
            id=new_id("hev"),
            node_id=node_id,
            site=site,
            kind=kind[:100],
            severity=severity if severity in SEVERITIES else "warning",
            state="open",
            first_seen=at,
            last_seen=at,
            count=1,
            details=details,
        )
        return event, "opened"
    if current is None or current.state == "acknowledged":
        # Nothing open, or someone took ownership: an acknowledged event stays until they resolve it.
        return current, None
    HealthEvent.update(state="resolved", resolved_at=at, last_seen=at).where(HealthEvent.id == current.id).execute()
    return HealthEvent.get_by_id(current.id), "resolved"


def has_open_critical(node_id: str) -> bool:
    return (
        HealthEvent.select()
        .where(
            HealthEvent.node_id == node_id, HealthEvent.severity == "critical", HealthEvent.state.in_(("open", "acknowledged"))
        )
        .exists()
    )


ACTIONS = ("acknowledge", "suppress", "resolve", "reopen")


def _allowed(event: HealthEvent, action: str) -> str | None:
    """Why `action` cannot be taken on `event` now, or None."""
    if action == "acknowledge" and event.state != "open":
        return f"only an open event can be acknowledged (this one is {event.state})"
    if action == "suppress" and event.state not in ("open", "acknowledged"):
        return f"only an open or acknowledged event can be suppressed (this one is {event.state})"
    if action == "resolve" and event.state == "resolved":
        return "already resolved"
    if action == "reopen" and event.state != "resolved":
        return "only a resolved event can be reopened"
    return None


def event_actions(event: HealthEvent) -> dict[str, dict[str, Any]]:
    return {a: {"allowed": (why := _allowed(event, a)) is None, "reason": why} for a in ACTIONS}


def apply_action(event: HealthEvent, action: str, who: str, at: datetime, until: datetime | None) -> dict[str, Any]:
    """Change one event's state by hand; raises ValueError naming why it is not allowed."""
    why = _allowed(event, action)
    if why is not None:
        raise ValueError(why)
    fields: dict[str, Any]
    if action == "acknowledge":
        fields = {"state": "acknowledged", "acknowledged_by": who[:200], "acknowledged_at": at}
    elif action == "suppress":
        if until is None or until <= at:
            raise ValueError("suppress needs `until`, a time in the future")
        fields = {"state": "suppressed", "suppressed_until": until}
    elif action == "resolve":
        fields = {"state": "resolved", "resolved_at": at}
    else:
        fields = {
            "state": "open",
            "resolved_at": None,
            "acknowledged_by": None,
            "acknowledged_at": None,
            "suppressed_until": None,
        }
    HealthEvent.update(**fields).where(HealthEvent.id == event.id).execute()
    return event_to_api(HealthEvent.get_by_id(event.id))


def step_to_api(step: HealthEventStep) -> dict[str, Any]:
    """One step on an event's timeline (a remediation the node ran or skipped)."""
    return {
        "at": iso(step.at),
        "type": step.type,
        "detector": step.detector,
        "step": step.step,
        "action": step.action,
        "outcome": step.outcome,
        "reason": step.reason,
        "output": step.output,
    }
