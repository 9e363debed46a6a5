"""Who is making a request, what they were granted, and where: the one place site scope is decided."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["user", "key", "node"]
Sites = frozenset[str] | None  # None: every site


def intersect_sites(a: Sites, b: Sites) -> Sites:
    """The sites both limits allow (None is no limit)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


@dataclass(frozen=True, slots=True)
class Grant:
    """Permissions that hold on some sites (None: on every site)."""

    permissions: frozenset[str]
    sites: Sites = None


@dataclass(frozen=True, slots=True)
class SiteScope:
    """The sites a caller may see for one permission; objects elsewhere answer 404.

    `owner` is the caller's id where a family also shows the caller's own rows whatever their site.
    """

    sites: Sites
    owner: str | None = None

    def allows(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)


ALL_SITES = SiteScope(None)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user session, an API key or a node credential."""

    kind: PrincipalKind
    id: str
    name: str
    grants: tuple[Grant, ...]
    session_id: str | None = None
    user_id: str | None = None  # the user behind a session or a user key
    key_scopes: tuple[str, ...] | None = None  # what an API key was limited to
    via: str = "password"
    permissions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        granted: set[str] = set()
        for grant in self.grants:
            granted |= grant.permissions
        object.__setattr__(self, "permissions", frozenset(granted))

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def scope(self, permission: str) -> SiteScope:
        """Where `permission` holds for this caller."""
        sites: set[str] = set()
        for grant in self.grants:
            if permission in grant.permissions:
                if grant.sites is None:
                    return ALL_SITES
                sites |= grant.sites
        return SiteScope(frozenset(sites))

    @property
    def unrestricted_admin(self) -> bool:
        """Holds auth:manage on every site."""
        return self.scope("auth:manage").sites is None and self.can("auth:manage")


def user_principal(
    user_id: str, username: str, grants: Iterable[Grant], session_id: str | None = None, via: str = "password"
) -> Principal:
    return Principal("user", user_id, username, tuple(grants), session_id=session_id, user_id=user_id, via=via)
