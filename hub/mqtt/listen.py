"""Whether a broker could listen on an address now: both embedded brokers ask before binding."""

from __future__ import annotations

import socket


def port_available(host: str, port: int) -> bool:
    """Whether a listener could bind `host:port` now (with SO_REUSEADDR, as Mosquitto and amqtt bind)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True
