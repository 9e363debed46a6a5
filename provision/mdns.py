"""mDNS for hark: nodes and hubs advertise themselves, the hub and the installer's tool browse.

The only module that talks to python-zeroconf. Which interfaces it uses comes from
`HARK_MDNS_INTERFACES` (see `parse_interfaces`): tests pass `127.0.0.1` so nothing
reaches the real LAN.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ifaddr
from hark_fleet.provision.errors import MdnsError
from zeroconf import BadTypeInNameException, InterfaceChoice, IPVersion, NonUniqueNameException, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger(__name__)

NODE_SERVICE = "_hark-node._tcp.local."
HUB_SERVICE = "_hark-hub._tcp.local."
TXT_VALUE_LIMIT = 200  # a TXT string holds 255 bytes with its key
RESOLVE_TIMEOUT_MS = 3000

Interfaces = list[str] | None  # None: every interface; [] never (use "off" in the setting instead)


def parse_interfaces(raw: str) -> Interfaces | bool:
    """`all` (every interface), `off` (no mDNS: False), or comma-separated IPv4 addresses such as `127.0.0.1`."""
    text = raw.strip().lower()
    if text in ("", "all"):
        return None
    if text in ("off", "none", "false"):
        return False
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    for address in addresses:
        try:
            socket.inet_aton(address)
        except OSError as err:
            raise ValueError(f"{address!r} is not an IPv4 address (expected all, off or addresses)") from err
    return addresses


def _addresses(interfaces: Interfaces) -> list[str]:
    """The IPv4 addresses to advertise: the chosen ones, or every non-loopback one (loopback if none)."""
    if interfaces:
        return list(interfaces)
    found = [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return found or ["127.0.0.1"]


def _label(text: str) -> str:
    """`text` as a DNS label (letters, digits, dashes; at most 40 characters)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40] or "x"


def _txt(properties: dict[str, str | None]) -> dict[str, str]:
    return {k: v[:TXT_VALUE_LIMIT] for k, v in properties.items() if v is not None}


def _decode(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace") for k, v in properties.items()}


@dataclass(frozen=True, slots=True)
class NodeAdvert:
    """What a node says about itself on the LAN (no secrets)."""

    hardware_id: str
    state: str  # unprovisioned | enrolled
    version: str
    audio: str
    port: int
    node_id: str | None = None

    def properties(self) -> dict[str, str]:
        return _txt(
            {"hw": self.hardware_id, "state": self.state, "version": self.version, "audio": self.audio, "node_id": self.node_id}
        )


@dataclass(frozen=True, slots=True)
class HubAdvert:
    """What a hub says about itself on the LAN."""

    api_url: str
    mqtt_url: str | None
    port: int
    ca_fingerprint: str | None = None

    def properties(self) -> dict[str, str]:
        return _txt({"api": self.api_url, "mqtt": self.mqtt_url, "ca": self.ca_fingerprint})


@dataclass(frozen=True, slots=True)
class DiscoveredNode:
    """A node seen on the LAN."""

    hardware_id: str
    state: str
    version: str
    audio: str
    node_id: str | None
    addresses: tuple[str, ...]
    port: int

    @property
    def local_url(self) -> str:
        """The base URL of the node's local endpoint."""
        return f"http://{self.addresses[0]}:{self.port}"

    def to_api(self) -> dict[str, Any]:
        return {
            "hardware_id": self.hardware_id,
            "state": self.state,
            "version": self.version,
            "audio": self.audio,
            "node_id": self.node_id,
            "addresses": list(self.addresses),
            "port": self.port,
            "local_url": self.local_url,
        }


@dataclass(frozen=True, slots=True)
class DiscoveredHub:
    """A hub seen on the LAN."""

    api_url: str
    mqtt_url: str | None
    ca_fingerprint: str | None


def _zeroconf(interfaces: Interfaces) -> AsyncZeroconf:
    choice: Any = InterfaceChoice.All if interfaces is None else list(interfaces)
    try:
        return AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
    except (OSError, ValueError) as err:
        raise MdnsError(f"cannot start mDNS on {interfaces or 'all interfaces'}: {err}") from err


class Advertisement:
    """One registered service; `update` changes its TXT record, `close` withdraws it."""

    def __init__(self, zc: AsyncZeroconf, info: ServiceInfo) -> None:
        self._zc = zc
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    async def update(self, properties: dict[str, str]) -> None:
        """Announce new TXT properties (e.g. a node that was just enrolled)."""
        info = self.info
        self.info = ServiceInfo(
            info.type, info.name, port=info.port, properties=properties, server=info.server, addresses=info.addresses
        )
        await self._zc.async_update_service(self.info)

    async def close(self) -> None:
        """Withdraw the service (goodbye packets) and stop mDNS."""
        try:
            await self._zc.async_unregister_all_services()
        finally:
            await self._zc.async_close()


async def _advertise(service: str, instance: str, port: int, properties: dict[str, str], interfaces: Interfaces) -> Advertisement:
    zc = _zeroconf(interfaces)
    addresses = [socket.inet_aton(a) for a in _addresses(interfaces)]
    info = ServiceInfo(
        service, f"{instance}.{service}", port=port, properties=properties, server=f"{instance}.local.", addresses=addresses
    )
    try:
        await zc.async_register_service(info, allow_name_change=True)
    except (OSError, NonUniqueNameException, BadTypeInNameException) as err:
        await zc.async_close()
        raise MdnsError(f"cannot advertise {info.name}: {err}") from err
    log.info("advertising %s on %s", info.name, ", ".join(_addresses(interfaces)))
    return Advertisement(zc, info)


async def advertise_node(advert: NodeAdvert, interfaces: Interfaces) -> Advertisement:
    """Advertise a node as `_hark-node._tcp` (instance named after its hardware id)."""
    return await _advertise(NODE_SERVICE, f"hark-node-{_label(advert.hardware_id)}", advert.port, advert.properties(), interfaces)


async def advertise_hub(advert: HubAdvert, interfaces: Interfaces) -> Advertisement:
    """Advertise a hub as `_hark-hub._tcp` (instance named after its host and port)."""
    instance = f"hark-hub-{_label(socket.gethostname())}-{advert.port}"
    return await _advertise(HUB_SERVICE, instance, advert.port, advert.properties(), interfaces)


def _node_from(info: AsyncServiceInfo) -> DiscoveredNode | None:
    props = _decode(info.properties)
    addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
    if not props.get("hw") or not addresses or not info.port:
        return None
    return DiscoveredNode(
        hardware_id=props["hw"],
        state=props.get("state", "unknown"),
        version=props.get("version", ""),
        audio=props.get("audio", ""),
        node_id=props.get("node_id") or None,
        addresses=addresses,
        port=info.port,
    )


def _hub_from(info: AsyncServiceInfo) -> DiscoveredHub | None:
    props = _decode(info.properties)
    if not props.get("api"):
        return None
    return DiscoveredHub(api_url=props["api"], mqtt_url=props.get("mqtt") or None, ca_fingerprint=props.get("ca") or None)


class _Browser:
    """Keeps the services of one type currently on the LAN, resolved, by instance name."""

    def __init__(self, service: str, interfaces: Interfaces, on_change: Callable[[], None] | None = None) -> None:
        self._service = service
        self._interfaces = interfaces
        self._on_change = on_change
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._zc = _zeroconf(self._interfaces)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [self._service], handlers=[self._changed])

    def _changed(self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._infos.pop(name, None)
            if self._on_change:
                self._on_change()
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(service_type, name)
        if await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS):
            self._infos[name] = info
            if self._on_change:
                self._on_change()

    def infos(self) -> list[AsyncServiceInfo]:
        return list(self._infos.values())

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zc is not None:
            await self._zc.async_close()


class NodeBrowser(_Browser):
    """Nodes currently advertised on the LAN."""

    def nodes(self) -> dict[str, DiscoveredNode]:
        """Every node seen, by hardware id."""
        found = (_node_from(info) for info in self.infos())
        return {node.hardware_id: node for node in found if node is not None}


class HubBrowser(_Browser):
    """Hubs currently advertised on the LAN."""

    def hubs(self) -> list[DiscoveredHub]:
        found = (_hub_from(info) for info in self.infos())
        return [hub for hub in found if hub is not None]


async def browse_nodes(interfaces: Interfaces, on_change: Callable[[], None] | None = None) -> NodeBrowser:
    """Start browsing `_hark-node._tcp`; close the browser when done."""
    browser = NodeBrowser(NODE_SERVICE, interfaces, on_change)
    await browser.start()
    return browser


async def browse_hubs(interfaces: Interfaces, timeout_s: float) -> list[DiscoveredHub]:
    """The hubs seen within `timeout_s` (returns as soon as one is seen, after a short settle)."""
    browser = HubBrowser(HUB_SERVICE, interfaces)
    await browser.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not browser.hubs() and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if browser.hubs():
            await asyncio.sleep(0.3)  # let a second hub on the LAN answer too
        return browser.hubs()
    finally:
        await browser.close()


async def find_hub(interfaces: Interfaces, timeout_s: float) -> DiscoveredHub | None:
    """The first hub seen within `timeout_s`, or None."""
    hubs = await browse_hubs(interfaces, timeout_s)
    return hubs[0] if hubs else None
