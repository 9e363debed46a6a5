"""The upload queue (issue 20): read it (site-scoped by each item's recording), queue recordings by hand, retry failures."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.api.upload_policies import nudge_runner
from hark_fleet.hub.services import upload_queue
from hark_fleet.hub.services.listing import parse_list_request
from hark_fleet.hub.services.upload_queue import QUEUE_LIST

READ = "recording:read"
CONTROL = "recording:control"


class EnqueueBody(msgspec.Struct, forbid_unknown_fields=True):
    # None: every enabled policy the recording matches, each to its providers
    provider_ids: list[str] | None = None


class BulkEnqueueBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str] | None = None  # recording ids
    filter: dict[str, str | list[str]] | None = None  # or a library filter (as the library's query parameters)
    provider_ids: list[str] | None = None


class QueueHandler(ListHandler):
    """`GET /api/v1/upload-queue`: newest first; filters state, provider_id, policy_id, site, node_id, route, recording_id, q."""

    spec = QUEUE_LIST
    permissions = {"get": READ}

    async def get(self) -> None:
        request = parse_list_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(upload_queue.queue_page, request, self.scope)
        self.write_page(items, next_cursor)


class QueueFacetsHandler(FacetsHandler):
    spec = QUEUE_LIST
    permissions = {"get": READ}


class QueueExportHandler(ExportHandler):
    spec = QUEUE_LIST
    permissions = {"get": READ, "post": READ}


class QueueOverviewHandler(BaseHandler):
    """`GET /api/v1/upload-queue/overview`: items and bytes by state, overall and per provider (the sync status)."""

    permissions = {"get": READ}

    async def get(self) -> None:
        self.write_data(await self.hub.db.run(upload_queue.overview, self.scope))


class QueueItemHandler(BaseHandler):
    """`GET /api/v1/upload-queue/{id}`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(upload_queue.item_detail, self.scope, id))


class QueueItemActionsHandler(BaseHandler):
    """`GET /api/v1/upload-queue/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(upload_queue.item_detail, self.scope, id)
        self.write_data(detail["actions"])


class RetryHandler(BaseHandler):
    """`POST /api/v1/upload-queue/{id}/retry`: a failed upload goes back to pending, due at once (409 otherwise)."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        item, events = await self.hub.db.run(upload_queue.retry, self.actor, self.scope, id)
        self.hub.ingest.publish_events(events)
        nudge_runner(self)
        self.write_data(item)


class RecordingEnqueueHandler(BaseHandler):
    """`POST /api/v1/recordings/{id}/upload-queue` `{"provider_ids"?}`: 201 with the recording's items for them."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        body = self.parse_body(EnqueueBody) if self.body_bytes().strip() else EnqueueBody()
        result, events = await self.hub.db.run(upload_queue.enqueue_manual, self.actor, self.scope, id, body.provider_ids)
        self.hub.ingest.publish_events(events)
        nudge_runner(self)
        self.write_data(result, 201)


class BulkEnqueueHandler(BaseHandler):
    """`POST /api/v1/bulk-upload-queue` `{"ids" | "filter", "provider_ids"?}`: a result per recording."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        body = self.parse_body(BulkEnqueueBody)
        filters = body.filter
        results, events = await self.hub.db.run(
            upload_queue.bulk_enqueue, self.actor, self.scope, body.ids, filters, body.provider_ids
        )
        self.hub.ingest.publish_events(events)
        nudge_runner(self)
        self.write_data(results)
