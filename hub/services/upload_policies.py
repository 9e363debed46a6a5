"""Upload policies (settings, issue 20): which recordings go to which providers, under which key, when and by which route.

A policy matches a recording when each of its non-empty criteria does (`sites`, `node_ids`, `profile_ids`, `tags`: the
recording carries every one in its metadata's `tags`, as retention policies read them; `statuses`: the recording ended so, by
default `completed` or `interrupted`); an empty list means any. Each matching policy queues the recording for each of
its providers (`hub.services.upload_queue`). Policies are hub-wide: writes need `settings:manage` on every site.

`when`: `completed` (as soon as the recording is on the hub, or ended on its node for the direct route) or `window`
(a daily window `window_start`-`window_end`, "HH:MM" in the site's time zone, which may wrap midnight). `route`:
`via_hub` (the hub uploads from its storage) or `direct` (the node uploads from its cache through presigned requests;
S3 providers only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import peewee
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, RecordingProfile, Site, UploadItem, UploadPolicy, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.upload_keys import DEFAULT_TEMPLATE, check_template
from hark_fleet.hub.services.versioning import update_if_unchanged

MANAGE = "settings:manage"
ROUTES = ("via_hub", "direct")
WHENS = ("completed", "window")
KEY_TIME_ZONES = ("utc", "site")
ENDED_STATUSES = ("completed", "interrupted")  # the statuses a policy may ask for: those with audio to upload
DEFAULT_STATUSES = list(ENDED_STATUSES)
CRITERIA = ("sites", "node_ids", "profile_ids", "tags", "statuses")
MAX_DESCRIPTION = 500
MAX_TEMPLATE_CHARS = 500  # the column's length (upload_keys allows 512)
MAX_PROVIDERS = 20
MAX_CRITERION_VALUES = 500
PRIORITY_RANGE = (-1000, 1000)
MIN_BANDWIDTH_BPS = 1024
DIRECT_KINDS = ("s3",)
DEFAULTS: dict[str, Any] = {
    "description": "",
    "enabled": True,
    "criteria": {},
    "provider_ids": [],
    "key_template": DEFAULT_TEMPLATE,
    "key_time_zone": "utc",
    "when": "completed",
    "window_start": None,
    "window_end": None,
    "bandwidth_cap_bps": None,
    "route": "via_hub",
    "priority": 0,
}
FIELDS = ("name", *DEFAULTS)
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def criteria_of(policy: UploadPolicy) -> dict[str, list[str]]:
    """A policy's criteria with every key present (`statuses` defaulting to completed and interrupted)."""
    raw = policy.criteria or {}
    out = {name: list(raw.get(name) or []) for name in CRITERIA}
    if not out["statuses"]:
        out["statuses"] = list(DEFAULT_STATUSES)
    return out


def policy_to_api(policy: UploadPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "enabled": bool(policy.enabled),
        "criteria": criteria_of(policy),
        "provider_ids": list(policy.provider_ids or []),
        "key_template": policy.key_template,
        "key_time_zone": policy.key_time_zone,
        "when": policy.when,
        "window_start": policy.window_start,
        "window_end": policy.window_end,
        "bandwidth_cap_bps": policy.bandwidth_cap_bps,
        "route": policy.route,
        "priority": policy.priority,
        "created_by": policy.created_by or {},
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
        "version": policy.version,
    }


POLICY_LIST = ListSpec(
    model=UploadPolicy,
    serialize=policy_to_api,
    filters=(
        Filter("name", UploadPolicy.name, facet=False),
        Filter("enabled", UploadPolicy.enabled, query.boolean),
        Filter("route", UploadPolicy.route, one_of(ROUTES)),
        Filter("when", UploadPolicy.when, one_of(WHENS)),
        Filter("provider_id", UploadPolicy.provider_ids, contains=True),
    ),
    search=(UploadPolicy.name, UploadPolicy.description, UploadPolicy.key_template),
    time_field=UploadPolicy.updated_at,
    export_columns=(
        "id",
        "name",
        "description",
        "enabled",
        "criteria",
        "provider_ids",
        "key_template",
        "key_time_zone",
        "when",
        "window_start",
        "window_end",
        "bandwidth_cap_bps",
        "route",
        "priority",
        "created_at",
        "updated_at",
        "version",
    ),
)


def get_policy(policy_id: str) -> UploadPolicy:
    policy = UploadPolicy.get_or_none(UploadPolicy.id == policy_id)
    if policy is None:
        raise NotFound(f"No upload policy {policy_id}.")
    return policy


def _actions(policy: UploadPolicy) -> dict[str, dict[str, Any]]:
    disabled = None if policy.enabled else "the policy is disabled: enable it first"
    return {
        "update": {"allowed": True, "reason": None},
        "delete": {"allowed": True, "reason": None},
        "apply": {"allowed": disabled is None, "reason": disabled},
    }


def policy_detail(policy_id: str) -> dict[str, Any]:
    """A policy, its providers' names and kinds, and what may be done to it now."""
    policy = get_policy(policy_id)
    ids = list(policy.provider_ids or [])
    rows = {p.id: p for p in UploadProvider.select().where(UploadProvider.id.in_(ids))} if ids else {}
    providers = [
        {"id": pid, "name": rows[pid].name, "kind": rows[pid].kind, "enabled": bool(rows[pid].enabled)}
        if pid in rows
        else {"id": pid, "name": None, "kind": None, "enabled": False}
        for pid in ids
    ]
    return {**policy_to_api(policy), "providers": providers, "actions": _actions(policy)}


# -- checks ---------------------------------------------------------------------------------------------------


def _missing(model: type[peewee.Model], ids: list[str]) -> list[str]:
    if not ids:
        return []
    pk: Any = model._meta.primary_key
    rows: Any = model.select(pk).where(pk.in_(ids)).tuples()
    found = {row[0] for row in rows}
    return [i for i in ids if i not in found]


def _check_criteria(criteria: Any, problems: dict[str, str]) -> dict[str, list[str]]:
    """The criteria with every key present; problems named `criteria.<key>`."""
    if not isinstance(criteria, Mapping):
        problems["criteria"] = "must be an object with sites, node_ids, profile_ids, tags and statuses (lists)"
        return {}
    clean: dict[str, list[str]] = {}
    for name in criteria:
        if name not in CRITERIA:
            problems[f"criteria.{name}"] = f"is not a criterion; known: {', '.join(CRITERIA)}"
    for name in CRITERIA:
        values = criteria.get(name) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            problems[f"criteria.{name}"] = "must be a list of non-empty strings (empty: any)"
            continue
        if len(values) > MAX_CRITERION_VALUES:
            problems[f"criteria.{name}"] = f"at most {MAX_CRITERION_VALUES} values"
            continue
        clean[name] = list(dict.fromkeys(values))
    lookups: tuple[tuple[str, type[peewee.Model], str], ...] = (
        ("sites", Site, "no such site"),
        ("node_ids", Node, "no such node"),
        ("profile_ids", RecordingProfile, "no such recording profile"),
    )
    for name, model, why in lookups:
        missing = _missing(model, clean.get(name, []))
        if missing:
            problems[f"criteria.{name}"] = f"{why}: {', '.join(missing[:5])}"
    bad = [s for s in clean.get("statuses", []) if s not in ENDED_STATUSES]
    if bad:
        problems["criteria.statuses"] = f"must be among {', '.join(ENDED_STATUSES)} (not {', '.join(bad)})"
    if not clean.get("statuses"):
        clean["statuses"] = list(DEFAULT_STATUSES)
    return clean


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def check_fields(fields: dict[str, Any], problems: dict[str, str]) -> dict[str, Any]:
    """Every problem with a policy's fields (name -> problem) added to `problems`; the fields as they would be stored."""
    out = dict(fields)
    if (why := text_problem(fields["name"], 100)) is not None:
        problems["name"] = why
    if not isinstance(fields["description"], str) or len(fields["description"]) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    out["criteria"] = _check_criteria(fields["criteria"], problems)
    provider_ids = fields["provider_ids"]
    providers: list[UploadProvider] = []
    if not isinstance(provider_ids, list) or not all(isinstance(p, str) for p in provider_ids):
        problems["provider_ids"] = "must be a list of provider ids"
    elif not 1 <= len(provider_ids) <= MAX_PROVIDERS:
        problems["provider_ids"] = f"1 to {MAX_PROVIDERS} providers (where the recordings go)"
    elif len(set(provider_ids)) != len(provider_ids):
        problems["provider_ids"] = "names a provider twice"
    else:
        rows = {p.id: p for p in UploadProvider.select().where(UploadProvider.id.in_(provider_ids))}
        missing = [p for p in provider_ids if p not in rows]
        if missing:
            problems["provider_ids"] = f"no such upload provider: {', '.join(missing[:5])}"
        providers = [rows[p] for p in provider_ids if p in rows]
    template = fields["key_template"]
    if isinstance(template, str) and len(template) > MAX_TEMPLATE_CHARS:
        problems["key_template"] = f"must be at most {MAX_TEMPLATE_CHARS} characters"
    else:
        problems.update(check_template(template))
    if fields["key_time_zone"] not in KEY_TIME_ZONES:
        problems["key_time_zone"] = "must be utc or site"
    if fields["when"] not in WHENS:
        problems["when"] = "must be completed or window"
    elif fields["when"] == "window":
        for name in ("window_start", "window_end"):
            value = fields[name]
            if not isinstance(value, str) or not _HHMM.match(value):
                problems[name] = 'is required with when=window: "HH:MM" (24 h, the site\'s time zone)'
        if "window_start" not in problems and "window_end" not in problems and fields["window_start"] == fields["window_end"]:
            problems["window_end"] = "must differ from window_start (a window may wrap midnight, e.g. 22:00-04:00)"
    else:
        for name in ("window_start", "window_end"):
            if fields[name] is not None:
                problems[name] = "only with when=window (null otherwise)"
    cap = fields["bandwidth_cap_bps"]
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < MIN_BANDWIDTH_BPS):
        problems["bandwidth_cap_bps"] = f"bytes per second, at least {MIN_BANDWIDTH_BPS}, or null for no cap"
    if fields["route"] not in ROUTES:
        problems["route"] = "must be via_hub or direct"
    elif fields["route"] == "direct":
        others = [p for p in providers if p.kind not in DIRECT_KINDS]
        if others:
            named = ", ".join(f"{p.name} is {p.kind}" for p in others)
            problems["route"] = f"direct uploads go only to S3 providers ({named}): use via_hub for it"
    priority = fields["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        problems["priority"] = f"a whole number from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}"
    if not isinstance(fields["enabled"], bool):
        problems["enabled"] = "must be true or false"
    return out


def window_minutes(policy: UploadPolicy) -> tuple[int, int] | None:
    """The policy's window as minutes after local midnight (start, end), or None when it uploads at any time."""
    if policy.when != "window" or not policy.window_start or not policy.window_end:
        return None
    return _minutes(policy.window_start), _minutes(policy.window_end)


def _name_taken(name: str, except_id: str | None = None) -> bool:
    found = UploadPolicy.select().where(UploadPolicy.name == name)
    if except_id is not None:
        found = found.where(UploadPolicy.id != except_id)
    return bool(found.exists())


# -- changes --------------------------------------------------------------------------------------------------


def create_policy(actor: Actor, values: Mapping[str, Any]) -> dict[str, Any]:
    """A new policy; fields left out take their defaults. Every problem is named in one 400; a taken name is 409."""
    fields = {**DEFAULTS, **{k: v for k, v in values.items() if k in FIELDS}}
    fields.setdefault("name", "")
    problems: dict[str, str] = {}
    clean = check_fields(fields, problems)
    if problems:
        raise InvalidRequest("The upload policy is invalid.", fields=problems)
    if _name_taken(clean["name"]):
        raise Conflict(f"An upload policy named {clean['name']} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            policy = UploadPolicy.create(
                id=new_id("upl"),
                **clean,
                version=1,
                created_by={"type": actor.type, "id": actor.id, "name": actor.name},
                created_at=now,
                updated_at=now,
            )
            after = policy_to_api(policy)
            record(actor, "upload_policy.create", permission=MANAGE, target=("upload_policy", policy.id), after=after)
    except peewee.IntegrityError as err:
        raise Conflict(f"An upload policy named {clean['name']} exists.") from err
    return after


def update_policy(actor: Actor, policy_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change a policy (the result is checked whole); `version`, if given, must be the current one (409)."""
    policy = get_policy(policy_id)
    if "version" in changes and changes["version"] != policy.version:
        raise Conflict(f"The upload policy changed meanwhile (version {policy.version}); read it again.")
    before = policy_to_api(policy)
    stored = {name: before[name] for name in FIELDS}
    stored["criteria"] = dict(policy.criteria or {})
    fields = stored | {k: v for k, v in changes.items() if k in FIELDS}
    if changes.get("when") == "completed":  # leaving the window drops it unless the caller also set it
        for name in ("window_start", "window_end"):
            if name not in changes:
                fields[name] = None
    problems: dict[str, str] = {}
    clean = check_fields(fields, problems)
    if problems:
        raise InvalidRequest("The upload policy is invalid.", fields=problems)
    if _name_taken(clean["name"], policy.id):
        raise Conflict(f"An upload policy named {clean['name']} exists.")
    if all(before[k] == v for k, v in clean.items() if k != "criteria") and criteria_of(policy) == clean["criteria"]:
        return before  # nothing changes: no new version
    try:
        with database_proxy.atomic():
            update_if_unchanged(UploadPolicy, policy, clean, "upload policy")
            after = policy_to_api(get_policy(policy.id))
            record(
                actor,
                "upload_policy.update",
                permission=MANAGE,
                target=("upload_policy", policy.id),
                before=before,
                after=after,
            )
    except peewee.IntegrityError as err:
        raise Conflict(f"An upload policy named {clean['name']} exists.") from err
    return after


def delete_policy(actor: Actor, policy_id: str) -> None:
    """Delete a policy; its items not started yet (pending, queued) go with it, the others stay as history."""
    policy = get_policy(policy_id)
    before = policy_to_api(policy)
    with database_proxy.atomic():
        dropped = (
            UploadItem.delete().where(UploadItem.policy_id == policy.id, UploadItem.state.in_(("pending", "queued"))).execute()
        )
        UploadPolicy.delete().where(UploadPolicy.id == policy.id).execute()
        record(
            actor,
            "upload_policy.delete",
            permission=MANAGE,
            target=("upload_policy", policy.id),
            before=before,
            reason=f"{dropped} upload(s) not started yet removed from the queue" if dropped else None,
        )
