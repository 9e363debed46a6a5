"""What a user is granted: their own roles on their sites, plus each group's roles on its sites.

Nobody grants what they do not hold: every change that gives access (a user's roles, sites and
groups, a group's roles and sites, a custom role's permissions, the identity-provider policies)
is refused, audited, when it newly grants a permission the caller lacks where it reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import peewee
from hark_fleet.hub.auth.permissions import BUILTIN_ROLES, sorted_permissions
from hark_fleet.hub.auth.principal import Grant, Principal, Sites, user_principal
from hark_fleet.hub.db.models import ApiKey, Group, Role, Site, SiteApprovedUser, User, UserGroup, database_proxy
from hark_fleet.hub.errors import Conflict, Forbidden
from hark_fleet.hub.services.audit import Actor, record

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


def access_grants(roles: list[str], sites: list[str] | None, groups: Iterable[Group]) -> tuple[Grant, ...]:
    """What roles on sites plus membership of `groups` grant."""
    grants = [Grant(role_permissions(roles), _sites(sites))]
    for group in groups:
        grants.append(Grant(role_permissions(group.roles or []), _sites(group.sites)))
    return tuple(g for g in grants if g.permissions)


def user_grants(user: User) -> tuple[Grant, ...]:
    return access_grants(user.roles or [], user.sites, user_groups(user.id))


def _reach(grants: Iterable[Grant]) -> dict[str, Sites]:
    """Each permission granted and where (None: every site)."""
    reach: dict[str, Sites] = {}
    for grant in grants:
        for permission in grant.permissions:
            held = reach.get(permission, frozenset())
            reach[permission] = None if held is None or grant.sites is None else held | grant.sites
    return reach


def not_held(caller: Principal, before: Iterable[Grant], after: Iterable[Grant]) -> tuple[list[str], Sites]:
    """What going from `before` to `after` newly grants that the caller does not hold there.

    The permissions (sorted) and the sites concerned (None: every site); no permissions when the
    caller holds all it grants. Taking access away, or keeping it, grants nothing.
    """
    had = _reach(before)
    lacking: set[str] = set()
    where: set[str] | None = set()
    for permission, sites in _reach(after).items():
        old = had.get(permission, frozenset())
        if old is None:
            continue
        held = caller.scope(permission).sites if caller.can(permission) else frozenset()
        if sites is None:
            if held is not None:
                lacking.add(permission)
                where = None
            continue
        outside = (sites - old) - (held if held is not None else sites)
        if outside:
            lacking.add(permission)
            where = None if where is None else where | outside
    return sorted_permissions(lacking), None if where is None else frozenset(where)


def refuse_not_held(
    actor: Actor,
    caller: Principal,
    action: str,
    target: tuple[str, str | None] | None,
    changes: Iterable[tuple[Iterable[Grant], Iterable[Grant]]],
) -> None:
    """Forbidden (audited as a failed `action`) when any change of grants (before, after) gives what the caller does not hold.

    A user answers 403 `forbidden` with `required`; an API key `insufficient_scope` with `required` and `current`.
    """
    lacking: set[str] = set()
    where: Sites = frozenset()
    for before, after in changes:
        permissions, sites = not_held(caller, before, after)
        if permissions:
            lacking.update(permissions)
            where = None if where is None or sites is None else where | sites
    if not lacking:
        return
    required = sorted_permissions(lacking)
    place = "on every site" if where is None else f"on {', '.join(sorted(where))}"
    message = f"You cannot grant permissions you do not hold: {', '.join(required)} ({place})."
    record(actor, action, permission="auth:manage", target=target, outcome="failure", reason=message)
    if caller.kind == "key":
        raise Forbidden(message, code="insufficient_scope", required=required, current=list(caller.key_scopes or ()))
    raise Forbidden(message, required=required)


def owner_id(actor: Actor) -> str | None:
    """Whose own a thing an actor makes is: a user's, a user key's user's, else a service key's own."""
    if actor.type == "user":
        return actor.id
    if actor.type == "key" and actor.id is not None:
        key = ApiKey.get_or_none(ApiKey.id == actor.id)
        return key.user_id if key is not None and key.user_id is not None else actor.id
    return None


def hidden_sites(user_id: str | None, grants: Iterable[Grant]) -> frozenset[str]:
    """The sites whose visibility keeps them from a user with these grants.

    `approved` sites are seen by full admins, the site's admins (auth:manage limited to it) and its
    approved users; `admin_only` sites by full admins and the site's admins; `public` ones by all.
    """
    restricted = list(Site.select(Site.id, Site.visibility).where(Site.visibility != "public"))
    if not restricted:
        return frozenset()
    admin_of: set[str] = set()
    for grant in grants:
        if "auth:manage" in grant.permissions:
            if grant.sites is None:
                return frozenset()  # a full admin sees every site
            admin_of |= grant.sites
    approved: set[str] = set()
    if user_id is not None:
        rows = SiteApprovedUser.select(SiteApprovedUser.site_id).where(SiteApprovedUser.user_id == user_id)
        approved = {row.site_id for row in rows}
    return frozenset(
        site.id for site in restricted if site.id not in admin_of and not (site.visibility == "approved" and site.id in approved)
    )


def hidden_for_user_id(user_id: str | None) -> frozenset[str]:
    """What is hidden from a user (a key sees what its user sees; a key with no user, only public sites)."""
    user = User.get_or_none(User.id == user_id) if user_id is not None else None
    if user is None:
        return hidden_sites(None, ())
    return hidden_sites(user.id, user_grants(user))


def site_managers(site_id: str) -> list[User]:
    """Enabled users holding auth:manage through a grant limited to sites that include `site_id` (by username).

    Four queries whatever the number of users (users, memberships, groups, custom roles), where
    `user_grants` per user would take a few each.
    """
    groups = {g.id: g for g in Group.select()}
    member_of: dict[str, list[Group]] = {}
    for row in UserGroup.select():
        if row.group_id in groups:
            member_of.setdefault(row.user_id, []).append(groups[row.group_id])
    custom = {r.name: frozenset(r.permissions or []) for r in Role.select(Role.name, Role.permissions)}

    def manages(roles: list[str] | None, sites: list[str] | None) -> bool:
        if sites is None or site_id not in sites:
            return False
        return any("auth:manage" in BUILTIN_ROLES.get(name, custom.get(name, frozenset())) for name in roles or [])

    users = User.select().where(User.disabled == False).order_by(User.username)  # noqa: E712 - SQL comparison
    return [
        user
        for user in users
        if manages(user.roles, user.sites) or any(manages(g.roles, g.sites) for g in member_of.get(user.id, []))
    ]


def principal_for_user(user: User, session_id: str | None = None, via: str = "password") -> Principal:
    grants = user_grants(user)
    return user_principal(user.id, user.username, grants, session_id=session_id, via=via, hidden=hidden_sites(user.id, grants))


def full_admin_ids() -> set[str]:
    """Enabled users who hold auth:manage on every site; there must always be one."""
    admins = set()
    for user in User.select().where(User.disabled == False):  # noqa: E712 - SQL comparison
        principal = user_principal(user.id, user.username, user_grants(user))
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
