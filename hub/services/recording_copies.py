"""Where each recording's copies are (the hub, its node's cache, each upload provider), as retention sees them.

`copies_of` / `copies_of_many` turn the database rows into `retention_rules.RecordingCopies` (many recordings in a
few queries), and `copies_detail` is `GET /api/v1/recordings/{id}/copies`: every copy with its state and checksum,
the legal hold, and what retention decides for the hub's and the node's copy now, and why.

- The hub's copy: the stored file (`storage_key`) unless retention evicted it (`hub_evicted_at`); `confirmed` once
  the hub verified the upload against the node's sha256 (it sets `Recording.sha256` only then).
- The node's copy: `Recording.node_cache`, `present` until the node reports it evicted the recording (not reported
  yet counts as present: the node keeps what the hub has not confirmed).
- A provider's copy: its upload item; `confirmed` when the item is `synced` with the recording's checksum, `present`
  while bytes are on their way (`uploading`), otherwise no copy yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Recording, RetentionPolicy, UploadItem, UploadProvider, database_proxy
from hark_fleet.hub.errors import ApiError, InvalidRequest
from hark_fleet.hub.services import retention_rules as rules
from hark_fleet.hub.services.recordings_library import get_recording

BATCH = 500  # recordings per query when loading many


def light_columns() -> tuple[Any, ...]:
    """The recording columns retention reads (not the integrity ledger or the profile snapshot, which can be large)."""
    return (
        Recording.id,
        Recording.node_id,
        Recording.site,
        Recording.name,
        Recording.status,
        Recording.profile_id,
        Recording.metadata,
        Recording.created_at,
        Recording.ended_at,
        Recording.size_bytes,
        Recording.sha256,
        Recording.storage_key,
        Recording.legal_hold,
        Recording.hub_evicted_at,
        Recording.node_cache,
    )


HUB_PRESENT = "present"
NODE_EVICTED = "evicted"


class Evicted(ApiError):
    """410: the hub no longer holds this recording's audio (retention evicted it); the answer names where copies are."""

    status = 410
    code = "evicted"


def tags_of(recording: Recording) -> frozenset[str]:
    """The recording's tags (they travel in its metadata)."""
    tags = (recording.metadata or {}).get("tags") or []
    return frozenset(str(tag) for tag in tags) if isinstance(tags, list) else frozenset()


def hub_copy(recording: Recording) -> rules.Copy:
    """The hub's copy: absent once evicted or never stored; confirmed when the upload was verified (sha256 set)."""
    if not recording.storage_key or recording.hub_evicted_at is not None:
        return rules.Copy(rules.HUB, "absent")
    return rules.Copy(rules.HUB, "confirmed" if recording.sha256 else "present", recording.sha256)


def node_copy(recording: Recording) -> rules.Copy:
    """The node's cached copy: present until the node reports it evicted."""
    return rules.Copy(rules.NODE, "absent" if recording.node_cache == NODE_EVICTED else "present")


def provider_copy(item: UploadItem) -> rules.Copy:
    """A provider's copy from its upload item: confirmed once synced (with the checksum verified there)."""
    place = rules.provider_place(item.provider_id)
    if item.state == "synced":
        return rules.Copy(place, "confirmed", item.checksum_sha256)
    return rules.Copy(place, "present" if item.state == "uploading" else "absent", item.checksum_sha256)


def build(recording: Recording, items: Iterable[UploadItem]) -> rules.RecordingCopies:
    """The retention view of one recording from its row and its upload items."""
    copies = [hub_copy(recording), node_copy(recording), *(provider_copy(item) for item in items)]
    return rules.RecordingCopies(
        recording_id=recording.id,
        site=recording.site,
        profile_id=recording.profile_id,
        tags=tags_of(recording),
        status=recording.status,
        created_at=recording.created_at,
        ended_at=recording.ended_at,
        size_bytes=recording.size_bytes or 0,
        legal_hold=bool(recording.legal_hold),
        sha256=recording.sha256,
        copies=tuple(copies),
    )


def items_by_recording(recording_ids: Sequence[str]) -> dict[str, list[UploadItem]]:
    """Upload items of these recordings, grouped by recording (one query per BATCH ids)."""
    grouped: dict[str, list[UploadItem]] = {}
    for start in range(0, len(recording_ids), BATCH):
        chunk = list(recording_ids[start : start + BATCH])
        query = UploadItem.select().where(UploadItem.recording_id.in_(chunk)).order_by(UploadItem.provider_id)
        for item in query:
            grouped.setdefault(item.recording_id, []).append(item)
    return grouped


def copies_of(recording: Recording) -> rules.RecordingCopies:
    """The retention view of one recording."""
    return build(recording, items_by_recording([recording.id]).get(recording.id, []))


def copies_of_many(recordings: Sequence[Recording]) -> list[rules.RecordingCopies]:
    """The retention view of many recordings, their upload items read in batches."""
    items = items_by_recording([recording.id for recording in recordings])
    return [build(recording, items.get(recording.id, [])) for recording in recordings]


def iter_copies(query: Any, batch: int = BATCH) -> Iterable[tuple[Recording, rules.RecordingCopies]]:
    """Walk a Recording query in id order, BATCH rows at a time, with each recording's retention view."""
    after = ""
    while True:
        rows = list(query.where(Recording.id > after).order_by(Recording.id).limit(batch))
        if not rows:
            return
        yield from zip(rows, copies_of_many(rows), strict=True)
        after = rows[-1].id


def policy_rule(policy: RetentionPolicy) -> rules.RetentionPolicy:
    """A stored retention policy as the pure rules take it."""
    return rules.RetentionPolicy(
        id=policy.id,
        sites=frozenset(policy.sites or ()),
        profile_ids=frozenset(policy.profile_ids or ()),
        tags=frozenset(policy.tags or ()),
        keep_on_hub_days=policy.keep_on_hub_days,
        keep_on_node_until_hub_has_it=bool(policy.keep_on_node_until_hub_has_it),
        required_providers=tuple(policy.required_providers or ()),
        min_free_bytes_hub=int(policy.min_free_bytes_hub or 0),
        min_free_bytes_node=int(policy.min_free_bytes_node or 0),
        priority=int(policy.priority or 0),
    )


def enabled_policies() -> list[rules.RetentionPolicy]:
    """Every enabled retention policy, as rules."""
    return [policy_rule(p) for p in RetentionPolicy.select().where(RetentionPolicy.enabled == True).order_by(RetentionPolicy.id)]  # noqa: E712


def _provider_names(provider_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    ids = list(dict.fromkeys(provider_ids))
    if not ids:
        return {}
    return {p.id: (p.name, p.kind) for p in UploadProvider.select().where(UploadProvider.id.in_(ids))}


def copies_detail(scope: SiteScope, recording_id: str, now: datetime | None = None) -> dict[str, Any]:
    """`GET /recordings/{id}/copies`: every copy with its state and checksum, and retention's decisions now."""
    recording = get_recording(scope, recording_id)
    items = items_by_recording([recording.id]).get(recording.id, [])
    view = build(recording, items)
    policies = enabled_policies()
    policy = rules.policy_for(view, policies)
    at = now or utcnow()
    required = policy.required_providers if policy is not None else ()
    hub = hub_copy(recording)
    hub_state = "evicted" if recording.hub_evicted_at is not None else ("absent" if hub.state == "absent" else hub.state)
    names = _provider_names([*(item.provider_id for item in items), *required])
    plain = {provider_id: name for provider_id, (name, _) in names.items()}
    providers = []
    for item in items:
        name, kind = names.get(item.provider_id, (None, None))
        providers.append(
            {
                "provider_id": item.provider_id,
                "name": name,
                "kind": kind,
                "state": item.state,
                "confirmed": view.is_confirmed_at(rules.provider_place(item.provider_id)),
                "remote_key": item.remote_key,
                "checksum_sha256": item.checksum_sha256,
                "verified_by": item.verified_by,
                "synced_at": iso(item.synced_at),
                "last_error": item.last_error,
            }
        )
    return {
        "recording_id": recording.id,
        "sha256": recording.sha256,
        "size_bytes": recording.size_bytes,
        "hub": {
            "state": hub_state,
            "sha256": recording.sha256 if hub.state != "absent" else None,
            "key": recording.storage_key if hub.state != "absent" else None,
            "evicted_at": iso(recording.hub_evicted_at),
            "evicted_reason": recording.hub_evicted_reason,
        },
        "node": {
            "node_id": recording.node_id,
            "state": recording.node_cache or HUB_PRESENT,
            "reported": recording.node_cache is not None,
            "at": iso(recording.node_cache_at),
        },
        "providers": providers,
        "legal_hold": bool(recording.legal_hold),
        "legal_hold_reason": recording.legal_hold_reason,
        "retention": {
            "policy_id": policy.id if policy is not None else None,
            "policy_name": _policy_name(policy.id) if policy is not None else None,
            "hub": _decision(rules.decide_hub(view, policy, at), plain),
            "node": _decision(rules.decide_node(view, policy, at), plain),
        },
    }


def _decision(decision: rules.Decision, names: Mapping[str, str]) -> dict[str, Any]:
    return {"action": decision.action, "reason": with_provider_names(decision.reason, names)}


def _policy_name(policy_id: str) -> str | None:
    found = RetentionPolicy.get_or_none(RetentionPolicy.id == policy_id)
    return found.name if found is not None else None


def provider_names() -> dict[str, str]:
    """Every upload provider's name by id (a short table)."""
    return {p.id: p.name for p in UploadProvider.select(UploadProvider.id, UploadProvider.name)}


def with_provider_names(reason: str, names: Mapping[str, str]) -> str:
    """A retention reason with provider ids replaced by their names, for people."""
    for provider_id, name in names.items():
        if name and provider_id in reason:
            reason = reason.replace(provider_id, name)
    return reason


def where_copies_are(recording: Recording) -> list[str]:
    """Where copies of an evicted recording still are, in words (`provider s3-archive (synced)`, `node n1's cache`)."""
    places = []
    items = items_by_recording([recording.id]).get(recording.id, [])
    names = _provider_names(item.provider_id for item in items)
    for item in items:
        if item.state == "synced":
            places.append(f"provider {names.get(item.provider_id, (item.provider_id, ''))[0]} ({item.remote_key})")
    if recording.node_cache != NODE_EVICTED:
        places.append(f"node {recording.node_id}'s cache")
    return places


def check_on_hub(recording: Recording) -> None:
    """Raise 410 naming where the copies are when retention evicted the hub's copy of this recording."""
    if recording.hub_evicted_at is None:
        return
    places = where_copies_are(recording)
    where = "; ".join(places) if places else "nowhere this hub knows of"
    raise Evicted(
        f"The hub no longer holds this recording's audio: retention evicted it at {iso(recording.hub_evicted_at)} "
        f"({recording.hub_evicted_reason or 'no reason recorded'}). Copies: {where}.",
        evicted_at=iso(recording.hub_evicted_at),
        copies=places,
    )


MAX_REPORTED = 1000  # recording ids in one cache-evictions report
MAX_HELD_IN_CONFIG = 10000


def node_evicted(node_id: str, recording_ids: list[str]) -> dict[str, Any]:
    """The node's cache deleted these recordings: their node copy is `evicted` (only the node's own; idempotent)."""
    if not 1 <= len(recording_ids) <= MAX_REPORTED or any(not isinstance(r, str) or not 1 <= len(r) <= 40 for r in recording_ids):
        raise InvalidRequest(
            "The report is invalid.", fields={"recording_ids": f"1 to {MAX_REPORTED} recording ids of 1-40 characters"}
        )
    ids = list(dict.fromkeys(recording_ids))
    now = utcnow()
    with database_proxy.atomic():
        own = {r.id for r in Recording.select(Recording.id).where(Recording.id.in_(ids), Recording.node_id == node_id)}
        if own:
            Recording.update(node_cache=NODE_EVICTED, node_cache_at=now).where(
                Recording.id.in_(list(own)), (Recording.node_cache.is_null(True)) | (Recording.node_cache != NODE_EVICTED)
            ).execute()
    return {"evicted": [r for r in ids if r in own], "unknown": [r for r in ids if r not in own]}


def held_on_node(node_id: str) -> list[str]:
    """Recordings of this node under legal hold whose cached copy the node still holds (its cache must keep them)."""
    query = (
        Recording.select(Recording.id)
        .where(
            Recording.node_id == node_id,
            Recording.legal_hold == True,  # noqa: E712
            (Recording.node_cache.is_null(True)) | (Recording.node_cache != NODE_EVICTED),
        )
        .order_by(Recording.id)
        .limit(MAX_HELD_IN_CONFIG)
    )
    return [r.id for r in query]
