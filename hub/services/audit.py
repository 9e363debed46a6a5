"""The audit log: who did what to which object, with the state before and after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import peewee
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import (
    AuditEvent,
    HealthEvent,
    LifecycleJob,
    ListenSession,
    Node,
    NotificationChannel,
    Recording,
    RecordingJob,
    Schedule,
    ShareLink,
    UploadItem,
)
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of

ActorType = Literal["user", "key", "node", "technician", "system", "anonymous"]
OUTCOMES = ("success", "failure")
SECRET_KEYS = frozenset(
    {"password", "password_hash", "secret", "secret_hash", "token", "token_hash", "credential", "credential_hash"}
)
# Targets that belong to a site (an event about anything else is hub-wide).
SITED_TARGETS: dict[str, type[peewee.Model]] = {
    "node": Node,
    "recording": Recording,
    "recording_job": RecordingJob,
    "health_event": HealthEvent,
    "lifecycle_job": LifecycleJob,
    "schedule": Schedule,
    "upload_item": UploadItem,  # issue 20: an upload's site is its recording's
    "notification_channel": NotificationChannel,  # issue 21: a site's channel is audited on that site
    "listen_session": ListenSession,  # issue 23: a listen is audited on its node's site
    "share_link": ShareLink,  # issue 23: a share link on its recording's site
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a change, and from where."""

    type: ActorType
    id: str | None
    name: str | None
    source_ip: str | None = None

    @classmethod
    def of(cls, principal: Principal | None, source_ip: str | None) -> Actor:
        if principal is None:
            return cls("anonymous", None, None, source_ip)
        return cls(principal.kind, principal.id, principal.name, source_ip)


SYSTEM = Actor("system", None, "hub")


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def _recorded_site(value: Any) -> str | None:
    site = value.get("site") if isinstance(value, dict) else None
    return site if isinstance(site, str) else None


def target_site(target: tuple[str, str | None] | None, before: Any = None, after: Any = None) -> str | None:
    """The site of an event's target: the target's own if it still exists, else the one its contents recorded."""
    if target is None or target[1] is None or target[0] not in SITED_TARGETS:
        return None
    model: Any = SITED_TARGETS[target[0]]
    row = model.select(model.site).where(model.id == target[1]).first()
    if row is not None:
        return row.site
    return _recorded_site(after) or _recorded_site(before)


def record(
    actor: Actor,
    action: str,
    *,
    permission: str | None = None,
    target: tuple[str, str | None] | None = None,
    before: Any = None,
    after: Any = None,
    outcome: Literal["success", "failure"] = "success",
    reason: str | None = None,
) -> AuditEvent:
    """Write one audit event, with its target's site (call it inside the mutation's transaction)."""
    return AuditEvent.create(
        id=new_id("aud"),
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=(actor.name or "")[:200] or None,
        permission=permission,
        action=action,
        target_type=target[0] if target else None,
        target_id=target[1] if target else None,
        site=target_site(target, before, after),
        before=_without_secrets(before),
        after=_without_secrets(after),
        outcome=outcome,
        reason=reason,
        source_ip=(actor.source_ip or "")[:64] or None,
    )


def audit_to_api(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": {"type": event.actor_type, "id": event.actor_id, "name": event.actor_name},
        "permission": event.permission,
        "action": event.action,
        "target": {"type": event.target_type, "id": event.target_id} if event.target_type else None,
        "site": event.site,
        "before": event.before,
        "after": event.after,
        "outcome": event.outcome,
        "reason": event.reason,
        "source_ip": event.source_ip,
    }


AUDIT_LIST = ListSpec(
    model=AuditEvent,
    serialize=audit_to_api,
    filters=(
        Filter("action", AuditEvent.action),
        Filter("actor_id", AuditEvent.actor_id),
        Filter("actor_type", AuditEvent.actor_type),
        Filter("target_id", AuditEvent.target_id),
        Filter("target_type", AuditEvent.target_type),
        Filter("outcome", AuditEvent.outcome, one_of(OUTCOMES)),
        Filter("permission", AuditEvent.permission),
        Filter("site", AuditEvent.site),
    ),
    search=(AuditEvent.action, AuditEvent.actor_name, AuditEvent.target_id),
    time_field=AuditEvent.at,
    site_field=AuditEvent.site,
    owner_field=AuditEvent.actor_id,
    descending=True,
    export_columns=(
        "id",
        "at",
        "actor",
        "permission",
        "action",
        "target",
        "site",
        "outcome",
        "reason",
        "source_ip",
        "before",
        "after",
    ),
)


def reader_scope(principal: Principal, scope: SiteScope) -> SiteScope:
    """Where an audit reader looks: its sites' events and its own actions; an unlimited reader sees all."""
    if scope.sites is None:
        return scope
    return SiteScope(scope.sites, owner=principal.id)
