"""Where a notification may be sent.

A channel's URL is checked before every delivery: the scheme, the absence of credentials in the URL,
and every address its host resolves to. The resolved addresses come back in the `Destination` so the
caller connects to exactly what was checked (no DNS rebinding between check and connect).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolve = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HTTP_SCHEMES = {"http": 80, "https": 443}
SMTP_PORTS = {"smtp": 25, "smtps": 465}

METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
ULA = ipaddress.ip_network("fc00::/7")
BROADCAST = ipaddress.ip_address("255.255.255.255")


class DestinationRefused(ValueError):
    """A notification may not be sent there; the message says why, naming the address."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DestinationUnresolved(OSError):
    """The host name did not resolve now (no such name, or the resolver failed): worth trying again later,
    since a resolver outage at the hub must not turn an alarm into a permanent failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise DestinationUnresolved(f"host {host!r} does not resolve: {err}") from err
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_destination(url: str, resolve: Resolve = resolve_with_getaddrinfo, allow_private: bool = False) -> Destination:
    """The checked destination of an http(s) URL, or `DestinationRefused`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise DestinationRefused(f"URL {url!r} is not valid: {err}") from err
    scheme = parts.scheme.lower()
    if scheme not in HTTP_SCHEMES:
        raise DestinationRefused(f"scheme {scheme or '(none)'!r} is not allowed; use http or https")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("credentials in the URL (user@host) are not allowed")
    host = parts.hostname
    if not host:
        raise DestinationRefused(f"URL {url!r} has no host")
    return _check_host(scheme, host, port if port is not None else HTTP_SCHEMES[scheme], resolve, allow_private)


def check_smtp_destination(
    host: str, port: int, resolve: Resolve = resolve_with_getaddrinfo, allow_private: bool = False, tls: bool = False
) -> Destination:
    """The checked destination of an SMTP server (`smtps` when `tls`, else `smtp` with STARTTLS)."""
    host = host.strip().strip("[]")
    if not host:
        raise DestinationRefused("SMTP host is empty")
    if "@" in host or "/" in host:
        raise DestinationRefused(f"SMTP host {host!r} is not a host name or address")
    if not 0 < port < 65536:
        raise DestinationRefused(f"SMTP port {port} is out of range")
    return _check_host("smtps" if tls else "smtp", host, port, resolve, allow_private)


def _check_host(scheme: str, host: str, port: int, resolve: Resolve, allow_private: bool) -> Destination:
    name = host.lower().rstrip(".")
    if name in METADATA_NAMES:
        raise DestinationRefused(f"host {host!r} is a cloud metadata service")
    literal = _parse_address(name)
    addresses = [str(literal)] if literal is not None else resolve(name, port)
    if not addresses:
        raise DestinationRefused(f"host {host!r} resolves to no address")
    checked = []
    for text in addresses:
        address = _parse_address(text)
        if address is None:
            raise DestinationRefused(f"host {host!r} resolved to {text!r}, which is not an IP address")
        problem = refusal(address, allow_private)
        if problem:
            raise DestinationRefused(f"address {text} of host {host!r} is {problem}")
        checked.append(str(address))
    return Destination(scheme=scheme, host=name, port=port, addresses=tuple(checked))


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def refusal(address: IPAddress, allow_private: bool = False) -> str | None:
    """Why a notification may not go to `address` (an IPv4-mapped IPv6 address as its IPv4), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address in LINK_LOCAL_V4 or address in LINK_LOCAL_V6:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address == BROADCAST:
        return "broadcast"
    if address.is_loopback:
        return None if allow_private else "loopback (private addresses are not allowed)"
    if address.is_reserved:
        return "reserved"
    if address in CGNAT or address in ULA or address.is_private or not address.is_global:
        return None if allow_private else "private (private addresses are not allowed)"
    return None
