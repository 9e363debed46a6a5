"""User administration: create, grant access, reset, enable/disable, delete; the last admin stays.

Nobody grants what they do not hold: creating a user or changing their access may only add
permissions (on sites) the caller holds there, and nobody disables or deletes themselves
(by session or through one of their keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hark_fleet.hub.auth.passwords import hash_password, password_problem
from hark_fleet.hub.auth.principal import Principal, Sites
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import ApiKey, Group, Site, SiteApprovedUser, User, UserGroup, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.auth import revoke_user_sessions, user_to_api
from hark_fleet.hub.services.grants import (
    access_grants,
    full_admin_ids,
    keeping_an_admin,
    principal_for_user,
    refuse_not_held,
    user_grants,
    user_groups,
)
from hark_fleet.hub.services.listing import Filter, ListSpec
from hark_fleet.hub.services.roles import unknown_roles

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}")
SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


USER_LIST = ListSpec(
    model=User,
    serialize=user_to_api,
    filters=(
        Filter("role", User.roles, contains=True),
        Filter("site", User.sites, contains=True),
        Filter("disabled", User.disabled, query.boolean),
    ),
    search=(User.username, User.display_name),
    time_field=User.created_at,
    export_columns=("id", "username", "display_name", "roles", "sites", "groups", "disabled", "sso", "created_at"),
)


def check_sites(sites: list[str] | None, field: str = "sites") -> list[str] | None:
    """Sites a grant or node names: each must be a site (`POST /api/v1/sites` makes one)."""
    if sites is None:
        return None
    bad = [s for s in sites if not SITE.fullmatch(s)]
    if bad:
        raise InvalidRequest("Invalid site names.", fields={field: f"not site names: {', '.join(bad[:5])}"})
    wanted = sorted(set(sites))
    found = {site.id for site in Site.select(Site.id).where(Site.id.in_(wanted))} if wanted else set()
    missing = [s for s in wanted if s not in found]
    if missing:
        raise InvalidRequest("Unknown sites.", fields={field: f"no site {', '.join(missing[:5])}"})
    return wanted


def check_roles(roles: list[str], field: str = "roles") -> list[str]:
    unknown = unknown_roles(roles)
    if unknown:
        raise InvalidRequest("Unknown roles.", fields={field: f"unknown roles: {', '.join(unknown)}"})
    return list(dict.fromkeys(roles))


def _check_groups(group_ids: list[str]) -> list[str]:
    found = {g.id for g in Group.select(Group.id).where(Group.id.in_(group_ids))} if group_ids else set()
    missing = [g for g in group_ids if g not in found]
    if missing:
        raise InvalidRequest("Unknown groups.", fields={"groups": f"no groups {', '.join(missing[:5])}"})
    return list(dict.fromkeys(group_ids))


def _groups(group_ids: list[str]) -> list[Group]:
    return list(Group.select().where(Group.id.in_(group_ids))) if group_ids else []


def _is_self(caller: Principal, user: User) -> bool:
    """The caller is this user (a session, or one of the user's keys)."""
    return (caller.user_id or (caller.id if caller.kind == "user" else None)) == user.id


def get_user(user_id: str, admin_of: Sites = None) -> User:
    """A user; for a site admin (`admin_of`: the sites where it holds auth:manage) only one of its sites' users, else 404."""
    user = User.get_or_none(User.id == user_id)
    if user is None or (admin_of is not None and not within_sites(user.sites, [g.sites for g in user_groups(user.id)], admin_of)):
        raise NotFound(f"No user {user_id}.")
    return user


def within_sites(sites: list[str] | None, group_sites: Iterable[list[str] | None], admin_of: frozenset[str]) -> bool:
    """Whether every grant (the user's own sites and each group's) lies within `admin_of` (None: every site, never within)."""
    return all(s is not None and set(s) <= admin_of for s in (sites, *group_sites))


def manageable_user_ids(admin_of: frozenset[str]) -> list[str]:
    """The users a site admin of `admin_of` manages: those whose every grant lies within those sites."""
    group_sites = {g.id: g.sites for g in Group.select(Group.id, Group.sites)}
    memberships: dict[str, list[list[str] | None]] = {}
    for row in UserGroup.select():
        memberships.setdefault(row.user_id, []).append(group_sites.get(row.group_id))
    users = User.select(User.id, User.sites)
    return [u.id for u in users if within_sites(u.sites, memberships.get(u.id, []), admin_of)]


def check_within(admin_of: Sites, sites: list[str] | None, groups: list[str]) -> None:
    """A site admin gives access only within its sites: the user's sites and each group's must be among them (400)."""
    if admin_of is None:
        return
    allowed = ", ".join(sorted(admin_of)) or "none"
    if sites is None or not set(sites) <= admin_of:
        raise InvalidRequest("Choose among your sites.", fields={"sites": f"name only sites you administer ({allowed})"})
    outside = [g.name for g in _groups(groups) if g.sites is None or not set(g.sites) <= admin_of]
    if outside:
        raise InvalidRequest(
            "Those groups reach beyond your sites.",
            fields={"groups": f"reach sites you do not administer: {', '.join(outside[:5])}"},
        )


def create_user(
    actor: Actor,
    caller: Principal,
    username: str,
    password: str,
    roles: list[str],
    sites: list[str] | None,
    groups: list[str],
    display_name: str | None,
    admin_of: Sites = None,
) -> dict[str, Any]:
    """A new user; a site admin (`admin_of`: its sites) may only make users whose every grant lies within its sites."""
    problems: dict[str, str] = {}
    if not USERNAME.fullmatch(username):
        problems["username"] = "1-150 characters: letters, digits and _ . @ + -, starting with a letter or digit"
    problem = password_problem(password)
    if problem:
        problems["password"] = problem
    if problems:
        raise InvalidRequest("The user cannot be created.", fields=problems)
    roles, sites, groups = check_roles(roles), check_sites(sites), _check_groups(groups)
    if User.select().where(User.username == username).exists():
        raise Conflict(f"A user named {username} exists.")
    refuse_not_held(actor, caller, "user.create", None, [((), access_grants(roles, sites, _groups(groups)))])
    check_within(admin_of, sites, groups)  # also what grants nothing yet: a site admin's users stay in its sites
    now = utcnow()
    with database_proxy.atomic():
        user = User.create(
            id=new_id("usr"),
            username=username,
            display_name=(display_name or "")[:200] or None,
            password_hash=hash_password(password),
            roles=roles,
            sites=sites,
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        for group_id in groups:
            UserGroup.create(user_id=user.id, group_id=group_id)
        after = user_to_api(user)
        record(actor, "user.create", permission="auth:manage", target=("user", user.id), after=after)
    return after


def user_actions(user: User, caller: Principal) -> dict[str, dict[str, Any]]:
    """Which lifecycle actions the caller may take on this user now, and why not."""
    admins = full_admin_ids()
    last_admin = admins == {user.id}
    is_self = _is_self(caller, user)

    def state(allowed: bool, reason: str | None = None) -> dict[str, Any]:
        return {"allowed": allowed, "reason": None if allowed else reason}

    return {
        "update_access": state(True),
        "reset_password": state(user.oidc_subject is None, "this user signs in through single sign-on"),
        "disable": state(
            not user.disabled and not last_admin and not is_self,
            "already disabled" if user.disabled else "the last admin" if last_admin else "you cannot disable yourself",
        ),
        "enable": state(bool(user.disabled), "already enabled"),
        "delete": state(not last_admin and not is_self, "the last admin" if last_admin else "you cannot delete yourself"),
    }


def user_detail(user_id: str, caller: Principal, admin_of: Sites = None) -> dict[str, Any]:
    user = get_user(user_id, admin_of)
    principal = principal_for_user(user)
    return {
        **user_to_api(user),
        "permissions": sorted(principal.permissions),
        "actions": user_actions(user, caller),
    }


def update_access(
    actor: Actor,
    caller: Principal,
    user_id: str,
    roles: list[str] | None,
    sites: Any,
    groups: list[str] | None,
    set_sites: bool,
    admin_of: Sites = None,
) -> dict[str, Any]:
    """Replace each of roles, sites (None: every site) and groups given; keep those left out (None, not set).

    A site admin (`admin_of`) changes only its sites' users, and only to grants within its sites.
    """
    user = get_user(user_id, admin_of)
    before = user_to_api(user)
    new_roles = check_roles(roles) if roles is not None else None
    new_sites = check_sites(sites) if set_sites else None
    new_groups = _check_groups(groups) if groups is not None else None
    granted = access_grants(
        new_roles if new_roles is not None else list(user.roles or []),
        new_sites if set_sites else user.sites,
        _groups(new_groups) if new_groups is not None else user_groups(user.id),
    )
    refuse_not_held(actor, caller, "user.access.update", ("user", user.id), [(user_grants(user), granted)])
    check_within(
        admin_of,
        new_sites if set_sites else user.sites,
        new_groups if new_groups is not None else [g.id for g in user_groups(user.id)],
    )

    def change() -> dict[str, Any]:
        fields: dict[str, Any] = {"updated_at": utcnow()}
        if new_roles is not None:
            fields["roles"] = new_roles
        if set_sites:
            fields["sites"] = new_sites
        User.update(**fields).where(User.id == user.id).execute()
        if new_groups is not None:
            UserGroup.delete().where(UserGroup.user_id == user.id).execute()
            for group_id in new_groups:
                UserGroup.create(user_id=user.id, group_id=group_id)
        after = user_to_api(get_user(user.id))
        record(actor, "user.access.update", permission="auth:manage", target=("user", user.id), before=before, after=after)
        return after

    return keeping_an_admin(change)


def reset_password(actor: Actor, user_id: str, password: str, admin_of: Sites = None) -> dict[str, Any]:
    user = get_user(user_id, admin_of)
    if user.oidc_subject is not None:
        raise Conflict("This user signs in through single sign-on and has no password here.", code="sso_user")
    problem = password_problem(password)
    if problem:
        raise InvalidRequest("The password is not acceptable.", fields={"password": problem})
    with database_proxy.atomic():
        now = utcnow()
        User.update(password_hash=hash_password(password), password_changed_at=now, updated_at=now).where(
            User.id == user.id
        ).execute()
        revoked = revoke_user_sessions(user.id)
        record(
            actor, "user.password.reset", permission="auth:manage", target=("user", user.id), after={"sessions_revoked": revoked}
        )
    return user_to_api(get_user(user.id))


def set_status(actor: Actor, caller: Principal, user_id: str, status: str, admin_of: Sites = None) -> dict[str, Any]:
    if status not in ("active", "disabled"):
        raise InvalidRequest("Unknown status.", fields={"status": "must be active or disabled"})
    user = get_user(user_id, admin_of)
    if _is_self(caller, user) and status == "disabled":
        raise Conflict("You cannot disable yourself.")
    before = user_to_api(user)

    def change() -> dict[str, Any]:
        User.update(disabled=status == "disabled", updated_at=utcnow()).where(User.id == user.id).execute()
        if status == "disabled":
            revoke_user_sessions(user.id)
        after = user_to_api(get_user(user.id))
        action = "user.disable" if status == "disabled" else "user.enable"
        record(actor, action, permission="auth:manage", target=("user", user.id), before=before, after=after)
        return after

    return keeping_an_admin(change)


def delete_user(actor: Actor, caller: Principal, user_id: str, admin_of: Sites = None) -> None:
    user = get_user(user_id, admin_of)
    if _is_self(caller, user):
        raise Conflict("You cannot delete yourself.")
    before = user_to_api(user)

    def change() -> None:
        UserGroup.delete().where(UserGroup.user_id == user.id).execute()
        SiteApprovedUser.delete().where(SiteApprovedUser.user_id == user.id).execute()
        # Its keys, and every key it made (created_by is the user at the root of a chain of keys).
        made = (ApiKey.user_id == user.id) | (ApiKey.created_by == user.id)
        keys = [k.id for k in ApiKey.select(ApiKey.id).where(made, ApiKey.revoked_at.is_null())]
        ApiKey.update(revoked_at=utcnow()).where(ApiKey.id.in_(keys)).execute()
        user.delete_instance()
        record(actor, "user.delete", permission="auth:manage", target=("user", user.id), before=before)
        for key_id in keys:
            record(actor, "api_key.revoke", permission="auth:manage", target=("api_key", key_id), reason="its user was deleted")

    keeping_an_admin(change)
