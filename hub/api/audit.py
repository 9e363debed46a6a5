"""The audit log: list, facets, export and detail (`audit:read`)."""

from __future__ import annotations

from hub.api.base import BaseHandler
from hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hub.auth.principal import ALL_SITES
from hub.db.models import AuditEvent
from hub.services.audit import AUDIT_LIST, audit_to_api
from hub.services.listing import get_scoped


class AuditEventsHandler(ListHandler):
    """`GET /api/v1/audit-events`: newest first."""

    spec = AUDIT_LIST
    permissions = {"get": "audit:read"}


class AuditFacetsHandler(FacetsHandler):
    spec = AUDIT_LIST
    permissions = {"get": "audit:read"}


class AuditExportHandler(ExportHandler):
    spec = AUDIT_LIST
    permissions = {"get": "audit:read", "post": "audit:read"}


class AuditEventHandler(BaseHandler):
    """`GET /api/v1/audit-events/{id}`: one event with before and after."""

    permissions = {"get": "audit:read"}

    async def get(self, id: str) -> None:
        event = await self.hub.db.run(get_scoped, AuditEvent, id, None, ALL_SITES)
        self.write_data(audit_to_api(event))
