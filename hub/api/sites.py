"""Sites: list, facets, export, detail, actions, create, change, delete (with a preview), approved users.

Reads need `site:read`, writes `site:manage`; creating and deleting a site need it on every site,
changing one and its approved users only on that site (other sites answer 404).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWide, HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.services import sites
from hark_fleet.hub.services.sites import SITE_LIST

READ = sites.READ
MANAGE = sites.MANAGE
Text = Annotated[str, msgspec.Meta(max_length=200)]
Notes = Annotated[str, msgspec.Meta(max_length=sites.NOTES_MAX)]
Zone = Annotated[str, msgspec.Meta(max_length=64)]


class SiteBody(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(max_length=100)]
    name: Text | msgspec.UnsetType = msgspec.UNSET
    time_zone: Zone = "UTC"
    latitude: float | None = None
    longitude: float | None = None
    elevation_m: float | None = None
    visibility: str = "public"
    notes: Notes = ""


class SitePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Text | msgspec.UnsetType = msgspec.UNSET
    time_zone: Zone | msgspec.UnsetType = msgspec.UNSET
    latitude: float | None | msgspec.UnsetType = msgspec.UNSET
    longitude: float | None | msgspec.UnsetType = msgspec.UNSET
    elevation_m: float | None | msgspec.UnsetType = msgspec.UNSET
    visibility: str | msgspec.UnsetType = msgspec.UNSET
    notes: Notes | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class ApprovalBody(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[str, msgspec.Meta(max_length=40)]


class SitesHandler(HubWideWrites, ListHandler):
    """`GET /api/v1/sites` and `POST` to create one (201; needs site:manage on every site)."""

    spec = SITE_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = self.parse_body(SiteBody)
        values = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
        site = await self.hub.db.run(sites.create_site, self.actor, values)
        self.hub.authenticator.forget_all()  # a site that is not public is hidden from callers at once
        self.write_data(site, 201)


class SiteFacetsHandler(FacetsHandler):
    spec = SITE_LIST
    permissions = {"get": READ}


class SiteExportHandler(ExportHandler):
    spec = SITE_LIST
    permissions = {"get": READ, "post": READ}


class SiteHandler(HubWide):
    """`GET|PATCH|DELETE /api/v1/sites/{id}`; delete needs `?force=true` while nodes or grants name the site."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}
    hub_wide_methods = frozenset({"delete"})

    async def get(self, id: str) -> None:
        assert self.principal is not None
        self.write_data(await self.hub.db.run(sites.site_detail, self.scope, id, self.principal))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(SitePatchBody)
        site = await self.hub.db.run(sites.update_site, self.actor, self.scope, id, changes)
        self.hub.authenticator.forget_all()  # visibility decides who sees the site
        self.write_data(site)

    async def delete(self, id: str) -> None:
        force = self.query_flag("force")
        await self.hub.db.run(sites.delete_site, self.actor, self.scope, id, force)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class SiteActionsHandler(BaseHandler):
    """`GET /api/v1/sites/{id}/actions`: what the caller may do to this site now."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        assert self.principal is not None
        detail = await self.hub.db.run(sites.site_detail, self.scope, id, self.principal)
        self.write_data(detail["actions"])


class SiteDeletePreviewHandler(BaseHandler):
    """`GET /api/v1/sites/{id}/delete-preview`: the nodes and grants that block deleting, and whether it needs `?force`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(sites.delete_preview, self.scope, id))


class SiteApprovedUsersHandler(BaseHandler):
    """`POST /api/v1/sites/{id}/approved-users` `{"user_id"}`: the user may see the site while it is `approved`."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        body = self.parse_body(ApprovalBody)
        site = await self.hub.db.run(sites.approve_user, self.actor, self.scope, id, body.user_id)
        self.hub.authenticator.forget_all()
        self.write_data(site, 201)


class SiteApprovedUserHandler(BaseHandler):
    """`DELETE /api/v1/sites/{id}/approved-users/{iid}`: withdraw a user's approval."""

    permissions = {"delete": MANAGE}

    async def delete(self, id: str, iid: str) -> None:
        await self.hub.db.run(sites.unapprove_user, self.actor, self.scope, id, iid)
        self.hub.authenticator.forget_all()
        self.write_no_content()
