"""The node inventory: enrollment, credentials, reads, edits and deletion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hark_fleet.hub.auth.principal import Grant, Principal, SiteScope
from hark_fleet.hub.auth.tokens import new_secret, secret_hash
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import (
    ChannelMapAssignment,
    HealthEvent,
    LifecycleJob,
    Node,
    NodeStatusChange,
    ReceivedMessage,
    database_proxy,
)
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import node_delete, technician
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.auth import TokenCheck
from hark_fleet.hub.services.history import delete_node_history
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.hub.services.users import check_sites

NODE_STATUSES = ("pending", "online", "degraded", "offline")
CREDENTIAL_PREFIX = "hkn"
NODE_GRANTS = (Grant(frozenset({"node:control"}), None),)
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
NAME_MAX = 200


def node_to_api(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "site": node.site,
        "tags": list(node.tags or []),
        "status": node.status,
        "last_seen_at": iso(node.last_seen_at),
        "connected_at": iso(node.connected_at),
        "version": node.version,
        "hardware_id": node.hardware_id,
        "hardware": node.hardware or {},
        "interfaces": node.interfaces or [],
        "capacity": node.capacity or {},
        "metrics": node.metrics or {},
        "time_quality": node.time_quality,
        "clock_offset_ms": node.clock_offset_ms,
        "heartbeat_interval_s": node.heartbeat_interval_s,
        "reported_heartbeat_interval_s": node.reported_heartbeat_interval_s,
        "created_at": iso(node.created_at),
    }


NODE_LIST = ListSpec(
    model=Node,
    serialize=node_to_api,
    filters=(
        Filter("status", Node.status, one_of(NODE_STATUSES)),
        Filter("site", Node.site),
        Filter("tag", Node.tags, contains=True),
        Filter("version", Node.version),
        Filter("time_quality", Node.time_quality),
        Filter("hardware_id", Node.hardware_id, facet=False),
    ),
    search=(Node.name, Node.site, Node.hardware_id),
    time_field=Node.created_at,
    site_field=Node.site,
    export_columns=("id", "name", "site", "tags", "status", "last_seen_at", "version", "time_quality", "created_at"),
)


def get_node(node_id: str, scope: SiteScope) -> Node:
    """A node inside the caller's sites, or 404 (also for nodes of other sites)."""
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    return node


def _check_tags(tags: list[str]) -> list[str]:
    bad = [t for t in tags if not TAG.fullmatch(t)]
    if bad:
        raise InvalidRequest(
            "Invalid tags.", fields={"tags": f"not tags: {', '.join(bad[:5])} (letters, digits, _ . : -; 64 at most)"}
        )
    return list(dict.fromkeys(tags))


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX or any(ord(c) < 32 for c in name):
        raise InvalidRequest("Invalid node name.", fields={"name": f"1-{NAME_MAX} printable characters"})
    return name


def _check_site(site: str | None, scope: SiteScope) -> str | None:
    if site is None:
        if scope.sites is not None:
            raise InvalidRequest("Choose a site.", fields={"site": "you may only manage nodes of your sites"})
        return None
    checked = check_sites([site], "site")
    assert checked is not None
    if not scope.allows(checked[0]):
        raise InvalidRequest("Not one of your sites.", fields={"site": "you may only manage nodes of your sites"})
    return checked[0]


@dataclass(frozen=True, slots=True)
class Enrollment:
    node: dict[str, Any]
    credential: str


@dataclass(frozen=True, slots=True)
class Rotation:
    """A new credential, when the one it replaces stops working, and that one's hash (a delivery names it)."""

    enrollment: Enrollment
    old_valid_until: datetime | None
    replaced_sha256: str | None


def enroll(actor: Actor, scope: SiteScope, name: str, site: str | None, tags: list[str], hardware_id: str | None) -> Enrollment:
    """A new node and its credential (shown once; only its hash is kept)."""
    name, site, tags = _check_name(name), _check_site(site, scope), _check_tags(tags)
    if hardware_id is not None and (not 1 <= len(hardware_id) <= 200):
        raise InvalidRequest("Invalid hardware id.", fields={"hardware_id": "1-200 characters"})
    if hardware_id and Node.select().where(Node.hardware_id == hardware_id).exists():
        raise Conflict(f"A node with hardware id {hardware_id} is enrolled already.")
    credential = new_secret(CREDENTIAL_PREFIX)
    now = utcnow()
    with database_proxy.atomic():
        node = Node.create(
            id=new_id("nod"),
            name=name,
            site=site,
            tags=tags,
            status="pending",
            hardware_id=hardware_id,
            credential_hash=secret_hash(credential),
            created_at=now,
            updated_at=now,
        )
        NodeStatusChange.create(
            id=new_id("nsc"), node_id=node.id, at=now, from_status=None, to_status="pending", reason="enrolled"
        )
        after = node_to_api(node)
        record(actor, "node.enroll", permission="node:manage", target=("node", node.id), after=after)
    return Enrollment(after, credential)


def rotate_credential(actor: Actor, scope: SiteScope, node_id: str, grace_s: int) -> Rotation:
    """A new credential; the old one stops at once, or after `grace_s` seconds."""
    if not 0 <= grace_s <= 7 * 86400:
        raise InvalidRequest("Invalid grace period.", fields={"grace_s": "0 to 604800 seconds"})
    node = get_node(node_id, scope)
    replaced = node.credential_hash
    credential = new_secret(CREDENTIAL_PREFIX)
    valid_until = utcnow() + timedelta(seconds=grace_s) if grace_s else None
    with database_proxy.atomic():
        Node.update(
            credential_hash=secret_hash(credential),
            previous_credential_hash=node.credential_hash if grace_s else None,
            previous_valid_until=valid_until,
            updated_at=utcnow(),
        ).where(Node.id == node.id).execute()
        node = Node.get_by_id(node.id)
        after = node_to_api(node)
        record(
            actor,
            "node.credentials.rotate",
            permission="node:manage",
            target=("node", node.id),
            after={"grace_s": grace_s, "old_valid_until": iso(valid_until)},
        )
    return Rotation(Enrollment(after, credential), valid_until, replaced)


def authenticate_node(credential: str) -> TokenCheck:
    digest = secret_hash(credential)
    node = Node.get_or_none(Node.credential_hash == digest)
    if node is None:
        node = Node.get_or_none(Node.previous_credential_hash == digest)
        if node is None or node.previous_valid_until is None or node.previous_valid_until <= utcnow():
            return TokenCheck(None, "unknown")
    return TokenCheck(Principal("node", node.id, node.name, NODE_GRANTS))


def credential_table() -> dict[str, tuple[str | None, str | None, datetime | None]]:
    """node id -> (credential hash, previous hash, previous valid until): what the embedded broker checks."""
    rows = Node.select(Node.id, Node.credential_hash, Node.previous_credential_hash, Node.previous_valid_until)
    return {n.id: (n.credential_hash, n.previous_credential_hash, n.previous_valid_until) for n in rows}


def update_node(actor: Actor, scope: SiteScope, node_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    node = get_node(node_id, scope)
    before = node_to_api(node)
    fields: dict[str, Any] = {"updated_at": utcnow()}
    if "name" in changes:
        fields["name"] = _check_name(changes["name"])
    if "site" in changes:
        fields["site"] = _check_site(changes["site"], scope)
    if "tags" in changes:
        fields["tags"] = _check_tags(changes["tags"])
    if "heartbeat_interval_s" in changes:
        interval = changes["heartbeat_interval_s"]
        if not 1 <= interval <= 3600:
            raise InvalidRequest("Invalid heartbeat interval.", fields={"heartbeat_interval_s": "1 to 3600 seconds"})
        fields["heartbeat_interval_s"] = float(interval)
    if "technician_pin_hash" in changes:  # hashed by the caller; only "set" or "cleared" reaches the audit log
        fields["settings"] = technician.pin_settings(dict(node.settings or {}), changes["technician_pin_hash"])
        before["technician_pin"] = "set" if technician.PIN_SETTING in (node.settings or {}) else "none"
    with database_proxy.atomic():
        Node.update(**fields).where(Node.id == node.id).execute()
        after = node_to_api(Node.get_by_id(node.id))
        audited = dict(after)
        if "technician_pin_hash" in changes:
            audited["technician_pin"] = "set" if changes["technician_pin_hash"] else "none"
        record(actor, "node.update", permission="node:manage", target=("node", node.id), before=before, after=audited)
    return after


def update_interface(actor: Actor, scope: SiteScope, node_id: str, interface_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Label or enable/disable one audio interface the node reported."""
    node = get_node(node_id, scope)
    interfaces = [dict(i) for i in node.interfaces or []]
    match = next((i for i in interfaces if i.get("id") == interface_id), None)
    if match is None:
        raise NotFound(f"Node {node_id} reports no interface {interface_id}.")
    before = dict(match)
    if "label" in changes:
        label = changes["label"]
        if label is not None and len(label) > 100:
            raise InvalidRequest("Invalid label.", fields={"label": "at most 100 characters"})
        match["label"] = label
    if "enabled" in changes:
        match["enabled"] = bool(changes["enabled"])
    with database_proxy.atomic():
        Node.update(interfaces=interfaces, updated_at=utcnow()).where(Node.id == node.id).execute()
        record(actor, "node.interface.update", permission="node:manage", target=("node", node.id), before=before, after=match)
    return match


def delete_preview(scope: SiteScope, node_id: str) -> dict[str, Any]:
    """What deleting a node would remove, what stands in its way (named), and whether it needs `?force`."""
    node = get_node(node_id, scope)
    blockers, counts = node_delete.find_blockers(node.id)
    open_events = counts["health_events"]
    dependents = {
        "health_events": HealthEvent.select().where(HealthEvent.node_id == node.id).count(),
        "open_health_events": open_events,
        "status_changes": NodeStatusChange.select().where(NodeStatusChange.node_id == node.id).count(),
        "unfinished_recording_jobs": counts["recording_jobs"],
        "unfinished_lifecycle_jobs": counts["lifecycle_jobs"],
        "active_recordings": counts["active_recordings"],
        "pending_uploads": counts["pending_uploads"],
    }
    reasons = []
    if node.status in ("online", "degraded"):
        reasons.append(f"the node is {node.status}")
    if open_events:
        reasons.append(f"{open_events} open health event{'' if open_events == 1 else 's'}")
    if counts["recording_jobs"]:
        jobs = counts["recording_jobs"]
        reasons.append(f"{jobs} recording{'' if jobs == 1 else 's'} queued, in progress or still uploading")
    if counts["lifecycle_jobs"]:
        jobs = counts["lifecycle_jobs"]
        reasons.append(f"{jobs} lifecycle job{'' if jobs == 1 else 's'} queued or running")
    return {
        "node": node_to_api(node),
        "dependents": dependents,
        "blockers": blockers,
        "requires_force": bool(reasons),
        "reasons": reasons,
    }


def _blocker_counts(dependents: dict[str, int]) -> dict[str, int]:
    names = ("unfinished_recording_jobs", "unfinished_lifecycle_jobs", "pending_uploads", "open_health_events")
    return {name: dependents[name] for name in names}


def delete_node(actor: Actor, scope: SiteScope, node_id: str, force: bool) -> tuple[dict[str, Any], list[FleetEvent], list[str]]:
    """Delete a node; with `force`, end what stands in the way first (each audited).

    Returns the node as it was, the events to publish, and the recordings whose partial uploads to drop.
    """
    with database_proxy.atomic():
        preview = delete_preview(scope, node_id)
        if preview["requires_force"] and not force:
            named = node_delete.named(preview["blockers"])
            blocking = f" Blocking: {node_delete.message_naming(named)}." if named else ""
            raise Conflict(
                f"Deleting this node needs ?force=true: {'; '.join(preview['reasons'])}.{blocking}",
                reasons=preview["reasons"],
                blockers=preview["blockers"],
            )
        events, uploads = node_delete.end_blockers(actor, node_id, utcnow()) if force else ([], [])
        HealthEvent.delete().where(HealthEvent.node_id == node_id).execute()
        LifecycleJob.delete().where(LifecycleJob.node_id == node_id).execute()
        ChannelMapAssignment.delete().where(ChannelMapAssignment.node_id == node_id).execute()
        NodeStatusChange.delete().where(NodeStatusChange.node_id == node_id).execute()
        ReceivedMessage.delete().where(ReceivedMessage.node_id == node_id).execute()
        delete_node_history(node_id)
        Node.delete().where(Node.id == node_id).execute()
        record(
            actor,
            "node.delete",
            permission="node:manage",
            target=("node", node_id),
            before=preview["node"],
            after={"forced": force, "blockers_ended": _blocker_counts(preview["dependents"]) if force else None},
        )
    return preview["node"], events, uploads


def node_actions(node: Node, principal: Principal) -> dict[str, dict[str, Any]]:
    """Which actions the caller may take on this node now, and why not."""
    manage = principal.can("node:manage") and principal.scope("node:manage").allows(node.site)

    def state(allowed: bool, reason: str | None) -> dict[str, Any]:
        return {"allowed": allowed, "reason": None if allowed else reason}

    no_right = "needs node:manage on this node's site"
    return {
        "update": state(manage, no_right),
        "rotate_credentials": state(manage, no_right),
        "lifecycle": state(manage, no_right),
        "delete": state(manage, no_right),
    }


def node_detail(scope: SiteScope, node_id: str, principal: Principal) -> dict[str, Any]:
    node = get_node(node_id, scope)
    changes = NodeStatusChange.select().where(NodeStatusChange.node_id == node.id).order_by(NodeStatusChange.id.desc()).limit(20)
    return {
        **node_to_api(node),
        "status_changes": [{"at": iso(c.at), "from": c.from_status, "to": c.to_status, "reason": c.reason} for c in changes],
        "actions": node_actions(node, principal),
    }
