"""Channel maps (settings): templates, which node runs which, and the route a node reads its own from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.api.nodes import CONTROL, AgentHandler
from hark_fleet.hub.services import channel_maps
from hark_fleet.hub.services.channel_maps import ASSIGNMENT_LIST, TEMPLATE_LIST
from hark_fleet.hub.services.listing import parse_list_request
from hark_fleet.protocol.topics import command_topic

READ = "settings:read"
MANAGE = "settings:manage"
CONFIG_CHANGE = {"changed": ["channel_map"]}


class ChannelBody(msgspec.Struct, forbid_unknown_fields=True):
    input: int
    name: str
    calibration_db: float | None = None
    role: str | None = None


class ProgrammeBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    channels: list[str]


class TemplateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    channels: list[ChannelBody]
    description: str = ""
    programmes: list[ProgrammeBody] = []


class TemplatePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    channels: list[ChannelBody] | msgspec.UnsetType = msgspec.UNSET
    programmes: list[ProgrammeBody] | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class AssignBody(msgspec.Struct, forbid_unknown_fields=True):
    template_id: str


class BulkAssignBody(msgspec.Struct, forbid_unknown_fields=True):
    node_ids: list[str]
    template_id: str


class ChannelMapHandler(BaseHandler):
    """Tells nodes their channel map changed and publishes what changed on the events stream."""

    def announce(self, node_ids: Iterable[str], events: list[Any]) -> None:
        bridge = self.hub.bridge
        if bridge is not None:
            for node_id in node_ids:
                bridge.publish(command_topic(node_id, "config"), CONFIG_CHANGE)
        self.hub.ingest.publish_events(events)


# -- templates -----------------------------------------------------------------------------------


class TemplatesHandler(ListHandler):
    """`GET /api/v1/settings/channel-map-templates` and `POST` to create one (201)."""

    spec = TEMPLATE_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = self.parse_body(TemplateBody)
        template = await self.hub.db.run(
            channel_maps.create_template,
            self.actor,
            body.name,
            body.description,
            msgspec.to_builtins(body.channels),
            msgspec.to_builtins(body.programmes),
        )
        self.write_data(template, 201)


class TemplateFacetsHandler(FacetsHandler):
    spec = TEMPLATE_LIST
    permissions = {"get": READ}


class TemplateExportHandler(ExportHandler):
    spec = TEMPLATE_LIST
    permissions = {"get": READ, "post": READ}


class TemplateHandler(ChannelMapHandler):
    """`GET|PATCH|DELETE /api/v1/settings/channel-map-templates/{id}` (delete: 409 while assigned)."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_maps.template_detail, self.scope, id))

    async def patch(self, id: str) -> None:
        changes = {k: msgspec.to_builtins(v) for k, v in self.parse_changes(TemplatePatchBody).items()}
        template, node_ids, events = await self.hub.db.run(channel_maps.update_template, self.actor, self.scope, id, changes)
        self.announce(node_ids, events)
        self.write_data(template)

    async def delete(self, id: str) -> None:
        await self.hub.db.run(channel_maps.delete_template, self.actor, self.scope, id)
        self.write_no_content()


class TemplateActionsHandler(BaseHandler):
    """`GET /api/v1/settings/channel-map-templates/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(channel_maps.template_detail, self.scope, id)
        self.write_data(detail["actions"])


# -- assignments (the id is the node's) -------------------------------------------------------


class AssignmentsHandler(BaseHandler):
    """`GET /api/v1/settings/channel-map-assignments`: nodes and their templates, in the caller's sites."""

    permissions = {"get": READ}

    async def get(self) -> None:
        request = parse_list_request(ASSIGNMENT_LIST, self.query_args())
        items, next_cursor = await self.hub.db.run(channel_maps.list_assignments, request, self.scope)
        self.write_page(items, next_cursor)


class BulkAssignHandler(ChannelMapHandler):
    """`POST /api/v1/settings/channel-map-assignments/bulk` `{"node_ids", "template_id"}`: a result per node."""

    permissions = {"post": MANAGE}

    async def post(self) -> None:
        body = self.parse_body(BulkAssignBody)
        results, changed, events = await self.hub.db.run(
            channel_maps.bulk_assign, self.actor, self.scope, body.node_ids, body.template_id
        )
        self.announce(changed, events)
        self.write_data(results)


class AssignmentHandler(ChannelMapHandler):
    """`GET|PUT|DELETE /api/v1/settings/channel-map-assignments/{id}` where `id` is the node's."""

    permissions = {"get": READ, "put": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_maps.assignment_detail, self.scope, id))

    async def put(self, id: str) -> None:
        body = self.parse_body(AssignBody)
        assignment, changed, events = await self.hub.db.run(channel_maps.assign, self.actor, self.scope, id, body.template_id)
        if changed:
            self.announce([id], events)
        self.write_data(assignment)

    async def delete(self, id: str) -> None:
        events = await self.hub.db.run(channel_maps.unassign, self.actor, self.scope, id)
        self.announce([id], events)
        self.write_no_content()


class AssignmentActionsHandler(BaseHandler):
    """`GET /api/v1/settings/channel-map-assignments/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(channel_maps.assignment_detail, self.scope, id)
        self.write_data(detail["actions"])


class RollbackHandler(ChannelMapHandler):
    """`POST /api/v1/settings/channel-map-assignments/{id}/rollback`: back to the previous template."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        assignment, events = await self.hub.db.run(channel_maps.rollback, self.actor, self.scope, id)
        self.announce([id], events)
        self.write_data(assignment)


# -- the node's own ------------------------------------------------------------------------------


class AgentChannelMapHandler(AgentHandler):
    """`GET /api/v1/nodes/{id}/channel-map-assignments`: the node's template in full, or `null`."""

    permissions = {"get": CONTROL}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_maps.agent_assignment, id))
