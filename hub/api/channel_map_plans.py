"""Channel-map plans (settings): stage a template change across many nodes, see the diff, apply, roll back."""

from __future__ import annotations

from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.channel_maps import ChannelMapHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.services import channel_map_plans
from hark_fleet.hub.services.channel_map_plans import PLAN_LIST

READ = "settings:read"
MANAGE = "settings:manage"


class TargetBody(msgspec.Struct, forbid_unknown_fields=True):
    sites: list[str] = []
    tags: list[str] = []
    node_ids: list[str] = []


class PlanBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    target: TargetBody
    template_id: str | None = None  # None: the plan unassigns
    description: str = ""
    timeout_s: float = channel_map_plans.DEFAULT_TIMEOUT_S


class PlanPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    template_id: str | None | msgspec.UnsetType = msgspec.UNSET
    target: TargetBody | msgspec.UnsetType = msgspec.UNSET
    timeout_s: float | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class ApplyBody(msgspec.Struct, forbid_unknown_fields=True):
    version: int | None = None  # the version last read: 409 if it moved on


class PlanScope(BaseHandler):
    """A site-limited caller sees its sites' plans and the ones it made (whatever sites they reach)."""

    async def authorize(self, permission: str) -> None:
        await super().authorize(permission)
        if self.scope.sites is not None and self.principal is not None:
            self.scope = SiteScope(self.scope.sites, owner=self.principal.id)


class PlansHandler(PlanScope, ListHandler):
    """`GET /api/v1/settings/channel-map-plans` (newest first) and `POST` to stage one (201)."""

    spec = PLAN_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = msgspec.to_builtins(self.parse_body(PlanBody))
        self.write_data(await self.hub.db.run(channel_map_plans.stage_plan, self.actor, self.scope, body), 201)


class PlanFacetsHandler(PlanScope, FacetsHandler):
    spec = PLAN_LIST
    permissions = {"get": READ}


class PlanExportHandler(PlanScope, ExportHandler):
    spec = PLAN_LIST
    permissions = {"get": READ, "post": READ}


class PlanHandler(PlanScope):
    """`GET|PATCH|DELETE /api/v1/settings/channel-map-plans/{id}` (changes only while staged)."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_map_plans.plan_detail, self.scope, id))

    async def patch(self, id: str) -> None:
        changes = {k: msgspec.to_builtins(v) for k, v in self.parse_changes(PlanPatchBody).items()}
        self.write_data(await self.hub.db.run(channel_map_plans.update_plan, self.actor, self.scope, id, changes))

    async def delete(self, id: str) -> None:
        await self.hub.db.run(channel_map_plans.delete_plan, self.actor, self.scope, id)
        self.write_no_content()


class PlanActionsHandler(PlanScope):
    """`GET /api/v1/settings/channel-map-plans/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(channel_map_plans.plan_detail, self.scope, id)
        self.write_data(detail["actions"])


class PlanDiffHandler(PlanScope):
    """`GET /api/v1/settings/channel-map-plans/{id}/diff`: per node, what would change; nothing is applied."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_map_plans.plan_diff, self.scope, id))


class PlanChangeHandler(PlanScope, ChannelMapHandler):
    """Tells the nodes a plan changed on `cmd/config` and publishes their assignment events."""

    def finish_change(self, result: tuple[dict[str, Any], list[str], list[Any]], status: int) -> None:
        plan, node_ids, events = result
        self.announce(node_ids, events)
        self.write_data(plan, status)


class PlanApplyHandler(PlanChangeHandler):
    """`POST /api/v1/settings/channel-map-plans/{id}/apply` (202): each node must confirm within the plan's timeout."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        body = self.parse_body(ApplyBody) if self.body_bytes().strip() else ApplyBody()
        result = await self.hub.db.run(channel_map_plans.apply_plan, self.actor, self.scope, id, body.version)
        self.finish_change(result, 202)


class PlanRollbackHandler(PlanChangeHandler):
    """`POST /api/v1/settings/channel-map-plans/{id}/rollback` (202): every node back to its before template."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        self.finish_change(await self.hub.db.run(channel_map_plans.rollback_plan, self.actor, self.scope, id), 202)


class PlanCancelHandler(PlanScope):
    """`POST /api/v1/settings/channel-map-plans/{id}/cancel`: a staged plan that will not be applied."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        self.write_data(await self.hub.db.run(channel_map_plans.cancel_plan, self.actor, self.scope, id))
