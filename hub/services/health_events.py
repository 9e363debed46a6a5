"""Working through health events by hand: create, acknowledge, suppress, resolve, reopen, in bulk too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import AuditEvent, HealthEvent, HealthEventStep, Node, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.health import (
    ACTIONS,
    SEVERITIES,
    apply_action,
    event_actions,
    event_to_api,
    report_hub_condition,
    step_to_api,
)
from hark_fleet.hub.services.listing import get_scoped
from hark_fleet.hub.services.telemetry import FleetEvent, refresh_node_status

MAX_BULK = 500
MAX_TIMELINE = 500
# Audit actions that change an event's state, and the timeline entry each makes.
TIMELINE_ACTIONS = {
    "health.opened": "opened",
    "health.create": "opened",
    "health.acknowledge": "acknowledged",
    "health.suppress": "suppressed",
    "health.resolve": "resolved",
    "health.resolved": "resolved",
    "health.reopen": "reopened",
}


def get_event(scope: SiteScope, event_id: str) -> HealthEvent:
    event: HealthEvent = get_scoped(HealthEvent, event_id, HealthEvent.site, scope)
    return event


def event_detail(scope: SiteScope, event_id: str) -> dict[str, Any]:
    event = get_event(scope, event_id)
    return {**event_to_api(event), "actions": event_actions(event), "timeline": timeline(event)}


def timeline(event: HealthEvent) -> list[dict[str, Any]]:
    """What happened to an event, oldest first: opened, remediation steps, acknowledged, suppressed, resolved, reopened."""
    entries: list[dict[str, Any]] = []
    changes = (
        AuditEvent.select()
        .where(
            AuditEvent.target_type == "health_event",
            AuditEvent.target_id == event.id,
            AuditEvent.action.in_(sorted(TIMELINE_ACTIONS)),
        )
        .order_by(AuditEvent.at, AuditEvent.id)
        .limit(MAX_TIMELINE)
    )
    for change in changes:
        entry: dict[str, Any] = {
            "at": iso(change.at),
            "type": TIMELINE_ACTIONS[change.action],
            "actor": {"type": change.actor_type, "id": change.actor_id, "name": change.actor_name},
        }
        if change.reason:
            entry["reason"] = change.reason
        if entry["type"] == "suppressed" and isinstance(change.after, dict):
            entry["until"] = change.after.get("suppressed_until")
        entries.append(entry)
    opened = next((e for e in entries if e["type"] == "opened"), None)
    if opened is None:  # opened before its audit line was written (or by the hub itself)
        entries.insert(0, {"at": iso(event.first_seen), "type": "opened", "actor": None})
    else:  # when the node saw it (its steps carry the node's times too), not when the hub stored it
        opened["at"] = iso(event.first_seen)
    steps = HealthEventStep.select().where(HealthEventStep.event_id == event.id).order_by(HealthEventStep.at, HealthEventStep.id)
    for step in steps.limit(MAX_TIMELINE):
        actor = {"type": "node", "id": step.node_id, "name": None} if step.node_id else None
        entries.append({**step_to_api(step), "actor": actor})
    entries.sort(key=lambda e: (e["at"] or "", e["type"] != "opened"))
    return entries


def _after_change(node_id: str | None, at: datetime, events: list[FleetEvent]) -> None:
    if node_id is not None:
        node = Node.get_or_none(Node.id == node_id)
        if node is not None:
            refresh_node_status(node, at, events)


def create_event(
    actor: Actor, scope: SiteScope, node_id: str | None, kind: str, severity: str, details: dict[str, Any]
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """A health event raised at the hub (by a user or an integration)."""
    problems = {}
    if not 1 <= len(kind) <= 100 or not kind.replace(".", "").replace("_", "").replace("-", "").isalnum():
        problems["kind"] = "1-100 characters: letters, digits, . _ -"
    if severity not in SEVERITIES:
        problems["severity"] = f"must be one of {', '.join(SEVERITIES)}"
    if problems:
        raise InvalidRequest("The health event is invalid.", fields=problems)
    site = None
    if node_id is not None:
        node = get_scoped(Node, node_id, Node.site, scope)
        site = node.site
    elif scope.sites is not None:
        raise InvalidRequest("Name a node of your sites.", fields={"node_id": "required for a site-limited caller"})
    at = utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        event = HealthEvent.create(
            id=new_id("hev"),
            node_id=node_id,
            site=site,
            kind=kind,
            severity=severity,
            state="open",
            first_seen=at,
            last_seen=at,
            count=1,
            details=details,
        )
        after = event_to_api(event)
        record(actor, "health.create", permission="health:acknowledge", target=("health_event", event.id), after=after)
        events.append(FleetEvent("health.opened", site, after))
        _after_change(node_id, at, events)
    return after, events


def hub_condition(kind: str, state: str, severity: str, details: dict[str, Any]) -> list[FleetEvent]:
    """Open or resolve one of the hub's own conditions (no node, no site), audited as the hub like a node's."""
    with database_proxy.atomic():
        event, what = report_hub_condition(kind, state, severity, details, utcnow())
        if what is None or event is None:
            return []
        after = event_to_api(event)
        if what != "repeated":
            record(SYSTEM, f"health.{what}", target=("health_event", event.id), after=after)
    return [FleetEvent(f"health.{what}", None, after)]


def act(
    actor: Actor, scope: SiteScope, event_id: str, action: str, until: datetime | None
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """One lifecycle action on one event, audited; node status follows critical events."""
    if action not in ACTIONS:
        raise InvalidRequest("Unknown action.", fields={"action": f"must be one of {', '.join(ACTIONS)}"})
    event = get_event(scope, event_id)
    before = event_to_api(event)
    at = utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        try:
            after = apply_action(event, action, actor.name or actor.id or "unknown", at, until)
        except ValueError as err:
            raise Conflict(f"Cannot {action} this event: {err}.") from err
        past = {"acknowledge": "acknowledged", "suppress": "suppressed", "resolve": "resolved", "reopen": "reopened"}[action]
        record(
            actor,
            f"health.{action}",
            permission="health:acknowledge",
            target=("health_event", event.id),
            before=before,
            after=after,
        )
        events.append(FleetEvent(f"health.{past}", event.site, after))
        _after_change(event.node_id, at, events)
    return after, events


def bulk(
    actor: Actor, scope: SiteScope, ids: list[str], action: str, until: datetime | None
) -> tuple[list[dict[str, Any]], list[FleetEvent]]:
    """The same action on many events; each answers on its own (`ok` or `error`)."""
    if not 1 <= len(ids) <= MAX_BULK:
        raise InvalidRequest("Too many or no ids.", fields={"ids": f"1 to {MAX_BULK} event ids"})
    if action not in ACTIONS:  # the request is wrong, not each event: one 400
        raise InvalidRequest("Unknown action.", fields={"action": f"must be one of {', '.join(ACTIONS)}"})
    results: list[dict[str, Any]] = []
    events: list[FleetEvent] = []
    for event_id in dict.fromkeys(ids):
        try:
            after, caused = act(actor, scope, event_id, action, until)
        except (Conflict, InvalidRequest) as err:
            results.append({"id": event_id, "ok": False, "error": {"code": err.code, "message": err.message}})
            continue
        except Exception as err:  # noqa: BLE001 - NotFound and the like: reported per id
            results.append({"id": event_id, "ok": False, "error": {"code": getattr(err, "code", "error"), "message": str(err)}})
            continue
        results.append({"id": event_id, "ok": True, "event": after})
        events += caused
    return results, events


def end_suppressions(at: datetime | None = None) -> list[FleetEvent]:
    """Suppressed events whose `suppressed_until` has passed come back `open` (the condition was not resolved
    meanwhile, or they would be resolved): audited as the hub's `health.reopen`, published as `health.reopened`."""
    at = at or utcnow()
    events: list[FleetEvent] = []
    with database_proxy.atomic():
        due = HealthEvent.select().where(HealthEvent.state == "suppressed", HealthEvent.suppressed_until <= at)
        for event in list(due.limit(MAX_BULK)):
            before = event_to_api(event)
            HealthEvent.update(state="open", suppressed_until=None).where(
                HealthEvent.id == event.id, HealthEvent.state == "suppressed"
            ).execute()
            after = event_to_api(HealthEvent.get_by_id(event.id))
            reason = "its suppression ended"
            record(SYSTEM, "health.reopen", target=("health_event", event.id), before=before, after=after, reason=reason)
            events.append(FleetEvent("health.reopened", event.site, after))
            _after_change(event.node_id, at, events)
    return events
