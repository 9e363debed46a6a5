"""Access policies: session lifetime and how identity-provider claims map to roles and sites.

The claim mappings and default roles grant access to whoever logs in through the identity
provider (possibly the caller), so a change may only newly give what the caller holds there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from hark_fleet.hub import const
from hark_fleet.hub.auth.principal import Grant, Principal
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Setting
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import access_grants, refuse_not_held
from hark_fleet.hub.services.roles import unknown_roles

KEY = "access_policies"


class ClaimMapping(msgspec.Struct, forbid_unknown_fields=True):
    """Users whose ID token claim `claim` equals (or, for a list claim, contains) `value` get these roles on these sites."""

    claim: str
    value: str
    roles: list[str]
    sites: list[str] | None = None


class AccessPolicies(msgspec.Struct, forbid_unknown_fields=True):
    session_ttl_s: int = const.SESSION_TTL_S
    oidc_default_roles: list[str] = []
    oidc_mappings: list[ClaimMapping] = []
    oidc_sites_claim: str | None = None


class AccessPoliciesPatch(msgspec.Struct, forbid_unknown_fields=True):
    session_ttl_s: int | msgspec.UnsetType = msgspec.UNSET
    oidc_default_roles: list[str] | msgspec.UnsetType = msgspec.UNSET
    oidc_mappings: list[ClaimMapping] | msgspec.UnsetType = msgspec.UNSET
    oidc_sites_claim: str | None | msgspec.UnsetType = msgspec.UNSET


def load() -> AccessPolicies:
    row = Setting.get_or_none(Setting.key == KEY)
    if row is None:
        return AccessPolicies()
    return msgspec.convert(row.value, AccessPolicies)


def to_api(policies: AccessPolicies) -> dict[str, Any]:
    return msgspec.to_builtins(policies)


def _granted(policies: AccessPolicies) -> dict[tuple[str, str] | None, tuple[Grant, ...]]:
    """What the policies grant to those each claim mapping matches (by claim and value) and, under None, to those none does.

    A mapping's roles count on its sites (the sites claim can only narrow them); the default roles on every site.
    """
    granted: dict[tuple[str, str] | None, tuple[Grant, ...]] = {None: access_grants(policies.oidc_default_roles, None, ())}
    for mapping in policies.oidc_mappings:
        key = (mapping.claim, mapping.value)
        granted[key] = granted.get(key, ()) + access_grants(mapping.roles, mapping.sites, ())
    return granted


def _changes(before: AccessPolicies, after: AccessPolicies) -> Iterator[tuple[tuple[Grant, ...], tuple[Grant, ...]]]:
    """For each set of identity-provider users, what they were granted and what they would be."""
    had, granted = _granted(before), _granted(after)
    for key, grants in granted.items():
        yield had.get(key, ()), grants
    for key, grants in had.items():
        if key not in granted:  # those a removed mapping matched now get the default roles
            yield grants, granted[None]


def update(actor: Actor, caller: Principal, patch: AccessPoliciesPatch) -> dict[str, Any]:
    """Replace the given policies (validated; granting only what the caller holds), audited with before and after."""
    before = load()
    changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not msgspec.UNSET}
    after = msgspec.structs.replace(before, **changes)
    problems: dict[str, str] = {}
    if not 300 <= after.session_ttl_s <= 30 * 86400:
        problems["session_ttl_s"] = "must be between 300 and 2592000 seconds"
    unknown = unknown_roles(after.oidc_default_roles)
    if unknown:
        problems["oidc_default_roles"] = f"unknown roles: {', '.join(unknown)}"
    for index, mapping in enumerate(after.oidc_mappings):
        unknown = unknown_roles(mapping.roles)
        if unknown:
            problems[f"oidc_mappings[{index}].roles"] = f"unknown roles: {', '.join(unknown)}"
    if problems:
        raise InvalidRequest("Some policies are invalid.", fields=problems)
    refuse_not_held(actor, caller, "access_policy.update", ("access_policies", KEY), _changes(before, after))
    value = to_api(after)
    Setting.insert(key=KEY, value=value, updated_at=utcnow()).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: value, Setting.updated_at: utcnow()}
    ).execute()
    record(
        actor,
        "access_policy.update",
        permission="auth:manage",
        target=("access_policies", KEY),
        before=to_api(before),
        after=value,
    )
    return value
