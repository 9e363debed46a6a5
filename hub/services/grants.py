"""What a user is granted: their own roles on their sites, plus each group's roles on its sites."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import peewee
from hark_fleet.hub.auth.permissions import BUILTIN_ROLES
from hark_fleet.hub.auth.principal import Grant, Principal, user_principal
from hark_fleet.hub.db.models import Group, Role, User, UserGroup, database_proxy
from hark_fleet.hub.errors import Conflict

T = TypeVar("T")
ADMIN_LOCK = 0x6861726B  # PostgreSQL advisory lock taken by every change that could remove the last admin


def role_permissions(names: Iterable[str]) -> frozenset[str]:
    """The permissions of built-in and custom roles by name (unknown names grant nothing)."""
    wanted = list(dict.fromkeys(names))
    granted: set[str] = set()
    custom = [n for n in wanted if n not in BUILTIN_ROLES]
    for name in wanted:
        granted |= BUILTIN_ROLES.get(name, frozenset())
    if custom:
        for role in Role.select(Role.permissions).where(Role.name.in_(custom)):
            granted |= set(role.permissions)
    return frozenset(granted)


def _sites(value: list[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def user_groups(user_id: str) -> list[Group]:
    return list(
        Group.select()
        .join(UserGroup, on=(UserGroup.group_id == Group.id))
        .where(UserGroup.user_id == user_id)
        .order_by(Group.name)
    )


def user_grants(user: User) -> tuple[Grant, ...]:
    grants = [Grant(role_permissions(user.roles or []), _sites(user.sites))]
    for group in user_groups(user.id):
        grants.append(Grant(role_permissions(group.roles or []), _sites(group.sites)))
    return tuple(g for g in grants if g.permissions)


def principal_for_user(user: User, session_id: str | None = None, via: str = "password") -> Principal:
    return user_principal(user.id, user.username, user_grants(user), session_id=session_id, via=via)


def full_admin_ids() -> set[str]:
    """Enabled users who hold auth:manage on every site; there must always be one."""
    admins = set()
    for user in User.select().where(User.disabled == False):  # noqa: E712 - SQL comparison
        principal = principal_for_user(user)
        if principal.unrestricted_admin:
            admins.add(user.id)
    return admins


def keeping_an_admin(change: Callable[[], T]) -> T:
    """Run `change` in a transaction that is rolled back if no full admin would be left.

    Such changes are serialised (SQLite has one writer; PostgreSQL takes an advisory
    lock), so two admins demoting each other at once cannot both succeed.
    """
    with database_proxy.atomic():
        if isinstance(database_proxy.obj, peewee.PostgresqlDatabase):
            database_proxy.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADMIN_LOCK,))
        result = change()
        if not full_admin_ids():
            raise Conflict("This would leave no enabled admin with access to every site.", code="last_admin")
    return result
