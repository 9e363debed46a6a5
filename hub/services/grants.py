"""What a user is granted: their own roles on their sites, plus each group's roles on its sites."""

from __future__ import annotations

from collections.abc import Iterable

from hub.auth.permissions import BUILTIN_ROLES
from hub.auth.principal import Grant, Principal, user_principal
from hub.db.models import Group, Role, User, UserGroup


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
