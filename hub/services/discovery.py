"""Nodes seen on the LAN by mDNS, and the hub's own advertisement (no HTTP handlers here)."""

from __future__ import annotations

import logging
from typing import Any

from hark_fleet.provision.errors import ProvisionError
from hark_fleet.provision.mdns import (
    Advertisement,
    DiscoveredNode,
    HubAdvert,
    Interfaces,
    NodeBrowser,
    advertise_hub,
    browse_nodes,
)

log = logging.getLogger(__name__)

UNPROVISIONED = "unprovisioned"


class NodeDiscovery:
    """Advertises the hub as `_hark-hub._tcp` and keeps the `_hark-node._tcp` nodes on the LAN."""

    def __init__(self, interfaces: Interfaces) -> None:
        self.interfaces = interfaces
        self.browser: NodeBrowser | None = None
        self.advertisement: Advertisement | None = None

    async def start(self, advert: HubAdvert) -> None:
        """Advertise and browse; mDNS trouble is logged, never fatal (the hub works without it)."""
        try:
            self.advertisement = await advertise_hub(advert, self.interfaces)
            self.browser = await browse_nodes(self.interfaces)
        except ProvisionError as err:
            log.warning("mDNS discovery off: %s", err)

    async def stop(self) -> None:
        if self.browser is not None:
            await self.browser.close()
            self.browser = None
        if self.advertisement is not None:
            await self.advertisement.close()
            self.advertisement = None

    def nodes(self) -> dict[str, DiscoveredNode]:
        return self.browser.nodes() if self.browser is not None else {}

    def unprovisioned(self) -> list[dict[str, Any]]:
        """The nodes waiting to be claimed, by hardware id."""
        found = [node for node in self.nodes().values() if node.state == UNPROVISIONED]
        return [node.to_api() for node in sorted(found, key=lambda n: n.hardware_id)]

    def get(self, hardware_id: str) -> DiscoveredNode | None:
        return self.nodes().get(hardware_id)
