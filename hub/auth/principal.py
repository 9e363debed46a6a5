"""Who is making a request, what they were granted, and where: the one place site scope is decided."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from hark_fleet.hub.auth.permissions import with_implied

PrincipalKind = Literal["user", "key", "node"]
READ = "recording:read"
READ_OWN = "recording:read_own"
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

    `sites` None is every site except `hidden` (sites whose visibility keeps them from this caller;
    an explicit `sites` never holds a hidden one). `owner` is the caller's id where a family also
    shows the caller's own rows whatever their site.
    """

    sites: Sites
    owner: str | None = None
    hidden: frozenset[str] = frozenset()

    def allows(self, site: str | None) -> bool:
        if self.sites is None:
            return site is None or site not in self.hidden
        return site is not None and site in self.sites

    def allows_row(self, site: str | None, owner: str | None) -> bool:
        """Whether a row of `site` made by `owner` is inside the scope."""
        return self.allows(site) or (self.owner is not None and owner == self.owner)

    @property
    def everywhere(self) -> bool:
        """Every site, none hidden: no site clause at all."""
        return self.sites is None and not self.hidden


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
    hidden: frozenset[str] = frozenset()  # sites whose visibility keeps them from this caller
    permissions: frozenset[str] = field(init=False)
    # permission -> SiteScope, worked out once per principal (the authenticator keeps a principal per token)
    _scopes: dict[str, SiteScope] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        grants = tuple(Grant(with_implied(g.permissions), g.sites) for g in self.grants)
        object.__setattr__(self, "grants", grants)
        granted: set[str] = set()
        for grant in grants:
            granted |= grant.permissions
        object.__setattr__(self, "permissions", frozenset(granted))
        object.__setattr__(self, "_scopes", {})

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def scope(self, permission: str) -> SiteScope:
        """Where `permission` holds for this caller (less the sites hidden from it).

        `recording:read_own` is the recordings the caller may read: those of the sites where it holds
        `recording:read`, and the ones it started whatever their site.
        """
        known = self._scopes.get(permission)
        if known is None:
            known = self._scopes[permission] = self._scope(permission)
        return known

    def _scope(self, permission: str) -> SiteScope:
        if permission == READ_OWN:
            read = self.scope(READ) if self.can(READ) else SiteScope(frozenset(), hidden=self.hidden)
            return SiteScope(read.sites, owner=self.user_id or self.id, hidden=read.hidden)
        sites: set[str] = set()
        for grant in self.grants:
            if permission in grant.permissions:
                if grant.sites is None:
                    return SiteScope(None, hidden=self.hidden) if self.hidden else ALL_SITES
                sites |= grant.sites
        return SiteScope(frozenset(sites) - self.hidden)

    @property
    def unrestricted_admin(self) -> bool:
        """Holds auth:manage on every site."""
        return self.scope("auth:manage").sites is None and self.can("auth:manage")


def user_principal(
    user_id: str,
    username: str,
    grants: Iterable[Grant],
    session_id: str | None = None,
    via: str = "password",
    hidden: frozenset[str] = frozenset(),
) -> Principal:
    return Principal("user", user_id, username, tuple(grants), session_id=session_id, user_id=user_id, via=via, hidden=hidden)
