"""Retention policies (settings): which recordings (site, profile, tags) each place keeps how long, what must be
confirmed first, and the free space to hold; the preview of what a run would delete or hold now, and why.

Policies are hub-wide settings. The decisions themselves are `retention_rules` (pure); this module stores, checks
and audits the policies, and loads recordings for the preview through `recording_copies`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, Recording, RecordingProfile, RetentionPolicy, Site, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services import retention_rules as rules
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec
from hark_fleet.hub.services.recording_copies import (
    NODE_EVICTED,
    iter_copies,
    light_columns,
    policy_rule,
    provider_names,
    with_provider_names,
)
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged

MANAGE = "settings:manage"
MAX_DESCRIPTION = 500
MAX_LIST = 100  # sites, profiles, tags, providers in one policy
MAX_KEEP_DAYS = 36500.0
MAX_FREE_BYTES = 2**53
PREVIEW_DEFAULT = 100
PREVIEW_MAX = 1000
FIELDS: dict[str, Any] = {
    "enabled": True,
    "description": "",
    "sites": [],
    "profile_ids": [],
    "tags": [],
    "keep_on_hub_days": None,
    "keep_on_node_until_hub_has_it": True,
    "required_providers": [],
    "min_free_bytes_hub": 0,
    "min_free_bytes_node": 0,
    "priority": 0,
}


def policy_to_api(policy: RetentionPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "enabled": bool(policy.enabled),
        "description": policy.description,
        "sites": list(policy.sites or []),
        "profile_ids": list(policy.profile_ids or []),
        "tags": list(policy.tags or []),
        "keep_on_hub_days": policy.keep_on_hub_days,
        "keep_on_node_until_hub_has_it": bool(policy.keep_on_node_until_hub_has_it),
        "required_providers": list(policy.required_providers or []),
        "min_free_bytes_hub": policy.min_free_bytes_hub,
        "min_free_bytes_node": policy.min_free_bytes_node,
        "priority": policy.priority,
        "version": policy.version,
        "created_by": policy.created_by or {},
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
    }


RETENTION_POLICY_LIST = ListSpec(
    model=RetentionPolicy,
    serialize=policy_to_api,
    filters=(
        Filter("name", RetentionPolicy.name, facet=False),
        Filter("enabled", RetentionPolicy.enabled, query.boolean),
        Filter("site", RetentionPolicy.sites, contains=True),
        Filter("profile_id", RetentionPolicy.profile_ids, contains=True),
        Filter("tag", RetentionPolicy.tags, contains=True),
        Filter("required_provider", RetentionPolicy.required_providers, contains=True),
    ),
    search=(RetentionPolicy.name, RetentionPolicy.description),
    time_field=RetentionPolicy.updated_at,
    export_columns=(
        "id",
        "name",
        "enabled",
        "description",
        "sites",
        "profile_ids",
        "tags",
        "keep_on_hub_days",
        "keep_on_node_until_hub_has_it",
        "required_providers",
        "min_free_bytes_hub",
        "min_free_bytes_node",
        "priority",
        "version",
        "created_at",
        "updated_at",
    ),
)


def get_policy(policy_id: str) -> RetentionPolicy:
    policy = RetentionPolicy.get_or_none(RetentionPolicy.id == policy_id)
    if policy is None:
        raise NotFound(f"No retention policy {policy_id}.")
    return policy


def _actions(policy: RetentionPolicy) -> dict[str, dict[str, Any]]:
    return {
        "update": {"allowed": True, "reason": None},
        "delete": {"allowed": True, "reason": None},
        "preview": {"allowed": True, "reason": None},
    }


def policy_detail(policy_id: str) -> dict[str, Any]:
    """A policy and what may be done to it now."""
    policy = get_policy(policy_id)
    return {**policy_to_api(policy), "actions": _actions(policy)}


def _list_problem(values: Any) -> str | None:
    if not isinstance(values, list) or len(values) > MAX_LIST:
        return f"a list of at most {MAX_LIST} names"
    if any(text_problem(v, 100) for v in values):
        return "each entry: 1-100 characters, no control characters or surrounding spaces"
    if len(set(values)) != len(values):
        return "lists an entry twice"
    return None


def _missing(model: type[peewee.Model], ids: list[str]) -> list[str]:
    if not ids:
        return []
    found = {row.id for row in model.select(model.id).where(model.id.in_(ids))}  # type: ignore[attr-defined]
    return [i for i in ids if i not in found]


def check_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Every problem with a policy's fields (name -> problem), checked together."""
    problems: dict[str, str] = {}
    if not isinstance(fields["enabled"], bool):
        problems["enabled"] = "true or false"
    if not isinstance(fields["description"], str) or len(fields["description"]) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    for name in ("sites", "profile_ids", "tags", "required_providers"):
        if (why := _list_problem(fields[name])) is not None:
            problems[name] = why
    if "sites" not in problems and (gone := _missing(Site, fields["sites"])):
        problems["sites"] = f"no such site: {', '.join(gone)}"
    if "profile_ids" not in problems and (gone := _missing(RecordingProfile, fields["profile_ids"])):
        problems["profile_ids"] = f"no such recording profile: {', '.join(gone)}"
    if "required_providers" not in problems and (gone := _missing(UploadProvider, fields["required_providers"])):
        problems["required_providers"] = f"no such upload provider: {', '.join(gone)}"
    days = fields["keep_on_hub_days"]
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) or not 0 <= days <= MAX_KEEP_DAYS
    ):
        problems["keep_on_hub_days"] = f"from 0 to {MAX_KEEP_DAYS:g} days, or null to keep forever"
    if not isinstance(fields["keep_on_node_until_hub_has_it"], bool):
        problems["keep_on_node_until_hub_has_it"] = "true or false"
    for name in ("min_free_bytes_hub", "min_free_bytes_node"):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FREE_BYTES:
            problems[name] = f"a whole number of bytes from 0 to {MAX_FREE_BYTES}"
    priority = fields["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        problems["priority"] = "a whole number from -1000 to 1000"
    return problems


def _name_taken(name: str, except_id: str | None = None) -> bool:
    found = RetentionPolicy.select().where(RetentionPolicy.name == name)
    if except_id is not None:
        found = found.where(RetentionPolicy.id != except_id)
    return bool(found.exists())


def create_policy(actor: Actor, name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A new policy; fields left out take the defaults (keep forever, no providers required). One 400 names every problem."""
    fields = {**FIELDS, **{k: v for k, v in settings.items() if k in FIELDS}}
    problems = check_fields(fields)
    if (why := text_problem(name, 100)) is not None:
        problems["name"] = why
    if problems:
        raise InvalidRequest("The retention policy is invalid.", fields=problems)
    if _name_taken(name):
        raise Conflict(f"A retention policy named {name} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            policy = RetentionPolicy.create(
                id=new_id("rtp"),
                name=name,
                **fields,
                version=1,
                created_by={"type": actor.type, "id": actor.id, "name": actor.name},
                created_at=now,
                updated_at=now,
            )
            after = policy_to_api(policy)
            record(actor, "retention_policy.create", permission=MANAGE, target=("retention_policy", policy.id), after=after)
    except peewee.IntegrityError as err:
        raise Conflict(f"A retention policy named {name} exists.") from err
    return after


def update_policy(actor: Actor, policy_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a policy (checked whole); `version`, if given, must be the current one (409)."""
    policy = get_policy(policy_id)
    if "version" in changes and changes["version"] != policy.version:
        raise Conflict(f"The retention policy changed meanwhile (version {policy.version}); read it again.")
    before = policy_to_api(policy)
    fields = {name: before[name] for name in FIELDS} | {k: v for k, v in changes.items() if k in FIELDS}
    problems = check_fields(fields)
    if "name" in changes:
        if (why := text_problem(changes["name"], 100)) is not None:
            problems["name"] = why
        fields["name"] = changes["name"]
    if problems:
        raise InvalidRequest("The retention policy is invalid.", fields=problems)
    if "name" in fields and _name_taken(fields["name"], policy.id):
        raise Conflict(f"A retention policy named {fields['name']} exists.")
    if all(before[k] == v for k, v in fields.items()):
        return before  # nothing changes: no new version
    try:
        with database_proxy.atomic():
            update_if_unchanged(RetentionPolicy, policy, fields, "retention policy")
            after = policy_to_api(get_policy(policy.id))
            record(
                actor,
                "retention_policy.update",
                permission=MANAGE,
                target=("retention_policy", policy.id),
                before=before,
                after=after,
            )
    except peewee.IntegrityError as err:
        raise Conflict(f"A retention policy named {fields.get('name')} exists.") from err
    return after


def delete_policy(actor: Actor, policy_id: str) -> None:
    """Delete a policy: recordings it covered fall to the next matching policy (or are kept)."""
    policy = get_policy(policy_id)
    before = policy_to_api(policy)
    with database_proxy.atomic():
        RetentionPolicy.delete().where(RetentionPolicy.id == policy.id).execute()
        record(actor, "retention_policy.delete", permission=MANAGE, target=("retention_policy", policy.id), before=before)


def all_rules(including: RetentionPolicy | None = None) -> list[rules.RetentionPolicy]:
    """Every enabled policy as rules, plus `including` (previewed as if enabled)."""
    found = [policy_rule(p) for p in RetentionPolicy.select().where(RetentionPolicy.enabled == True)]  # noqa: E712
    if including is not None and all(p.id != including.id for p in found):
        found.append(policy_rule(including))
    return found


def _row(recording: Recording, reason: str, names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "recording_id": recording.id,
        "name": recording.name,
        "site": recording.site,
        "node_id": recording.node_id,
        "status": recording.status,
        "size_bytes": recording.size_bytes or 0,
        "ended_at": iso(recording.ended_at),
        "legal_hold": bool(recording.legal_hold),
        "reason": with_provider_names(reason, names),
    }


def preview(scope: SiteScope, policy_id: str, limit: int = PREVIEW_DEFAULT, now: datetime | None = None) -> dict[str, Any]:
    """What a run would delete now at the hub and at nodes among the recordings this policy governs, and what it holds
    and why. Counts and bytes cover every such recording; the lists show the first `limit` of each (oldest first)."""
    policy = get_policy(policy_id)
    target = policy_rule(policy)
    policies = all_rules(policy)
    at = now or utcnow()
    places: dict[str, dict[str, Any]] = {
        place: {
            "delete": {"count": 0, "bytes": 0, "items": []},
            "held": {"count": 0, "bytes": 0, "items": []},
        }
        for place in (rules.HUB, rules.NODE)
    }
    recordings = Recording.select(*light_columns()).where(
        (Recording.storage_key.is_null(False) & Recording.hub_evicted_at.is_null(True))
        | Recording.node_cache.is_null(True)
        | (Recording.node_cache != NODE_EVICTED)
    )
    if scope.sites is not None:
        recordings = recordings.where(Recording.site.in_(list(scope.sites)))
    for recording, view in iter_copies(recordings):
        if rules.policy_for(view, policies) != target:
            continue
        for place, decide in ((rules.HUB, rules.decide_hub), (rules.NODE, rules.decide_node)):
            if not view.has_copy_at(place):
                continue
            decision = decide(view, target, at)
            bucket = places[place]["delete" if decision.delete else "held"]
            bucket["count"] += 1
            bucket["bytes"] += view.size_bytes
            bucket["items"].append((view.ended_at or view.created_at, recording, decision.reason))
    names = provider_names()
    for buckets in places.values():
        for bucket in buckets.values():
            ordered = sorted(bucket["items"], key=lambda entry: (entry[0], entry[1].id))[:limit]
            bucket["items"] = [_row(recording, reason, names) for _, recording, reason in ordered]
            bucket["truncated"] = bucket["count"] > len(bucket["items"])
    return {
        "policy_id": policy.id,
        "enabled": bool(policy.enabled),
        "at": iso(at),
        "hub": places[rules.HUB],
        "node": places[rules.NODE],
    }


def preview_limit(args: Mapping[str, list[str]]) -> int:
    """`?limit=` of the preview (1..PREVIEW_MAX), a 400 naming it otherwise; unknown parameters are refused too."""
    unknown = [name for name in args if name != "limit"]
    if unknown:
        raise InvalidRequest("Unknown parameter.", fields={name: "unknown parameter" for name in unknown})
    if "limit" not in args:
        return PREVIEW_DEFAULT
    try:
        return query.integer(args["limit"][-1], 1, PREVIEW_MAX)
    except ValueError as err:
        raise InvalidRequest("The limit is invalid.", fields={"limit": str(err)}) from err


def _floor(policies: list[RetentionPolicy], site: str | None) -> int:
    return max((int(p.min_free_bytes_node or 0) for p in policies if not p.sites or site in p.sites), default=0)


def node_floor(site: str | None) -> int:
    """The free space a node of `site` holds for retention: the largest `min_free_bytes_node` of the enabled policies
    that cover its site (a policy naming no site covers every one)."""
    return _floor(list(RetentionPolicy.select().where(RetentionPolicy.enabled == True)), site)  # noqa: E712


def node_floors() -> dict[str, int]:
    """Every node's `node_floor`, by node id (compared before and after a policy change)."""
    policies = list(RetentionPolicy.select().where(RetentionPolicy.enabled == True))  # noqa: E712
    by_site: dict[str | None, int] = {}
    floors = {}
    for node in Node.select(Node.id, Node.site):
        if node.site not in by_site:
            by_site[node.site] = _floor(policies, node.site)
        floors[node.id] = by_site[node.site]
    return floors
