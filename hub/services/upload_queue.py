"""The upload queue (issue 20): one item per recording and provider, `pending -> queued -> uploading -> synced | failed`.

Items are made here: by the enabled policies a recording matches once it is on the hub (`enqueue_for_recording`, called
after the recording's upload completes, and for direct-route policies already when capture ends on the node), by hand
(`enqueue_manual`, `bulk_enqueue`) and when a policy is applied to the recordings already there (`apply_policy`). A
new item is `pending` ("waiting for the runner"); the transitions after that belong to `hub.services.upload_runs`,
except `retry` (failed -> pending). Enqueueing is idempotent: the table holds one item per (recording, provider), so
a second call, a second matching policy or a race leaves the first item as it is. Reads and writes are site-scoped by
the item's site (the recording's).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, Recording, Site, UploadItem, UploadPolicy, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import recordings_library
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import (
    Filter,
    ListRequest,
    ListSpec,
    build_query,
    fetch_page,
    get_scoped,
    one_of,
    parse_list_request,
)
from hark_fleet.hub.services.upload_keys import DEFAULT_TEMPLATE, KeyValues, render_key
from hark_fleet.hub.services.upload_policies import ENDED_STATUSES, ROUTES, criteria_of, get_policy

log = logging.getLogger(__name__)

CONTROL = "recording:control"
STATES = ("pending", "queued", "uploading", "synced", "failed")
WAITING = "waiting for the runner"
MAX_BULK = 500
MAX_PROVIDERS = 20


# -- the item as the API shows it -----------------------------------------------------------------------------


def _actions(item: UploadItem) -> dict[str, dict[str, Any]]:
    why = None if item.state == "failed" else f"only a failed upload is retried (this one is {item.state})"
    return {"retry": {"allowed": why is None, "reason": why}}


def _progress(item: UploadItem) -> float | None:
    if item.state == "synced":
        return 1.0
    if not item.bytes_total:
        return None
    return round(min(1.0, max(0.0, (item.bytes_sent or 0) / item.bytes_total)), 4)


def item_to_api(item: UploadItem, recording: Recording | None = None, provider: UploadProvider | None = None) -> dict[str, Any]:
    """The item as the API, the events and the export show it (the recording's and provider's names looked up)."""
    if recording is None:
        recording = Recording.select(Recording.id, Recording.name).where(Recording.id == item.recording_id).first()
    if provider is None:
        provider = (
            UploadProvider.select(UploadProvider.id, UploadProvider.name, UploadProvider.kind)
            .where(UploadProvider.id == item.provider_id)
            .first()
        )
    return _api(item, recording, provider)


def _api(item: UploadItem, recording: Recording | None, provider: UploadProvider | None) -> dict[str, Any]:
    return {
        "id": item.id,
        "recording_id": item.recording_id,
        "recording_name": recording.name if recording is not None else None,
        "provider_id": item.provider_id,
        "provider_name": provider.name if provider is not None else None,
        "provider_kind": provider.kind if provider is not None else None,
        "policy_id": item.policy_id,
        "site": item.site,
        "node_id": item.node_id,
        "route": item.route,
        "state": item.state,
        "state_reason": item.state_reason,
        "attempts": item.attempts,
        "bytes_total": item.bytes_total,
        "bytes_sent": item.bytes_sent,
        "progress": _progress(item),
        "last_error": item.last_error,
        "remote_key": item.remote_key,
        "checksum_sha256": item.checksum_sha256,
        "verified_by": item.verified_by,
        "next_attempt_at": iso(item.next_attempt_at),
        "started_at": iso(item.started_at),
        "synced_at": iso(item.synced_at),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "actions": _actions(item),
    }


QUEUE_LIST = ListSpec(
    model=UploadItem,
    serialize=item_to_api,
    filters=(
        Filter("state", UploadItem.state, one_of(STATES)),
        Filter("provider_id", UploadItem.provider_id),
        Filter("policy_id", UploadItem.policy_id),
        Filter("site", UploadItem.site),
        Filter("node_id", UploadItem.node_id),
        Filter("route", UploadItem.route, one_of(ROUTES)),
        Filter("recording_id", UploadItem.recording_id, facet=False),
    ),
    search=(UploadItem.recording_id, UploadItem.remote_key, UploadItem.last_error, UploadItem.state_reason),
    time_field=UploadItem.created_at,
    site_field=UploadItem.site,
    descending=True,
    export_columns=(
        "id",
        "recording_id",
        "recording_name",
        "provider_id",
        "provider_name",
        "provider_kind",
        "policy_id",
        "site",
        "node_id",
        "route",
        "state",
        "state_reason",
        "attempts",
        "bytes_total",
        "bytes_sent",
        "last_error",
        "remote_key",
        "checksum_sha256",
        "verified_by",
        "next_attempt_at",
        "started_at",
        "synced_at",
        "created_at",
        "updated_at",
    ),
)


def items_to_api(items: Sequence[UploadItem]) -> list[dict[str, Any]]:
    """`item_to_api` of many items, their recordings' names and providers read in two queries."""
    recording_ids = list({i.recording_id for i in items})
    provider_ids = list({i.provider_id for i in items})
    recordings = (
        {r.id: r for r in Recording.select(Recording.id, Recording.name).where(Recording.id.in_(recording_ids))}
        if recording_ids
        else {}
    )
    providers = (
        {
            p.id: p
            for p in UploadProvider.select(UploadProvider.id, UploadProvider.name, UploadProvider.kind).where(
                UploadProvider.id.in_(provider_ids)
            )
        }
        if provider_ids
        else {}
    )
    return [_api(i, recordings.get(i.recording_id), providers.get(i.provider_id)) for i in items]


def queue_page(request: ListRequest, scope: SiteScope) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the queue (as `fetch_page` with QUEUE_LIST, without a lookup per item)."""
    rows, next_cursor = fetch_page(dataclasses.replace(QUEUE_LIST, serialize=lambda row: row), request, scope)
    return items_to_api(cast(list[UploadItem], rows)), next_cursor


def get_item(scope: SiteScope, item_id: str) -> UploadItem:
    item: UploadItem = get_scoped(UploadItem, item_id, UploadItem.site, scope)
    return item


def item_detail(scope: SiteScope, item_id: str) -> dict[str, Any]:
    """One item (404 outside the caller's sites) and what may be done to it now."""
    return item_to_api(get_item(scope, item_id))


def overview(scope: SiteScope) -> dict[str, Any]:
    """How the queue stands: items and bytes by state, overall and per provider (the sync status overview)."""
    base = build_query(QUEUE_LIST, parse_list_request(QUEUE_LIST, {}), scope)
    rows: Any = (
        base.select(
            UploadItem.provider_id,
            UploadItem.state,
            peewee.fn.COUNT(UploadItem.id),
            peewee.fn.SUM(UploadItem.bytes_total),
            peewee.fn.SUM(UploadItem.bytes_sent),
        )
        .group_by(UploadItem.provider_id, UploadItem.state)
        .tuples()
    )

    def empty() -> dict[str, dict[str, int]]:
        return {state: {"count": 0, "bytes": 0} for state in STATES}

    totals = empty()
    per_provider: dict[str, dict[str, dict[str, int]]] = {}
    sent = 0
    for provider_id, state, count, total_bytes, sent_bytes in rows:
        if state not in totals:
            continue
        for bucket in (totals, per_provider.setdefault(provider_id, empty())):
            bucket[state]["count"] += int(count)
            bucket[state]["bytes"] += int(total_bytes or 0)
        if state == "uploading":
            sent += int(sent_bytes or 0)
    providers = (
        {p.id: p for p in UploadProvider.select().where(UploadProvider.id.in_(list(per_provider)))} if per_provider else {}
    )
    backlog = ("pending", "queued", "uploading", "failed")
    return {
        "states": totals,
        "total": {
            "count": sum(v["count"] for v in totals.values()),
            "bytes": sum(v["bytes"] for v in totals.values()),
        },
        "backlog": {
            "count": sum(totals[s]["count"] for s in backlog),
            "bytes": sum(totals[s]["bytes"] for s in backlog) - sent,
        },
        "providers": [
            {
                "provider_id": pid,
                "provider_name": providers[pid].name if pid in providers else None,
                "provider_kind": providers[pid].kind if pid in providers else None,
                "enabled": bool(providers[pid].enabled) if pid in providers else False,
                "states": states,
            }
            for pid, states in sorted(per_provider.items(), key=lambda kv: providers[kv[0]].name if kv[0] in providers else kv[0])
        ],
    }


# -- making items ---------------------------------------------------------------------------------------------


def recording_tags(recording: Recording) -> set[str]:
    """The tags a policy's `tags` criterion looks for: the recording's own, in its metadata (as retention reads them)."""
    tags = (recording.metadata or {}).get("tags") if isinstance(recording.metadata, dict) else None
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


def ended_status(recording: Recording) -> str | None:
    """How the recording ended, for `statuses`: its status once on the hub, or what it will be while it uploads."""
    if recording.status in ENDED_STATUSES:
        return str(recording.status)
    if recording.status == "uploading":
        return "interrupted" if recording.interrupted else "completed"
    return None


def matches(policy: UploadPolicy, recording: Recording, tags: set[str]) -> bool:
    """Whether each of the policy's non-empty criteria matches the recording."""
    criteria = criteria_of(policy)
    if criteria["sites"] and recording.site not in criteria["sites"]:
        return False
    if criteria["node_ids"] and recording.node_id not in criteria["node_ids"]:
        return False
    if criteria["profile_ids"] and recording.profile_id not in criteria["profile_ids"]:
        return False
    if criteria["tags"] and not set(criteria["tags"]) <= tags:
        return False
    return ended_status(recording) in criteria["statuses"]


def _site_zone(site_id: str | None) -> str | None:
    if site_id is None:
        return None
    site = Site.select(Site.time_zone).where(Site.id == site_id).first()
    return str(site.time_zone) if site is not None else None


def _key_of(
    recording: Recording, node: Node | None, provider: UploadProvider, template: str, key_time_zone: str
) -> tuple[str | None, str | None]:
    """The item's remote key, or the reason it cannot be made."""
    values = KeyValues(
        recording_id=recording.id,
        node=recording.node_id,
        started_at=recording.started_at or recording.created_at,
        ext=recording.format,
        site=recording.site,
        node_name=node.name if node is not None else "",
        name=recording.name or "",
        profile=str((recording.profile or {}).get("name") or ""),
        schedule_id=recording.schedule_id,
    )
    prefix = str((provider.config or {}).get("prefix") or "") if provider.kind == "s3" else ""
    zone = _site_zone(recording.site) if key_time_zone == "site" else None
    try:
        return render_key(template, values, prefix, time_zone=zone), None
    except ValueError as err:
        return None, f"the object key cannot be made: {err}"


def _new_item(
    recording: Recording, node: Node | None, provider: UploadProvider, policy: UploadPolicy | None
) -> UploadItem | None:
    """Insert one pending item (None when the recording already has one for this provider)."""
    template = policy.key_template if policy is not None else DEFAULT_TEMPLATE
    key, problem = _key_of(recording, node, provider, template, policy.key_time_zone if policy is not None else "utc")
    now = utcnow()
    row = {
        "id": new_id("upi"),
        "recording_id": recording.id,
        "provider_id": provider.id,
        "policy_id": policy.id if policy is not None else None,
        "site": recording.site,
        "node_id": recording.node_id,
        "route": policy.route if policy is not None else "via_hub",
        "state": "failed" if problem else "pending",
        "state_reason": None if problem else WAITING,
        "last_error": problem,
        "bytes_total": recording.size_bytes,
        "remote_key": key,
        "created_at": now,
        "updated_at": now,
    }
    try:
        with database_proxy.atomic():  # a savepoint: a lost race leaves the caller's transaction usable
            return UploadItem.create(**row)
    except peewee.IntegrityError:
        return None


def _existing(recording_id: str) -> dict[str, UploadItem]:
    return {i.provider_id: i for i in UploadItem.select().where(UploadItem.recording_id == recording_id)}


def _providers(ids: Sequence[str]) -> dict[str, UploadProvider]:
    return {p.id: p for p in UploadProvider.select().where(UploadProvider.id.in_(list(ids)))} if ids else {}


def _matching_policies(recording: Recording, direct_only: bool) -> list[UploadPolicy]:
    tags = recording_tags(recording)
    policies = UploadPolicy.select().where(UploadPolicy.enabled == True).order_by(UploadPolicy.priority.desc(), UploadPolicy.id)  # noqa: E712
    return [p for p in policies if (not direct_only or p.route == "direct") and matches(p, recording, tags)]


def _enqueue_by_policies(recording: Recording, policies: Sequence[UploadPolicy]) -> tuple[list[UploadItem], list[UploadItem]]:
    """Items for each provider of each policy (higher priority first: a provider two policies name takes the first's).
    Returns (created, already there)."""
    node = Node.get_or_none(Node.id == recording.node_id)
    existing = _existing(recording.id)
    providers = _providers([pid for p in policies for pid in (p.provider_ids or [])])
    created: list[UploadItem] = []
    seen: list[UploadItem] = []
    for policy in policies:
        for pid in policy.provider_ids or []:
            if pid in existing:
                if existing[pid] not in seen:
                    seen.append(existing[pid])
                continue
            provider = providers.get(pid)
            if provider is None:
                continue  # deleted since the policy named it
            item = _new_item(recording, node, provider, policy)
            if item is not None:
                existing[pid] = item
                created.append(item)
    return created, seen


def _queued_events(items: Sequence[UploadItem]) -> list[FleetEvent]:
    return [FleetEvent("upload.enqueued", item.site, item_to_api(item)) for item in items]


def enqueue_for_recording(recording_id: str) -> list[FleetEvent]:
    """Queue a recording for every provider of every enabled policy it matches; idempotent.

    A recording on the hub (completed, interrupted) matches every route; one whose capture ended on its node and that is
    still uploading to the hub matches only direct-route policies (the node uploads from its own cache).
    """
    recording = Recording.get_or_none(Recording.id == recording_id)
    if recording is None or ended_status(recording) is None:
        return []
    direct_only = recording.status not in ENDED_STATUSES
    with database_proxy.atomic():
        created, _ = _enqueue_by_policies(recording, _matching_policies(recording, direct_only))
    return _queued_events(created)


def enqueue_safely(recording_id: str) -> list[FleetEvent]:
    """`enqueue_for_recording` for the recording paths: a problem here is logged, never the caller's failure."""
    try:
        return enqueue_for_recording(recording_id)
    except Exception:
        log.exception("could not queue recording %s for upload", recording_id)
        return []


def _check_provider_ids(provider_ids: Sequence[str] | None) -> dict[str, UploadProvider] | None:
    if provider_ids is None:
        return None
    if not 1 <= len(provider_ids) <= MAX_PROVIDERS:
        raise InvalidRequest(
            "The providers are invalid.", fields={"provider_ids": f"1 to {MAX_PROVIDERS} provider ids, or leave it out"}
        )
    providers = _providers(provider_ids)
    missing = [p for p in provider_ids if p not in providers]
    if missing:
        raise InvalidRequest(
            "The providers are invalid.", fields={"provider_ids": f"no such upload provider: {', '.join(missing[:5])}"}
        )
    return providers


def _enqueue_one(
    recording: Recording, providers: Mapping[str, UploadProvider] | None
) -> tuple[list[UploadItem], list[UploadItem]]:
    """Queue one recording on the hub to the given providers (each under the matching policy naming it, if any, else
    the default key and via the hub), or by its matching policies. Raises Conflict when there is nothing to do."""
    if recording.status not in ENDED_STATUSES:
        raise Conflict(f"The recording is {recording.status}: only a completed or interrupted recording is uploaded.")
    if recording.hub_evicted_at is not None:
        raise Conflict(
            "The hub's copy of this recording was evicted by retention: there is nothing here to upload.", code="evicted"
        )
    node = Node.get_or_none(Node.id == recording.node_id)
    policies = _matching_policies(recording, direct_only=False)
    if providers is None:
        if not policies:
            raise Conflict("No enabled upload policy matches this recording: name the providers.", code="no_policy")
        return _enqueue_by_policies(recording, policies)
    existing = _existing(recording.id)
    created: list[UploadItem] = []
    seen: list[UploadItem] = []
    for pid, provider in providers.items():
        if pid in existing:
            seen.append(existing[pid])
            continue
        policy = next((p for p in policies if pid in (p.provider_ids or [])), None)
        item = _new_item(recording, node, provider, policy)
        if item is not None:
            created.append(item)
        elif (
            again := UploadItem.get_or_none(UploadItem.recording_id == recording.id, UploadItem.provider_id == pid)
        ) is not None:
            seen.append(again)
    return created, seen


def _audit_enqueue(actor: Actor, recording: Recording, created: Sequence[UploadItem]) -> None:
    record(
        actor,
        "upload.enqueue",
        permission=CONTROL,
        target=("recording", recording.id),
        after={
            "site": recording.site,
            "items": [{"id": i.id, "provider_id": i.provider_id, "remote_key": i.remote_key} for i in created],
        },
    )


def enqueue_manual(
    actor: Actor, scope: SiteScope, recording_id: str, provider_ids: Sequence[str] | None
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """`POST /recordings/{id}/upload-queue`: the recording's items for the providers (made now or already there)."""
    providers = _check_provider_ids(list(dict.fromkeys(provider_ids)) if provider_ids is not None else None)
    recording: Recording = get_scoped(Recording, recording_id, Recording.site, scope)
    with database_proxy.atomic():
        created, seen = _enqueue_one(recording, providers)
        if created:
            _audit_enqueue(actor, recording, created)
    items = [item_to_api(i, recording) for i in [*created, *seen]]
    return {"items": items, "created": len(created)}, _queued_events(created)


def bulk_enqueue(
    actor: Actor,
    scope: SiteScope,
    recording_ids: Sequence[str] | None,
    filters: Mapping[str, str | Sequence[str]] | None,
    provider_ids: Sequence[str] | None,
) -> tuple[list[dict[str, Any]], list[FleetEvent]]:
    """`POST /bulk-upload-queue`: recordings by id or by a library filter (at most MAX_BULK); a result per recording."""
    if (recording_ids is None) == (filters is None):
        raise InvalidRequest("Name the recordings.", fields={"ids": "give ids or filter (one of them)"})
    providers = _check_provider_ids(list(dict.fromkeys(provider_ids)) if provider_ids is not None else None)
    if recording_ids is not None:
        ids = list(dict.fromkeys(recording_ids))
        if not 1 <= len(ids) <= MAX_BULK:
            raise InvalidRequest("Too many or no ids.", fields={"ids": f"1 to {MAX_BULK} recording ids"})
    else:
        assert filters is not None
        args = {k: [v] if isinstance(v, str) else list(v) for k, v in filters.items()}
        request = recordings_library.parse_library_request(args)
        found = build_query(recordings_library.RECORDING_LIST, request, scope)
        total = found.count()
        if total > MAX_BULK:
            raise InvalidRequest(
                "The filter matches too many recordings.", fields={"filter": f"matches {total}; at most {MAX_BULK}: narrow it"}
            )
        rows: Any = found.select(Recording.id).order_by(Recording.id).tuples()
        ids = [row[0] for row in rows]
    results: list[dict[str, Any]] = []
    events: list[FleetEvent] = []
    for rid in ids:
        try:
            recording: Recording = get_scoped(Recording, rid, Recording.site, scope)
            with database_proxy.atomic():
                created, seen = _enqueue_one(recording, providers)
                if created:
                    _audit_enqueue(actor, recording, created)
        except (Conflict, NotFound) as err:
            results.append({"id": rid, "ok": False, "error": {"code": err.code, "message": err.message}})
            continue
        events += _queued_events(created)
        results.append(
            {"id": rid, "ok": True, "items": [item_to_api(i, recording) for i in [*created, *seen]], "created": len(created)}
        )
    return results, events


def apply_policy(actor: Actor, policy_id: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """Queue the recordings already on the hub (or, for a direct policy, ended on their nodes) that a policy matches."""
    policy = get_policy(policy_id)
    if not policy.enabled:
        raise Conflict("The policy is disabled: enable it first.")
    criteria = criteria_of(policy)
    statuses = list(ENDED_STATUSES) + (["uploading"] if policy.route == "direct" else [])
    found = Recording.select().where(Recording.status.in_(statuses))
    if policy.route != "direct":
        found = found.where(Recording.hub_evicted_at.is_null())  # nothing left on the hub to send
    for name, field in (("sites", Recording.site), ("node_ids", Recording.node_id), ("profile_ids", Recording.profile_id)):
        if criteria[name]:
            found = found.where(field.in_(criteria[name]))
    matched = created_count = 0
    events: list[FleetEvent] = []
    for recording in found.order_by(Recording.id).iterator():
        if not matches(policy, recording, recording_tags(recording)):
            continue
        matched += 1
        with database_proxy.atomic():
            created, _ = _enqueue_by_policies(recording, [policy])
        created_count += len(created)
        events += _queued_events(created)
    with database_proxy.atomic():
        record(
            actor,
            "upload.enqueue",
            permission="settings:manage",
            target=("upload_policy", policy.id),
            reason=f"policy applied: {matched} recording(s) match, {created_count} upload(s) queued",
        )
    return {"policy_id": policy.id, "matched": matched, "created": created_count}, events


def retry(actor: Actor, scope: SiteScope, item_id: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """A failed item goes back to pending, due at once, with a fresh count of attempts; other states answer 409."""
    item = get_item(scope, item_id)
    if item.state != "failed":
        raise Conflict(f"Only a failed upload is retried; this one is {item.state}.", code="not_failed")
    before = item_to_api(item)
    now = utcnow()
    with database_proxy.atomic():
        moved = (
            UploadItem.update(state="pending", state_reason=WAITING, next_attempt_at=None, attempts=0, updated_at=now)
            .where(UploadItem.id == item.id, UploadItem.state == "failed")
            .execute()
        )
        if not moved:
            raise Conflict("The upload changed meanwhile; read it again.")
        after = item_to_api(UploadItem.get_by_id(item.id))
        record(actor, "upload.retry", permission=CONTROL, target=("upload_item", item.id), before=before, after=after)
    return after, []
