"""The client's address behind a load balancer: `X-Forwarded-For` and `X-Forwarded-Proto`, believed only from
the proxies `HARK_TRUSTED_PROXIES` names (issue 24).

A header any client can send proves nothing, so a request whose peer is not a trusted proxy keeps its peer
address. From a trusted peer, the client is the rightmost address of `X-Forwarded-For` that is not itself a
trusted proxy (each proxy appends the address it received the request from; entries left of a stranger may be
forged). Audit entries, login sessions and the per-address throttles then see the client, not the balancer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(raw: str) -> tuple[Network, ...]:
    """`10.0.0.5, 10.1.0.0/16, ::1` -> networks; ValueError names the bad entry."""
    networks = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (expected e.g. 10.0.0.5, 10.1.0.0/16)") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Iterable[Network]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in proxies)


def client_address(peer: str, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address: `peer`, or from a trusted peer the rightmost untrusted `X-Forwarded-For` entry."""
    if not proxies or not forwarded_for or not _trusted(_address(peer), proxies):
        return peer
    for entry in reversed(forwarded_for.split(",")):
        address = _address(entry)
        if address is None:
            return peer  # a malformed hop: believe nothing beyond the proxy
        if not _trusted(address, proxies):
            return str(address)
    return peer  # every hop is a proxy of ours


def apply(request: Any, proxies: tuple[Network, ...]) -> None:
    """Rewrite a Tornado request's `remote_ip` (and `protocol`, from `X-Forwarded-Proto`) when its peer is trusted."""
    if not proxies:
        return
    peer = request.remote_ip
    if not _trusted(_address(peer), proxies):
        return
    request.remote_ip = client_address(peer, request.headers.get("X-Forwarded-For"), proxies)
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    if proto in ("http", "https"):
        request.protocol = proto
