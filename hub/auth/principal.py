"""Who is making a request, and the one place site scope is decided."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["user", "key", "node"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user session, an API key or a node credential."""

    kind: PrincipalKind
    id: str
    name: str
    permissions: frozenset[str]
    sites: frozenset[str] | None = None  # None: every site
    session_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def sees_site(self, site: str | None) -> bool:
        """Whether an object of `site` is inside this caller's scope."""
        return self.sites is None or (site is not None and site in self.sites)
