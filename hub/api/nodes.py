"""The fleet: node inventory, enrollment and credentials, and the routes nodes themselves call."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler, EncodedAnswer, encode_page
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.errors import Forbidden, NotFound
from hark_fleet.hub.services import nodes, nodes_page, recording_copies, retention_policies, technician, watchdog_resolve
from hark_fleet.hub.services.listing import ListRequest, parse_list_request
from hark_fleet.hub.services.nodes import NODE_LIST
from hark_fleet.protocol.messages import HealthReport, Heartbeat, MeterFrame
from hark_fleet.protocol.topics import command_topic

CONTROL = "node:control"
DYNSEC_SWITCH_DELAY_S = 1.0
DELIVERY_DEFAULT_GRACE_S = 30  # with `deliver` and no grace asked for, the old credential works this long so the node can switch
# How a node treats its local recording cache unless the hub says otherwise.
DEFAULT_CACHE_POLICY = {"min_free_pct": 10, "keep_after_upload_s": 7 * 86400, "max_bytes": None}


class EnrollBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    site: str | None = None
    tags: list[str] = []
    hardware_id: str | None = None


class RotateBody(msgspec.Struct, forbid_unknown_fields=True):
    grace_s: int = 0
    deliver: bool = False


class NodePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    site: str | None | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    heartbeat_interval_s: float | msgspec.UnsetType = msgspec.UNSET
    technician_pin: str | None | msgspec.UnsetType = msgspec.UNSET


class InterfacePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    label: str | None | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


PAGE_CACHE_MAX = 64  # answers kept; cleared when full
PAGE_CACHE_MAX_BYTES = 256 * 1024  # a larger answer is not kept


class NodePages:
    """The answers to recent node list requests, given again only while the database has not changed since their read.

    Checked and filled on the event loop: a repeated page costs no database round trip. `ChangeWatch` tells whether
    anything committed since (any write through this hub, or by another process); on PostgreSQL nothing is kept and
    every request reads afresh. The token is taken before the read, so a write during the read makes the next request
    read again.
    """

    def __init__(self) -> None:
        self.watch = nodes_page.ChangeWatch()
        self._pages: dict[tuple[Any, ...], tuple[Any, EncodedAnswer]] = {}

    async def answer(self, hub: Any, request: ListRequest, scope: SiteScope) -> EncodedAnswer:
        token = self.watch.token()
        key = nodes_page.page_key(request, scope)
        if token is not None:
            hit = self._pages.get(key)
            if hit is not None and hit[0] == token:
                return hit[1]
        answer: EncodedAnswer = await hub.db.run(read_node_page, request, scope)
        if token is not None and len(answer.body) <= PAGE_CACHE_MAX_BYTES:
            if len(self._pages) >= PAGE_CACHE_MAX:
                self._pages.clear()
            self._pages[key] = (token, answer)
        return answer


PAGES = NodePages()


def read_node_page(request: ListRequest, scope: SiteScope) -> EncodedAnswer:
    """One page of the node list, read, encoded and hashed in one call on the database thread."""
    items, next_cursor = nodes_page.node_page(request, scope)
    return encode_page(items, next_cursor)


class NodesHandler(ListHandler):
    """`GET /api/v1/nodes`: a page read, encoded and hashed in one database call (`read_node_page`), off the loop,
    or given again from `PAGES` while nothing changed."""

    spec = NODE_LIST
    permissions = {"get": "node:read"}

    async def get(self) -> None:
        request = parse_list_request(self.spec, self.query_args())
        self.write_encoded(await PAGES.answer(self.hub, request, self.scope))


class NodeFacetsHandler(FacetsHandler):
    spec = NODE_LIST
    permissions = {"get": "node:read"}


class NodeExportHandler(ExportHandler):
    spec = NODE_LIST
    permissions = {"get": "node:read", "post": "node:read"}


class EnrollHandler(BaseHandler):
    """`POST /api/v1/nodes/enroll`: a node and its credential, shown once."""

    permissions = {"post": "node:manage"}

    async def post(self) -> None:
        body = self.parse_body(EnrollBody)
        enrollment = await self.hub.db.run(
            nodes.enroll, self.actor, self.scope, body.name, body.site, body.tags, body.hardware_id
        )
        await self.hub.node_credentials_changed(enrollment.node["id"], enrollment.credential, kick=False)
        self.hub.ingest.meters.set_site(enrollment.node["id"], enrollment.node["site"])
        self.hub.events.publish(
            "node.enrolled", enrollment.node["site"], {"node_id": enrollment.node["id"], "name": enrollment.node["name"]}
        )
        self.write_data({"node": enrollment.node, "credential": enrollment.credential}, 201)


class NodeHandler(BaseHandler):
    """`GET|PATCH|DELETE /api/v1/nodes/{id}` (delete needs `?force=true` while the node is live)."""

    permissions = {"get": "node:read", "patch": "node:manage", "delete": "node:manage"}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(nodes.node_detail, self.scope, id, self.principal))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(NodePatchBody)
        if "technician_pin" in changes:  # argon2 off the loop and the database thread; only the hash is kept
            changes["technician_pin_hash"] = await self.hub.run_cpu(technician.pin_hash, changes.pop("technician_pin"))
        node = await self.hub.db.run(nodes.update_node, self.actor, self.scope, id, changes)
        if "site" in changes:
            self.hub.ingest.meters.forget_site(id)
        pushed: list[str] = [name for name in ("heartbeat_interval_s", "technician_pin_hash") if name in changes]
        if "site" in changes:  # a site's watchdog policy may reach it now, or no longer
            pushed.append("watchdog")
        if pushed and self.hub.bridge is not None:
            self.hub.bridge.publish(command_topic(id, "config"), {"changed": pushed})
        self.hub.events.publish("node.updated", node["site"], {"node_id": id, "changed": sorted(changes)})
        self.write_data(node)

    async def delete(self, id: str) -> None:
        force = self.query_flag("force")
        node, events, uploads = await self.hub.db.run(nodes.delete_node, self.actor, self.scope, id, force)
        await self.hub.node_removed(id)
        self.hub.ingest.meters.forget(id)
        self.hub.ingest.history.forget(id)
        self.hub.ingest.publish_events(events)  # what a forced delete ended: jobs cancelled, events resolved
        for recording_id in uploads:  # their node is gone: nothing will finish these parts
            await asyncio.get_running_loop().run_in_executor(None, self.hub.uploads.discard, recording_id)
        self.hub.events.publish("node.deleted", node["site"], {"node_id": id})
        self.write_no_content()


class NodeDeletePreviewHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/delete-preview`: what deleting would remove, and whether it needs `?force`."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(nodes.delete_preview, self.scope, id))


class NodeActionsHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/actions`: the actions the caller may take on this node now."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(nodes.node_detail, self.scope, id, self.principal)
        self.write_data(detail["actions"])


class NodeInterfaceHandler(BaseHandler):
    """`PATCH /api/v1/nodes/{id}/interfaces/{iid}`: label or enable an audio interface."""

    permissions = {"patch": "node:manage"}

    async def patch(self, id: str, iid: str) -> None:
        changes = self.parse_changes(InterfacePatchBody)
        self.write_data(await self.hub.db.run(nodes.update_interface, self.actor, self.scope, id, iid, changes))


class RotateHandler(BaseHandler):
    """`POST /api/v1/nodes/{id}/credentials/rotate`: a new credential; the old one stops now or after `grace_s`."""

    permissions = {"post": "node:manage"}

    async def post(self, id: str) -> None:
        body = self.parse_body(RotateBody) if self.body_bytes().strip() else RotateBody()
        if body.deliver and body.grace_s == 0:
            # Cut off at once, a connected node would be dropped before the delivery reached it and
            # come back with the old credential only to be refused: it gets the time to switch over.
            body = RotateBody(grace_s=DELIVERY_DEFAULT_GRACE_S, deliver=True)
        rotation = await self.hub.db.run(nodes.rotate_credential, self.actor, self.scope, id, body.grace_s)
        enrollment = rotation.enrollment
        self.hub.drop_credential_deliveries(id)  # still waiting for the node: stale from now on
        if body.deliver and self.hub.bridge is not None:
            bundle = await self.hub.node_bundle(id)  # TLS on: a renewed client certificate travels with the credential
            payload = {
                "credential": enrollment.credential,
                "valid_until_old": iso(rotation.old_valid_until),
                "replaces_sha256": rotation.replaced_sha256,  # the node takes it only in place of that one
                "ca_pem": bundle,
            }
            self.hub.bridge.publish(command_topic(id, "credentials"), payload)
        if body.grace_s and body.deliver and self.hub.dynsec is not None:
            # Mosquitto keeps one password per client and drops the session when it changes:
            # give the node a moment to take the new credential and leave cleanly first.
            self.hub.node_credentials_changed_later(id, enrollment.credential, DYNSEC_SWITCH_DELAY_S)
        else:
            await self.hub.node_credentials_changed(id, enrollment.credential, kick=body.grace_s == 0)
        self.write_data({"node": enrollment.node, "credential": enrollment.credential}, 201)


class NodeMetersHandler(BaseHandler):
    """`GET /api/v1/nodes/{id}/meters`: the latest meter frame."""

    permissions = {"get": "node:read"}

    async def get(self, id: str) -> None:
        await self.hub.db.run(nodes.get_node, id, self.scope)
        snapshot = self.hub.ingest.meter_snapshot(id)
        if snapshot is None:
            raise NotFound(f"Node {id} has sent no meter frame yet.")
        self.write_data(snapshot)


# -- agent routes: a node calling with its own credential ------------------------------------


class AgentHandler(BaseHandler):
    """Routes a node calls about itself: the path's node must be the credential's node."""

    async def authorize(self, permission: str) -> None:
        await super().authorize(permission)
        node_id = self.path_kwargs.get("id")
        assert self.principal is not None
        if self.principal.kind == "node" and node_id != self.principal.id:
            await self.audit("access.denied", permission=permission, outcome="failure", reason=f"node_mismatch on {self.route}")
            raise Forbidden("This credential belongs to another node.", code="node_mismatch")


class AgentConfigHandler(AgentHandler):
    """`GET /api/v1/nodes/{id}/config`: what the node should run with, and the hub's time."""

    permissions = {"get": CONTROL}

    async def get(self, id: str) -> None:
        node = await self.hub.db.run(nodes.get_node, id, self.scope)
        watchdog = await self.hub.db.run(watchdog_resolve.node_watchdog_builtins, node)
        self.write_data(
            {
                "node_id": node.id,
                "name": node.name,
                "site": node.site,
                "tags": list(node.tags or []),
                "mqtt_url": self.hub.public_mqtt_url,
                "heartbeat_interval_s": node.heartbeat_interval_s,
                "meter_interval_ms": 100,
                "settings": {k: v for k, v in (node.settings or {}).items() if k != technician.PIN_SETTING},
                "cache_policy": {
                    **DEFAULT_CACHE_POLICY,
                    **(node.settings or {}).get("cache_policy", {}),
                    "min_free_bytes": await self.hub.db.run(retention_policies.node_floor, node.site),  # retention (issue 20)
                },
                "capacity": node.capacity or {},
                "watchdog": watchdog,  # hark_fleet.protocol.watchdog.NodeWatchdog: the node's resolved policy
                "held_recordings": await self.hub.db.run(recording_copies.held_on_node, node.id),  # legal hold: never evicted
                "hub_time": iso(utcnow()),
            }
        )


class AgentHeartbeatHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/heartbeat`: a heartbeat over HTTP (the same as on MQTT)."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        await self.hub.ingest.ingest_http(id, self.parse_body(Heartbeat))
        self.write_data({"hub_time": iso(utcnow())})


class AgentHealthHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/health-events`: a health condition opened or cleared on the node."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        await self.hub.ingest.ingest_http(id, self.parse_body(HealthReport))
        self.write_data({"accepted": True})


class AgentMeterFrameHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/meter-frame`: the latest meter frame, for nodes without MQTT."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        frame = self.parse_body(MeterFrame)
        self.hub.ingest.store_meters(id, frame)
        self.write_no_content()
