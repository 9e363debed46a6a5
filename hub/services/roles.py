"""Roles: the four built-in ones and custom roles made of permissions.

A custom role can be given on any site, so its permissions count as granted on every site:
making one or adding to its permissions needs the caller to hold those everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hark_fleet.hub.auth.permissions import BUILTIN_ROLES, USER_PERMISSIONS, sorted_permissions
from hark_fleet.hub.auth.principal import Grant, Principal
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Group, Role, User
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import keeping_an_admin, refuse_not_held

NAME = re.compile(r"[a-z][a-z0-9_-]{1,63}")


def unknown_roles(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    custom = {r.name for r in Role.select(Role.name).where(Role.name.in_(names))} if names else set()
    return [n for n in names if n not in BUILTIN_ROLES and n not in custom]


def builtin_to_api(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "name": name,
        "builtin": True,
        "description": f"built-in {name} role",
        "permissions": sorted_permissions(BUILTIN_ROLES[name]),
    }


def role_to_api(role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "builtin": False,
        "description": role.description,
        "permissions": sorted_permissions(role.permissions),
        "created_at": iso(role.created_at),
    }


def list_roles() -> list[dict[str, Any]]:
    return [builtin_to_api(n) for n in BUILTIN_ROLES] + [role_to_api(r) for r in Role.select().order_by(Role.name)]


def _check_permissions(permissions: list[str]) -> list[str]:
    unknown = sorted(set(permissions) - set(USER_PERMISSIONS))
    if unknown:
        raise InvalidRequest("Unknown permissions.", fields={"permissions": f"not user permissions: {', '.join(unknown)}"})
    return sorted_permissions(permissions)


def _everywhere(permissions: Iterable[str]) -> tuple[Grant, ...]:
    """What a role holding `permissions` can grant: each of them on every site."""
    return (Grant(frozenset(permissions)),)


def create_role(actor: Actor, caller: Principal, name: str, permissions: list[str], description: str) -> dict[str, Any]:
    if not NAME.fullmatch(name):
        raise InvalidRequest("Invalid role name.", fields={"name": "2-64 characters: lower-case letters, digits, - and _"})
    if name in BUILTIN_ROLES or Role.select().where(Role.name == name).exists():
        raise Conflict(f"A role named {name} exists.")
    permissions = _check_permissions(permissions)
    refuse_not_held(actor, caller, "role.create", None, [((), _everywhere(permissions))])
    now = utcnow()
    role = Role.create(
        id=new_id("rol"),
        name=name,
        description=description[:500],
        permissions=permissions,
        created_at=now,
        updated_at=now,
    )
    after = role_to_api(role)
    record(actor, "role.create", permission="auth:manage", target=("role", role.id), after=after)
    return after


def get_role(role_id: str) -> Role:
    role = Role.get_or_none(Role.id == role_id)
    if role is None:
        if role_id in BUILTIN_ROLES:
            raise Conflict(f"The built-in role {role_id} cannot be changed.")
        raise NotFound(f"No role {role_id}.")
    return role


def update_role(
    actor: Actor, caller: Principal, role_id: str, permissions: list[str] | None, description: str | None
) -> dict[str, Any]:
    """Replace the permissions and description given; permissions it newly grants must be held by the caller everywhere."""
    role = get_role(role_id)
    before = role_to_api(role)
    if permissions is not None:
        permissions = _check_permissions(permissions)
        changed = (_everywhere(role.permissions), _everywhere(permissions))
        refuse_not_held(actor, caller, "role.update", ("role", role.id), [changed])
        role.permissions = permissions
    if description is not None:
        role.description = description[:500]
    role.updated_at = utcnow()

    def change() -> dict[str, Any]:
        role.save()
        after = role_to_api(role)
        record(actor, "role.update", permission="auth:manage", target=("role", role.id), before=before, after=after)
        return after

    return keeping_an_admin(change)


def delete_role(actor: Actor, role_id: str) -> None:
    role = get_role(role_id)
    in_use = any(role.name in (u.roles or []) for u in User.select(User.roles)) or any(
        role.name in (g.roles or []) for g in Group.select(Group.roles)
    )
    if in_use:
        raise Conflict(f"The role {role.name} is still given to users or groups; take it away first.")
    before = role_to_api(role)
    role.delete_instance()
    record(actor, "role.delete", permission="auth:manage", target=("role", role_id), before=before)
