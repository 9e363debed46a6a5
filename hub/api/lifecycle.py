"""Lifecycle actions on a node: request one (202 with its job) and follow the node's jobs."""

from __future__ import annotations

import dataclasses

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.services import lifecycle, nodes
from hark_fleet.hub.services.lifecycle import LIFECYCLE_LIST
from hark_fleet.hub.services.listing import fetch_page, parse_list_request
from hark_fleet.protocol.messages import LifecycleCommand
from hark_fleet.protocol.topics import command_topic


class LifecycleBody(msgspec.Struct, forbid_unknown_fields=True):
    timeout_s: float | None = None  # how long the node lets the action run
    expires_in_s: float | None = None  # how long the job may wait for an offline node (default 1 h)


class LifecycleActionHandler(BaseHandler):
    """`POST /api/v1/nodes/{id}/lifecycle/{action}`: queue an allowlisted action; sent at once if the node is connected."""

    permissions = {"post": "node:manage"}

    async def post(self, id: str, action: str) -> None:
        lifecycle.check_action(action)
        body = self.parse_body(LifecycleBody) if self.body_bytes().strip() else LifecycleBody()
        job, connected, events = await self.hub.db.run(
            lifecycle.create_job, self.actor, self.scope, id, action, body.timeout_s, body.expires_in_s
        )
        self.hub.ingest.publish_events(events)
        bridge = self.hub.bridge
        if connected and bridge is not None:
            command = LifecycleCommand(
                job_id=job["id"], action=job["action"], timeout_s=job["timeout_s"], expires_at=job["expires_at"]
            )
            if bridge.publish(command_topic(id, "lifecycle"), msgspec.json.encode(command)):
                sent = await self.hub.db.run(lifecycle.mark_sent, [job["id"]])
                self.hub.ingest.publish_events(sent)
                job = sent[0].data if sent else job
        self.write_data(job, 202)


class LifecycleJobsHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/lifecycle-jobs`: the node's jobs, newest first (filters `action`, `state`)."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        await self.hub.db.run(nodes.get_node, id, self.scope)
        request = parse_list_request(LIFECYCLE_LIST, self.query_args())
        request = dataclasses.replace(request, filters={**request.filters, "node_id": (id,)})
        items, next_cursor = await self.hub.db.run(fetch_page, LIFECYCLE_LIST, request, self.scope)
        self.write_page(items, next_cursor)


class LifecycleJobHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/lifecycle-jobs/{jid}`: one job with its captured output."""

    permissions = {"get": "node:read"}

    async def get(self, id: str, jid: str) -> None:
        self.write_data(await self.hub.db.run(lifecycle.get_job, self.scope, id, jid))
