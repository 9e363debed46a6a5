"""Retention (issue 20): policies (settings family) and their preview, runs, each recording's copies, and the node's
report of what its cache evicted."""

from __future__ import annotations

from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.api.nodes import AgentHandler
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.services import recording_copies, retention_policies, retention_runs
from hark_fleet.hub.services.listing import fetch_page, parse_list_request
from hark_fleet.hub.services.retention_policies import RETENTION_POLICY_LIST
from hark_fleet.hub.services.retention_runs import RUN_LIST
from hark_fleet.protocol.messages import ConfigChanged
from hark_fleet.protocol.topics import command_topic

READ = "settings:read"
MANAGE = "settings:manage"
RECORDING_READ = "recording:read"
CONTROL = "node:control"
FLOOR_CHANGED = msgspec.json.encode(ConfigChanged(changed=["cache_policy"]))


class PolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    sites: list[str] | msgspec.UnsetType = msgspec.UNSET
    profile_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    keep_on_hub_days: float | None | msgspec.UnsetType = msgspec.UNSET
    keep_on_node_until_hub_has_it: bool | msgspec.UnsetType = msgspec.UNSET
    required_providers: list[str] | msgspec.UnsetType = msgspec.UNSET
    min_free_bytes_hub: int | msgspec.UnsetType = msgspec.UNSET
    min_free_bytes_node: int | msgspec.UnsetType = msgspec.UNSET
    priority: int | msgspec.UnsetType = msgspec.UNSET


class PolicyPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    sites: list[str] | msgspec.UnsetType = msgspec.UNSET
    profile_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    keep_on_hub_days: float | None | msgspec.UnsetType = msgspec.UNSET
    keep_on_node_until_hub_has_it: bool | msgspec.UnsetType = msgspec.UNSET
    required_providers: list[str] | msgspec.UnsetType = msgspec.UNSET
    min_free_bytes_hub: int | msgspec.UnsetType = msgspec.UNSET
    min_free_bytes_node: int | msgspec.UnsetType = msgspec.UNSET
    priority: int | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class RunBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /retention-runs` takes nothing (an empty body or `{}`)."""


class EvictionsBody(msgspec.Struct, forbid_unknown_fields=True):
    recording_ids: list[str]


class RetentionHandler(BaseHandler):
    """A policy change: the runner reads the floor again, and nodes whose free-space floor moved fetch their config."""

    async def node_floors(self) -> dict[str, int]:
        return await self.hub.db.run(retention_policies.node_floors)

    async def policies_changed(self, floors_before: dict[str, int]) -> None:
        retention = getattr(self.hub, "retention", None)
        if retention is not None:
            retention.policies_changed()
        after = await self.node_floors()
        bridge = self.hub.bridge
        if bridge is not None:
            for node_id, floor in after.items():
                if floors_before.get(node_id, 0) != floor:
                    bridge.publish(command_topic(node_id, "config"), FLOOR_CHANGED)


class PoliciesHandler(HubWideWrites, RetentionHandler, ListHandler):
    """`GET /api/v1/settings/retention-policies` and `POST` to create one (201)."""

    spec = RETENTION_POLICY_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = self.parse_body(PolicyBody)
        settings = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
        name = settings.pop("name")
        before = await self.node_floors()
        policy = await self.hub.db.run(retention_policies.create_policy, self.actor, name, settings)
        await self.policies_changed(before)
        self.write_data(policy, 201)


class PolicyFacetsHandler(FacetsHandler):
    spec = RETENTION_POLICY_LIST
    permissions = {"get": READ}


class PolicyExportHandler(ExportHandler):
    spec = RETENTION_POLICY_LIST
    permissions = {"get": READ, "post": READ}


class PolicyHandler(HubWideWrites, RetentionHandler):
    """`GET|PATCH|DELETE /api/v1/settings/retention-policies/{id}`."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(retention_policies.policy_detail, id))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(PolicyPatchBody)
        before = await self.node_floors()
        policy = await self.hub.db.run(retention_policies.update_policy, self.actor, id, changes)
        await self.policies_changed(before)
        self.write_data(policy)

    async def delete(self, id: str) -> None:
        before = await self.node_floors()
        await self.hub.db.run(retention_policies.delete_policy, self.actor, id)
        await self.policies_changed(before)
        self.write_no_content()


class PolicyActionsHandler(BaseHandler):
    """`GET /api/v1/settings/retention-policies/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(retention_policies.policy_detail, id)
        self.write_data(detail["actions"])


class PolicyPreviewHandler(BaseHandler):
    """`GET /api/v1/settings/retention-policies/{id}/preview?limit=N`: what a run would delete and hold now, and why."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        limit = retention_policies.preview_limit(self.query_args())
        self.write_data(await self.hub.db.run(retention_policies.preview, self.scope, id, limit))


def _scoped_run(run: dict[str, Any], scope: SiteScope) -> dict[str, Any]:
    """A run as a site-limited reader sees it: the counts, not which recordings (they may be other sites')."""
    return run if scope.sites is None else {**run, "details": {}}


class RunsHandler(HubWideWrites, ListHandler):
    """`GET /api/v1/retention-runs` (newest first) and `POST` to run retention now (202 with the run)."""

    spec = RUN_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def get(self) -> None:
        request = parse_list_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(fetch_page, self.spec, request, self.scope)
        self.write_page([_scoped_run(run, self.scope) for run in items], next_cursor)

    async def post(self) -> None:
        if self.body_bytes().strip() not in (b"", b"{}"):
            self.parse_body(RunBody)  # nothing to give: anything else is refused
        self.write_data(await self.hub.retention.run_now(self.actor), 202)


class RunHandler(BaseHandler):
    """`GET /api/v1/retention-runs/{id}`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(_scoped_run(await self.hub.db.run(retention_runs.run_detail, id), self.scope))


class CopiesHandler(BaseHandler):
    """`GET /api/v1/recordings/{id}/copies`: the hub's, the node's and each provider's copy, and retention's decisions."""

    permissions = {"get": RECORDING_READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(recording_copies.copies_detail, self.scope, id))


class CacheEvictionsHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/cache-evictions` `{"recording_ids": [...]}`: the node's cache deleted these recordings.

    Only the node's own recordings change (others are ignored and named in `unknown`); repeating a report is harmless.
    """

    permissions = {"post": CONTROL}
    runs_on_full_disk = frozenset({"post"})  # it only records that space was freed

    async def post(self, id: str) -> None:
        body = self.parse_body(EvictionsBody)
        result = await self.hub.db.run(recording_copies.node_evicted, id, body.recording_ids)
        self.write_data(result)
