"""Routes over hub-wide objects (users, groups, roles, recording profiles): their writes need the permission on every site.

A grant limited to some sites reaches only those sites' nodes, recordings and events; an
object every site shares is not inside any one site, so changing it with a site-limited
grant would reach beyond the grant (a site admin lifting their own limit, or changing the
profile every site records with).
"""

from __future__ import annotations

from typing import ClassVar

from hark_fleet.hub.api.base import HTTP_METHODS, BaseHandler
from hark_fleet.hub.errors import Forbidden


class HubWide(BaseHandler):
    """Methods in `hub_wide_methods` need the route's permission on every site (403 otherwise, audited)."""

    hub_wide_methods: ClassVar[frozenset[str]] = frozenset(HTTP_METHODS)

    async def authorize(self, permission: str) -> None:
        await super().authorize(permission)
        if self.request.method.lower() not in self.hub_wide_methods or self.scope.sites is None:
            return
        await self.audit(
            "access.denied", permission=permission, outcome="failure", reason=f"{self.request.method} {self.route}: site-limited"
        )
        raise Forbidden(
            f"This needs the permission {permission} on every site: what it changes is shared by all sites.",
            required=[permission],
        )


class HubWideWrites(HubWide):
    """Reads follow the caller's scope; creating, changing and deleting need the permission on every site."""

    hub_wide_methods = frozenset({"post", "put", "patch", "delete"})
