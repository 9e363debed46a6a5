"""Upload policies (settings, issue 20): list, read, create, change, delete, and apply to the recordings already there."""

from __future__ import annotations

from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.services import upload_policies, upload_queue
from hark_fleet.hub.services.upload_policies import POLICY_LIST

READ = "settings:read"
MANAGE = "settings:manage"


class Criteria(msgspec.Struct, forbid_unknown_fields=True):
    sites: list[str] = []
    node_ids: list[str] = []
    profile_ids: list[str] = []
    tags: list[str] = []
    statuses: list[str] = []


class PolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""  # required: the service names a missing one with every other problem
    provider_ids: list[str] = []
    description: str = ""
    enabled: bool = True
    criteria: Criteria | None = None
    key_template: str | msgspec.UnsetType = msgspec.UNSET
    key_time_zone: str = "utc"
    when: str = "completed"
    window_start: str | None = None
    window_end: str | None = None
    bandwidth_cap_bps: int | None = None
    route: str = "via_hub"
    priority: int = 0


class PolicyPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    criteria: Criteria | msgspec.UnsetType = msgspec.UNSET
    provider_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    key_template: str | msgspec.UnsetType = msgspec.UNSET
    key_time_zone: str | msgspec.UnsetType = msgspec.UNSET
    when: str | msgspec.UnsetType = msgspec.UNSET
    window_start: str | None | msgspec.UnsetType = msgspec.UNSET
    window_end: str | None | msgspec.UnsetType = msgspec.UNSET
    bandwidth_cap_bps: int | None | msgspec.UnsetType = msgspec.UNSET
    route: str | msgspec.UnsetType = msgspec.UNSET
    priority: int | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


def _values(body: msgspec.Struct) -> dict[str, Any]:
    values = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    if isinstance(values.get("criteria"), Criteria):
        values["criteria"] = msgspec.structs.asdict(values["criteria"])
    elif "criteria" in values and values["criteria"] is None:
        values["criteria"] = {}
    return values


class PoliciesHandler(HubWideWrites, ListHandler):
    """`GET /api/v1/settings/upload-policies` (filters enabled, route, when, provider_id, q) and `POST` (201)."""

    spec = POLICY_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        values = _values(self.parse_body(PolicyBody))
        self.write_data(await self.hub.db.run(upload_policies.create_policy, self.actor, values), 201)


class PolicyFacetsHandler(FacetsHandler):
    spec = POLICY_LIST
    permissions = {"get": READ}


class PolicyExportHandler(ExportHandler):
    spec = POLICY_LIST
    permissions = {"get": READ, "post": READ}


class PolicyHandler(HubWideWrites):
    """`GET|PATCH|DELETE /api/v1/settings/upload-policies/{id}`."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(upload_policies.policy_detail, id))

    async def patch(self, id: str) -> None:
        changes = _values(self.parse_body(PolicyPatchBody))
        self.write_data(await self.hub.db.run(upload_policies.update_policy, self.actor, id, changes))

    async def delete(self, id: str) -> None:
        await self.hub.db.run(upload_policies.delete_policy, self.actor, id)
        self.write_no_content()


class PolicyActionsHandler(BaseHandler):
    """`GET /api/v1/settings/upload-policies/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(upload_policies.policy_detail, id)
        self.write_data(detail["actions"])


class PolicyApplyHandler(HubWideWrites):
    """`POST /api/v1/settings/upload-policies/{id}/apply`: queue the recordings already there that it matches (200)."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        result, events = await self.hub.db.run(upload_queue.apply_policy, self.actor, id)
        self.hub.ingest.publish_events(events)
        nudge_runner(self)
        self.write_data(result)


def nudge_runner(handler: BaseHandler) -> None:
    """Tell the upload runner there is new work, when the hub runs one."""
    runner = getattr(handler.hub, "upload_runner", None)
    if runner is not None:
        runner.nudge()
