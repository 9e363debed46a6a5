"""Nodes found on the LAN by mDNS, and enrolling one: the hub's enroll, then the handover to the node."""

from __future__ import annotations

import logging

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.errors import ApiError, Conflict, Forbidden, NotFound, RateLimited, ServiceUnavailable
from hark_fleet.hub.services import nodes
from hark_fleet.hub.services.discovery import UNPROVISIONED
from hark_fleet.provision.errors import RequestFailed
from hark_fleet.provision.local_client import provision_node

log = logging.getLogger(__name__)


class DiscoveredEnrollBody(msgspec.Struct, forbid_unknown_fields=True):
    claim_code: str
    name: str
    site: str | None = None
    tags: list[str] = []


class DiscoveredNodesHandler(BaseHandler):
    """`GET /api/v1/discovered-nodes`: unprovisioned nodes seen by mDNS."""

    permissions = {"get": "node:manage"}

    async def get(self) -> None:
        self.write_page(self.hub.discovery.unprovisioned(), None)


class DiscoveredEnrollHandler(BaseHandler):
    """`POST /api/v1/discovered-nodes/{hardware_id}/enroll`: enroll a node seen by mDNS and hand it its identity."""

    permissions = {"post": "node:manage"}

    async def post(self, hardware_id: str) -> None:
        body = self.parse_body(DiscoveredEnrollBody)
        found = self.hub.discovery.get(hardware_id)
        if found is None:
            raise NotFound(f"No node with hardware id {hardware_id} is seen on the LAN.")
        if found.state != UNPROVISIONED:
            raise Conflict(f"Node {hardware_id} is enrolled already (as {found.node_id}).", node_id=found.node_id)
        enrollment = await self.hub.db.run(nodes.enroll, self.actor, self.scope, body.name, body.site, body.tags, hardware_id)
        node_id = enrollment.node["id"]
        await self.hub.node_credentials_changed(node_id, enrollment.credential, kick=False)
        try:
            bundle = await self.hub.node_bundle(node_id)
            await provision_node(
                found.local_url,
                body.claim_code,
                node_id,
                enrollment.credential,
                self.hub.public_url,
                self.hub.public_mqtt_url,
                bundle,
            )
        except RequestFailed as err:
            log.warning("handover to %s (%s) failed: %s; the enrollment is undone", hardware_id, found.local_url, err)
            await self.hub.db.run(nodes.delete_node, self.actor, self.scope, node_id, True)
            await self.hub.node_removed(node_id)
            raise _refusal(err) from err
        self.hub.ingest.meters.set_site(node_id, enrollment.node["site"])
        self.hub.events.publish("node.enrolled", enrollment.node["site"], {"node_id": node_id, "name": enrollment.node["name"]})
        self.write_data({"node": enrollment.node}, 201)


def _refusal(err: RequestFailed) -> ApiError:
    """What the node said, in the hub's error shape."""
    if err.status == 403:
        return Forbidden("The node refused the claim code.", code="claim_code_invalid")
    if err.status == 429:
        return RateLimited("The node refuses claim codes for now (too many wrong ones).", 60)
    if err.status == 409:
        return Conflict("The node is enrolled already.", code="already_enrolled")
    return ServiceUnavailable(f"The node did not take its identity: {err}")
