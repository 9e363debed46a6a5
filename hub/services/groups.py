"""Groups: a set of users who share roles on a set of sites.

A group's roles on its sites are granted to every member (possibly the caller), so making a group
or adding to its roles or sites may only give what the caller holds there; taking away may always.
"""

from __future__ import annotations

import re
from typing import Any

from hark_fleet.hub.auth.principal import Principal
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Group, UserGroup, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import access_grants, keeping_an_admin, refuse_not_held
from hark_fleet.hub.services.users import check_roles, check_sites

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,149}")


def group_to_api(group: Group) -> dict[str, Any]:
    members = [ug.user_id for ug in UserGroup.select(UserGroup.user_id).where(UserGroup.group_id == group.id)]
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "roles": list(group.roles or []),
        "sites": None if group.sites is None else list(group.sites),
        "members": sorted(members),
        "created_at": iso(group.created_at),
    }


def list_groups() -> list[dict[str, Any]]:
    return [group_to_api(g) for g in Group.select().order_by(Group.name)]


def get_group(group_id: str) -> Group:
    group = Group.get_or_none(Group.id == group_id)
    if group is None:
        raise NotFound(f"No group {group_id}.")
    return group


def create_group(
    actor: Actor, caller: Principal, name: str, roles: list[str], sites: list[str] | None, description: str
) -> dict[str, Any]:
    if not NAME.fullmatch(name):
        raise InvalidRequest("Invalid group name.", fields={"name": "1-150 characters: letters, digits, space, _ . -"})
    roles, sites = check_roles(roles), check_sites(sites)
    if Group.select().where(Group.name == name).exists():
        raise Conflict(f"A group named {name} exists.")
    refuse_not_held(actor, caller, "group.create", None, [((), access_grants(roles, sites, ()))])
    now = utcnow()
    with database_proxy.atomic():
        group = Group.create(
            id=new_id("grp"), name=name, description=description[:500], roles=roles, sites=sites, created_at=now, updated_at=now
        )
        after = group_to_api(group)
        record(actor, "group.create", permission="auth:manage", target=("group", group.id), after=after)
    return after


def update_group(actor: Actor, caller: Principal, group_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change the name, description, roles or sites given; what it newly grants its members must be held by the caller."""
    group = get_group(group_id)
    before = group_to_api(group)
    fields: dict[str, Any] = {"updated_at": utcnow()}
    if "name" in changes:
        if not NAME.fullmatch(changes["name"]):
            raise InvalidRequest("Invalid group name.", fields={"name": "1-150 characters: letters, digits, space, _ . -"})
        if Group.select().where(Group.name == changes["name"], Group.id != group.id).exists():
            raise Conflict(f"A group named {changes['name']} exists.")
        fields["name"] = changes["name"]
    if "roles" in changes:
        fields["roles"] = check_roles(changes["roles"])
    if "sites" in changes:
        fields["sites"] = check_sites(changes["sites"])
    if "description" in changes:
        fields["description"] = changes["description"][:500]
    had = access_grants(group.roles or [], group.sites, ())
    granted = access_grants(fields.get("roles", group.roles or []), fields["sites"] if "sites" in fields else group.sites, ())
    refuse_not_held(actor, caller, "group.update", ("group", group.id), [(had, granted)])

    def change() -> dict[str, Any]:
        Group.update(**fields).where(Group.id == group.id).execute()
        after = group_to_api(get_group(group.id))
        record(actor, "group.update", permission="auth:manage", target=("group", group.id), before=before, after=after)
        return after

    return keeping_an_admin(change)


def delete_group(actor: Actor, group_id: str) -> None:
    group = get_group(group_id)
    before = group_to_api(group)

    def change() -> None:
        UserGroup.delete().where(UserGroup.group_id == group.id).execute()
        group.delete_instance()
        record(actor, "group.delete", permission="auth:manage", target=("group", group.id), before=before)

    keeping_an_admin(change)
