"""The audit log: list, facets, export and detail (`audit:read`, scoped like the objects the events are about)."""

from __future__ import annotations

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.services.audit import AUDIT_LIST, audit_to_api, reader_scope
from hark_fleet.hub.services.listing import get_scoped


class AuditReader(BaseHandler):
    """A site-limited reader sees its sites' events and its own actions; hub-wide ones need audit:read everywhere."""

    async def authorize(self, permission: str) -> None:
        await super().authorize(permission)
        assert self.principal is not None
        self.scope = reader_scope(self.principal, self.scope)


class AuditEventsHandler(AuditReader, ListHandler):
    """`GET /api/v1/audit-events`: newest first."""

    spec = AUDIT_LIST
    permissions = {"get": "audit:read"}


class AuditFacetsHandler(AuditReader, FacetsHandler):
    spec = AUDIT_LIST
    permissions = {"get": "audit:read"}


class AuditExportHandler(AuditReader, ExportHandler):
    spec = AUDIT_LIST
    permissions = {"get": "audit:read", "post": "audit:read"}


class AuditEventHandler(AuditReader):
    """`GET /api/v1/audit-events/{id}`: one event with before and after."""

    permissions = {"get": "audit:read"}

    async def get(self, id: str) -> None:
        spec = AUDIT_LIST
        event = await self.hub.db.run(get_scoped, spec.model, id, spec.site_field, self.scope, spec.owner_field)
        self.write_data(audit_to_api(event))
