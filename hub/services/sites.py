"""Sites: where nodes stand. Id (the slug nodes and grants name), name, IANA time zone, location, visibility, notes.

Visibility decides who sees a site (and so its nodes, recordings and events): `public` everyone whose
grants reach it, `approved` full admins, the site's admins and its approved users, `admin_only` full
admins and the site's admins (see `grants.hidden_sites`). A site's admins are the users holding
`auth:manage` limited to sites that include it.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ApiKey, Group, Node, Site, SiteApprovedUser, User, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import site_managers
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.hub.services.users import SITE
from hark_fleet.hub.services.versioning import update_if_unchanged

READ = "site:read"
MANAGE = "site:manage"
VISIBILITIES = ("public", "approved", "admin_only")
NAME_MAX = 200
NOTES_MAX = 2000
ELEVATION_RANGE_M = (-500.0, 9000.0)
MAX_LISTED = 20  # blockers named by id in a delete preview
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
FIELDS = ("name", "time_zone", "latitude", "longitude", "elevation_m", "visibility", "notes")


def site_to_api(site: Site) -> dict[str, Any]:
    return {
        "id": site.id,
        "name": site.name,
        "time_zone": site.time_zone,
        "latitude": site.latitude,
        "longitude": site.longitude,
        "elevation_m": site.elevation_m,
        "visibility": site.visibility,
        "notes": site.notes,
        "node_count": Node.select().where(Node.site == site.id).count(),
        "created_at": iso(site.created_at),
        "updated_at": iso(site.updated_at),
        "version": site.version,
    }


def _time_zone(value: str) -> str:
    check_time_zone(value)
    return value


SITE_LIST = ListSpec(
    model=Site,
    serialize=site_to_api,
    filters=(
        Filter("visibility", Site.visibility, one_of(VISIBILITIES)),
        Filter("time_zone", Site.time_zone, _time_zone),
    ),
    search=(Site.id, Site.name, Site.notes),
    time_field=Site.created_at,
    site_field=Site.id,
    export_columns=(
        "id",
        "name",
        "time_zone",
        "latitude",
        "longitude",
        "elevation_m",
        "visibility",
        "notes",
        "node_count",
        "created_at",
        "updated_at",
        "version",
    ),
)


def check_time_zone(value: Any) -> None:
    """ValueError unless `value` names an IANA time zone."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise ValueError("an IANA time zone such as Europe/Berlin")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"{value} is not an IANA time zone (such as Europe/Berlin)") from err


def _number_problem(value: Any, low: float, high: float, unit: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        return f"from {low:g} to {high:g}{unit}, or null"
    return None


def _text_problem(value: Any, max_len: int, empty: bool = False) -> str | None:
    if not isinstance(value, str):
        return "must be text"
    if empty and value == "":
        return None
    if not 1 <= len(value) <= max_len or value != value.strip() or not _PRINTABLE.fullmatch(value):
        return f"1-{max_len} characters, no control characters or surrounding spaces"
    return None


def check_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Every problem with a site's fields (name -> problem), checked together."""
    problems: dict[str, str] = {}
    if (why := _text_problem(fields["name"], NAME_MAX)) is not None:
        problems["name"] = why
    try:
        check_time_zone(fields["time_zone"])
    except ValueError as err:
        problems["time_zone"] = str(err)
    for name, (low, high), unit in (
        ("latitude", (-90.0, 90.0), "°"),
        ("longitude", (-180.0, 180.0), "°"),
        ("elevation_m", ELEVATION_RANGE_M, " m"),
    ):
        if (why := _number_problem(fields[name], low, high, unit)) is not None:
            problems[name] = why
    if "latitude" not in problems and "longitude" not in problems:
        if (fields["latitude"] is None) != (fields["longitude"] is None):
            problems["latitude" if fields["latitude"] is None else "longitude"] = "give latitude and longitude together"
    if fields["visibility"] not in VISIBILITIES:
        problems["visibility"] = f"must be one of {', '.join(VISIBILITIES)}"
    notes = fields["notes"]
    if not isinstance(notes, str) or len(notes) > NOTES_MAX:
        problems["notes"] = f"at most {NOTES_MAX} characters"
    return problems


def get_site(site_id: str, scope: SiteScope) -> Site:
    """A site the caller may see, or 404 (also for sites outside its grants or hidden from it)."""
    site: Site = get_scoped(Site, site_id, Site.id, scope)
    return site


def site_admins(site_id: str) -> list[dict[str, Any]]:
    """Enabled users holding auth:manage limited to sites that include this one (full admins are not listed)."""
    return [{"id": u.id, "username": u.username, "display_name": u.display_name} for u in site_managers(site_id)]


def approved_users(site_id: str) -> list[dict[str, Any]]:
    rows = list(SiteApprovedUser.select().where(SiteApprovedUser.site_id == site_id))
    users = {u.id: u for u in User.select().where(User.id.in_([r.user_id for r in rows]))} if rows else {}
    listed = [
        {
            "id": row.user_id,
            "username": users[row.user_id].username,
            "display_name": users[row.user_id].display_name,
            "approved_at": iso(row.approved_at),
            "approved_by": row.approved_by or {},
        }
        for row in rows
        if row.user_id in users
    ]
    return sorted(listed, key=lambda u: u["username"])


def site_actions(site: Site, principal: Principal) -> dict[str, dict[str, Any]]:
    """Which actions the caller may take on this site now, and why not."""
    manage_scope = principal.scope(MANAGE)
    here = principal.can(MANAGE) and manage_scope.allows(site.id)
    everywhere = principal.can(MANAGE) and manage_scope.sites is None

    def state(allowed: bool, reason: str) -> dict[str, Any]:
        return {"allowed": allowed, "reason": None if allowed else reason}

    return {
        "update": state(here, "needs site:manage on this site"),
        "approve_users": state(here, "needs site:manage on this site"),
        "delete": state(everywhere, "needs site:manage on every site"),
    }


def site_detail(scope: SiteScope, site_id: str, principal: Principal) -> dict[str, Any]:
    site = get_site(site_id, scope)
    return {
        **site_to_api(site),
        "admins": site_admins(site.id),
        "approved_users": approved_users(site.id),
        "actions": site_actions(site, principal),
    }


def create_site(actor: Actor, values: Mapping[str, Any]) -> dict[str, Any]:
    """A new site; every problem is named in one 400, an id in use is a 409."""
    site_id = values.get("id")
    fields = {
        "name": values.get("name", site_id),
        "time_zone": values.get("time_zone", "UTC"),
        "latitude": values.get("latitude"),
        "longitude": values.get("longitude"),
        "elevation_m": values.get("elevation_m"),
        "visibility": values.get("visibility", "public"),
        "notes": values.get("notes", ""),
    }
    problems = check_fields(fields)
    if not isinstance(site_id, str) or not SITE.fullmatch(site_id):
        problems["id"] = "1-100 characters: letters, digits, _ . -, starting with a letter or digit"
        if "name" not in values:
            problems.pop("name", None)  # the name would have been the id
    if problems:
        raise InvalidRequest("The site is invalid.", fields=problems)
    if Site.select().where(Site.id == site_id).exists():
        raise Conflict(f"A site {site_id} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            site = Site.create(id=site_id, **fields, created_at=now, updated_at=now, version=1)
            after = site_to_api(site)
            record(actor, "site.create", permission=MANAGE, target=("site", site.id), after=after)
    except peewee.IntegrityError as err:
        raise Conflict(f"A site {site_id} exists.") from err
    return after


def update_site(actor: Actor, scope: SiteScope, site_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change the fields given (the result is checked whole); `version`, if given, must be the current one (409)."""
    site = get_site(site_id, scope)
    if "version" in changes and changes["version"] != site.version:
        raise Conflict(f"The site changed meanwhile (version {site.version}); read it again.")
    before = site_to_api(site)
    fields = {name: before[name] for name in FIELDS} | {k: v for k, v in changes.items() if k in FIELDS}
    problems = check_fields(fields)
    if problems:
        raise InvalidRequest("The site is invalid.", fields=problems)
    if all(before[k] == v for k, v in fields.items()):
        return before  # nothing changes: no new version
    with database_proxy.atomic():
        update_if_unchanged(Site, site, fields, "site")
        after = site_to_api(Site.get_by_id(site.id))
        record(actor, "site.update", permission=MANAGE, target=("site", site.id), before=before, after=after)
    return after


def _naming(model: Any, site_id: str) -> list[Any]:
    """Rows of a model with a JSON `sites` list that names `site_id` (users, groups and keys are few)."""
    return [row for row in model.select().where(model.sites.is_null(False)).order_by(model.id) if site_id in (row.sites or [])]


def delete_preview(scope: SiteScope, site_id: str) -> dict[str, Any]:
    """What blocks deleting a site: nodes standing there and grants (users, groups, keys) naming it."""
    site = get_site(site_id, scope)
    nodes = list(Node.select(Node.id, Node.name).where(Node.site == site.id).order_by(Node.id))
    users = _naming(User, site.id)
    groups = _naming(Group, site.id)
    keys = [k for k in _naming(ApiKey, site.id) if k.revoked_at is None]
    blockers = {
        "nodes": [{"id": n.id, "name": n.name} for n in nodes[:MAX_LISTED]],
        "users": [{"id": u.id, "username": u.username} for u in users[:MAX_LISTED]],
        "groups": [{"id": g.id, "name": g.name} for g in groups[:MAX_LISTED]],
        "api_keys": [{"id": k.id, "name": k.name} for k in keys[:MAX_LISTED]],
    }
    counts = {"nodes": len(nodes), "users": len(users), "groups": len(groups), "api_keys": len(keys)}
    words = {
        "nodes": ("node", "nodes"),
        "users": ("user", "users"),
        "groups": ("group", "groups"),
        "api_keys": ("API key", "API keys"),
    }
    reasons = []
    for name, n in counts.items():
        if n:
            one, many = words[name]
            what = "stand on this site" if name == "nodes" else "have grants naming this site"
            if n == 1:
                what = "stands on this site" if name == "nodes" else "has grants naming this site"
            reasons.append(f"{n} {one if n == 1 else many} {what}")
    return {
        "site": site_to_api(site),
        "blockers": blockers,
        "counts": counts,
        "approved_users": SiteApprovedUser.select().where(SiteApprovedUser.site_id == site.id).count(),
        "requires_force": bool(reasons),
        "reasons": reasons,
    }


def delete_site(actor: Actor, scope: SiteScope, site_id: str, force: bool) -> None:
    """Delete a site; with blockers it needs `force`, which detaches the nodes and takes the site out of every grant."""
    preview = delete_preview(scope, site_id)
    if preview["requires_force"] and not force:
        raise Conflict(
            f"Deleting this site needs ?force=true: {'; '.join(preview['reasons'])}.",
            reasons=preview["reasons"],
            blockers=preview["blockers"],
        )
    with database_proxy.atomic():
        detached_nodes = [n.id for n in Node.select(Node.id).where(Node.site == site_id)]
        Node.update(site=None, updated_at=utcnow()).where(Node.site == site_id).execute()
        changed: dict[str, list[str]] = {"users": [], "groups": [], "api_keys": []}
        for name, model in (("users", User), ("groups", Group), ("api_keys", ApiKey)):
            for row in _naming(model, site_id):
                model.update(sites=[s for s in row.sites if s != site_id]).where(model.id == row.id).execute()
                changed[name].append(row.id)
        SiteApprovedUser.delete().where(SiteApprovedUser.site_id == site_id).execute()
        Site.delete().where(Site.id == site_id).execute()
        for node_id in detached_nodes:
            record(
                actor,
                "node.update",
                permission=MANAGE,
                target=("node", node_id),
                before={"site": site_id},
                after={"site": None},
                reason=f"site {site_id} deleted",
            )
        record(
            actor,
            "site.delete",
            permission=MANAGE,
            target=("site", site_id),
            before=preview["site"],
            after={"forced": force, "detached_nodes": detached_nodes, **changed},
        )


def approve_user(actor: Actor, scope: SiteScope, site_id: str, user_id: Any) -> dict[str, Any]:
    """Let a user see this site while its visibility is `approved` (approving twice changes nothing)."""
    site = get_site(site_id, scope)
    if not isinstance(user_id, str) or User.get_or_none(User.id == user_id) is None:
        raise InvalidRequest("Unknown user.", fields={"user_id": f"no user {user_id}"})
    with database_proxy.atomic():
        exists = (
            SiteApprovedUser.select().where(SiteApprovedUser.site_id == site.id, SiteApprovedUser.user_id == user_id).exists()
        )
        if not exists:
            SiteApprovedUser.create(
                site_id=site.id,
                user_id=user_id,
                approved_at=utcnow(),
                approved_by={"type": actor.type, "id": actor.id, "name": actor.name},
            )
            record(actor, "site.approve", permission=MANAGE, target=("site", site.id), after={"user_id": user_id})
    return site_detail_for_write(site.id)


def unapprove_user(actor: Actor, scope: SiteScope, site_id: str, user_id: str) -> None:
    site = get_site(site_id, scope)
    with database_proxy.atomic():
        removed = (
            SiteApprovedUser.delete().where(SiteApprovedUser.site_id == site.id, SiteApprovedUser.user_id == user_id).execute()
        )
        if not removed:
            raise NotFound(f"User {user_id} is not approved on site {site.id}.")
        record(actor, "site.unapprove", permission=MANAGE, target=("site", site.id), before={"user_id": user_id})


def site_detail_for_write(site_id: str) -> dict[str, Any]:
    """The site with its approved users (after a change the caller was allowed to make)."""
    site = Site.get_by_id(site_id)
    return {**site_to_api(site), "approved_users": approved_users(site.id)}
