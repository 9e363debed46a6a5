"""Health events: one list of every problem, worked through by hand or in bulk."""

from __future__ import annotations

from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.services import health_events
from hark_fleet.hub.services.health import HEALTH_LIST

READ = "health:read"
ACT = "health:acknowledge"


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    severity: str = "warning"
    node_id: str | None = None
    details: dict[str, Any] = {}


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    until: str | None = None  # suppress: until when


class BulkBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]
    action: str
    until: str | None = None


class HealthEventsHandler(ListHandler):
    """`GET /api/v1/health-events` (newest first) and `POST` to raise one at the hub."""

    spec = HEALTH_LIST
    permissions = {"get": READ, "post": ACT}

    async def post(self) -> None:
        body = self.parse_body(CreateBody)
        event, events = await self.hub.db.run(
            health_events.create_event, self.actor, self.scope, body.node_id, body.kind, body.severity, body.details
        )
        self.hub.ingest.publish_events(events)
        self.write_data(event, 201)


class HealthFacetsHandler(FacetsHandler):
    spec = HEALTH_LIST
    permissions = {"get": READ}


class HealthExportHandler(ExportHandler):
    spec = HEALTH_LIST
    permissions = {"get": READ, "post": READ}


class HealthEventHandler(BaseHandler):
    """`GET /api/v1/health-events/{id}`: one event and the actions it allows now."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(health_events.event_detail, self.scope, id))


class HealthActionsHandler(BaseHandler):
    """`GET /api/v1/health-events/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(health_events.event_detail, self.scope, id)
        self.write_data(detail["actions"])


class HealthActionHandler(BaseHandler):
    """`POST /api/v1/health-events/{id}/{acknowledge|suppress|resolve|reopen}`."""

    permissions = {"post": ACT}
    action = ""

    async def post(self, id: str) -> None:
        body = self.parse_body(ActionBody) if self.body_bytes().strip() else ActionBody()
        event, events = await self.hub.db.run(
            health_events.act, self.actor, self.scope, id, self.action, self.optional_time(body.until, "until")
        )
        self.hub.ingest.publish_events(events)
        self.write_data(event)


class AcknowledgeHandler(HealthActionHandler):
    action = "acknowledge"


class SuppressHandler(HealthActionHandler):
    action = "suppress"


class ResolveHandler(HealthActionHandler):
    action = "resolve"


class ReopenHandler(HealthActionHandler):
    action = "reopen"


class BulkLifecycleHandler(BaseHandler):
    """`POST /api/v1/health-events/bulk-lifecycle` `{"ids", "action", "until"?}`: a result per id."""

    permissions = {"post": ACT}

    async def post(self) -> None:
        body = self.parse_body(BulkBody)
        results, events = await self.hub.db.run(
            health_events.bulk, self.actor, self.scope, body.ids, body.action, self.optional_time(body.until, "until")
        )
        self.hub.ingest.publish_events(events)
        self.write_data(results)
