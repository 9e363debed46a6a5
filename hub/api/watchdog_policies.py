"""Watchdog policies (settings): list, read, create, change, delete, calibrate; nodes whose policy moved get `cmd/config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler, stream_export
from hark_fleet.hub.services import watchdog_calibrations, watchdog_policies
from hark_fleet.hub.services.listing import export_batches, fetch_page, parse_export_format, parse_list_request
from hark_fleet.hub.services.watchdog_calibrations import CALIBRATION_LIST
from hark_fleet.hub.services.watchdog_policies import WATCHDOG_POLICY_LIST
from hark_fleet.protocol.messages import ConfigChanged
from hark_fleet.protocol.topics import command_topic

READ = "settings:read"
MANAGE = "settings:manage"
CONFIG_CHANGE = msgspec.json.encode(ConfigChanged(changed=["watchdog"]))


class AssignmentBody(msgspec.Struct, forbid_unknown_fields=True):
    site: str | None = None
    node_id: str | None = None
    channel: str | None = None


class PolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""
    detectors: dict[str, Any] | None = None  # hark_fleet.protocol.watchdog.Detectors; left out: the defaults
    assignments: list[AssignmentBody] = []


class PolicyPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    detectors: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # merged detector by detector
    assignments: list[AssignmentBody] | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class CalibrateBody(msgspec.Struct, forbid_unknown_fields=True):
    node_id: str
    duration_s: float = 60.0


def _assignments(items: list[AssignmentBody]) -> list[dict[str, Any]]:
    return [{k: v for k, v in msgspec.structs.asdict(a).items() if v is not None} for a in items]


class WatchdogHandler(BaseHandler):
    """Tells nodes whose resolved watchdog policy changed to fetch their config again."""

    def tell_nodes(self, node_ids: Iterable[str]) -> None:
        bridge = self.hub.bridge
        if bridge is not None:
            for node_id in node_ids:
                bridge.publish(command_topic(node_id, "config"), CONFIG_CHANGE)


class PoliciesHandler(WatchdogHandler, ListHandler):
    """`GET /api/v1/settings/watchdog-policies` and `POST` to create one (201)."""

    spec = WATCHDOG_POLICY_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def get(self) -> None:
        await self.hub.db.run(watchdog_policies.ensure_default)
        request = parse_list_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(fetch_page, self.spec, request, self.scope)
        self.write_page(await self.hub.db.run(watchdog_policies.scoped_items, items, self.scope), next_cursor)

    async def post(self) -> None:
        body = self.parse_body(PolicyBody)
        policy, changed = await self.hub.db.run(
            watchdog_policies.create_policy,
            self.actor,
            self.scope,
            body.name,
            body.description,
            body.detectors,
            _assignments(body.assignments),
        )
        self.tell_nodes(changed)
        self.hub.events.publish("watchdog_policy.created", None, {"policy_id": policy["id"], "node_ids": changed})
        self.write_data(policy, 201)


class PolicyFacetsHandler(FacetsHandler):
    spec = WATCHDOG_POLICY_LIST
    permissions = {"get": READ}

    async def get(self) -> None:
        await self.hub.db.run(watchdog_policies.ensure_default)
        await super().get()


class PolicyExportHandler(ExportHandler):
    spec = WATCHDOG_POLICY_LIST
    permissions = {"get": READ, "post": READ}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        """As every family's export, but a site-limited reader's rows hold only its own sites' assignments and baselines."""
        await self.hub.db.run(watchdog_policies.ensure_default)
        scope = self.scope
        if scope.sites is None:
            await super()._export(args, ids)
            return
        sites = await self.hub.db.run(watchdog_policies.node_sites)

        def serialize(policy: Any) -> dict[str, Any]:
            return watchdog_policies.scoped_view(watchdog_policies.policy_to_api(policy), scope, sites)

        spec = dataclasses.replace(WATCHDOG_POLICY_LIST, serialize=serialize)
        fmt = parse_export_format(args)
        next_batch = export_batches(spec, parse_list_request(spec, args, ids), scope)
        await stream_export(self, fmt, spec.export_columns, next_batch, "export")


class PolicyHandler(WatchdogHandler):
    """`GET|PATCH|DELETE /api/v1/settings/watchdog-policies/{id}` (the built-in `default` cannot be deleted)."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(watchdog_policies.policy_detail, self.scope, id))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(PolicyPatchBody)
        if "assignments" in changes:
            changes["assignments"] = _assignments(changes["assignments"])
        policy, changed = await self.hub.db.run(watchdog_policies.update_policy, self.actor, self.scope, id, changes)
        self.tell_nodes(changed)
        self.hub.events.publish("watchdog_policy.updated", None, {"policy_id": id, "node_ids": changed})
        self.write_data(policy)

    async def delete(self, id: str) -> None:
        changed = await self.hub.db.run(watchdog_policies.delete_policy, self.actor, self.scope, id)
        self.tell_nodes(changed)
        self.hub.events.publish("watchdog_policy.deleted", None, {"policy_id": id, "node_ids": changed})
        self.write_no_content()


class PolicyActionsHandler(BaseHandler):
    """`GET /api/v1/settings/watchdog-policies/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(watchdog_policies.policy_detail, self.scope, id)
        self.write_data(detail["actions"])


class CalibrateHandler(BaseHandler):
    """`POST /api/v1/settings/watchdog-policies/{id}/calibrate` `{"node_id", "duration_s"}` -> 202 with the calibration."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        body = self.parse_body(CalibrateBody)
        calibration, command = await self.hub.db.run(
            watchdog_calibrations.request_calibration, self.actor, self.scope, id, body.node_id, body.duration_s
        )
        bridge = self.hub.bridge
        if command is not None and bridge is not None:
            bridge.publish(command_topic(body.node_id, "calibrate"), msgspec.json.encode(command))
        self.hub.events.publish(
            "watchdog.calibration_requested", calibration["site"], {"node_id": body.node_id, "calibration_id": calibration["id"]}
        )
        self.write_data(calibration, 202)


class CalibrationsHandler(BaseHandler):
    """`GET /api/v1/settings/watchdog-policies/{id}/calibrations`: the policy's calibrations, newest first."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        await self.hub.db.run(watchdog_policies.get_policy, id)
        args = self.query_args()
        args["policy_id"] = [id]
        request = parse_list_request(CALIBRATION_LIST, args)
        items, next_cursor = await self.hub.db.run(fetch_page, CALIBRATION_LIST, request, self.scope)
        self.write_page(items, next_cursor)


class CalibrationHandler(BaseHandler):
    """`GET /api/v1/settings/watchdog-policies/{id}/calibrations/{iid}`."""

    permissions = {"get": READ}

    async def get(self, id: str, iid: str) -> None:
        self.write_data(await self.hub.db.run(watchdog_calibrations.calibration_detail, self.scope, id, iid))
