"""The embedded MQTT broker (amqtt), started inside the hub when no external broker is configured."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from hub.errors import StartupError
from hub.mqtt.access import BrokerAccess

log = logging.getLogger(__name__)

TLS_LISTENER = "nodes-tls"


class HarkAuthPlugin(BaseAuthPlugin):
    """amqtt authentication backed by the hub's `BrokerAccess`."""

    access: BrokerAccess | None = None

    @dataclass
    class Config:
        """No options: the policy is handed over by `EmbeddedBroker`."""

    async def authenticate(self, *, session: Session) -> bool | None:
        if self.access is None:
            return False
        return self.access.check_login(session.username, session.password)


class HarkTopicPlugin(BaseTopicPlugin):
    """amqtt topic filtering backed by the hub's `BrokerAccess`."""

    access: BrokerAccess | None = None

    @dataclass
    class Config:
        """No options: the policy is handed over by `EmbeddedBroker`."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if self.access is None or session is None or topic is None or action is None:
            return False
        return self.access.may(session.username, topic, action.value)


class HarkBroker(Broker):
    """amqtt's broker, with retained messages checked against the receiver's access.

    amqtt sends a newly connected client the retained messages of every subscription
    in the broker, not only its own, and does not ask the topic plugins first: one node
    would receive another's retained status. Each retained message is filtered here.
    With TLS, its listeners use the hub's context (client certificates checked against the CRL).
    """

    tls_context: ssl.SSLContext | None = None

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        if self.tls_context is None:
            return Broker._create_ssl_context(listener)
        return self.tls_context

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic, Action.RECEIVE):
                tasks.append(
                    asyncio.ensure_future(handler.mqtt_publish(topic, retained.data, min(qos, retained.qos or qos), retain=True))
                )
        if tasks:
            await asyncio.wait(tasks)


def _broker_config(host: str, port: int, tls: bool) -> dict[str, Any]:
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 10000}}
    if tls:
        # mqtts for the nodes; the hub's own bridge on a plain listener on loopback. amqtt copies
        # the `default` listener's non-default settings into the others: `default` is the plain one.
        listeners = {
            "default": {"type": "tcp", "bind": "127.0.0.1:0", "max_connections": 100},
            TLS_LISTENER: {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 10000, "ssl": True},
        }
    return {
        "listeners": listeners,
        "plugins": {
            f"{__name__}.HarkAuthPlugin": {},
            f"{__name__}.HarkTopicPlugin": {},
        },
    }


def _port_available(host: str, port: int) -> bool:
    """Whether a listener could bind `host:port` now (as amqtt does, with SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
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


class EmbeddedBroker:
    """An amqtt broker listening on one TCP address, with the hub's access policy."""

    def __init__(self, access: BrokerAccess, tls_context: ssl.SSLContext | None = None) -> None:
        self.access = access
        self.tls_context = tls_context
        self._broker: Broker | None = None
        self.host = ""
        self.port = 0
        self.local_port = 0  # with TLS: the plain loopback listener of the hub's own bridge

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.transitions.state == "started"

    async def start(self, host: str, port: int, fallback_to_free_port: bool) -> tuple[str, int]:
        """Listen on `host:port`; if taken and allowed, on a free port. Return the address used."""
        if port != 0 and not _port_available(host, port):
            if not fallback_to_free_port:
                raise StartupError(f"HARK_EMBEDDED_MQTT_BIND {host}:{port} is already in use; free it or choose another address")
            log.warning("mqtt port %s:%d is taken (another broker?); the embedded broker uses a free port", host, port)
            port = 0
        try:
            await self._start(host, port)
        except BrokerError as err:
            raise StartupError(f"the embedded MQTT broker cannot start on {host}:{port}: {err.__cause__ or err}") from err
        return self.host, self.port

    async def _start(self, host: str, port: int) -> None:
        broker = HarkBroker(_broker_config(host, port, self.tls_context is not None))
        broker.tls_context = self.tls_context
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, (HarkAuthPlugin, HarkTopicPlugin)):
                plugin.access = self.access
        await broker.start()
        server = broker._servers[TLS_LISTENER if self.tls_context is not None else "default"].instance
        self.host, self.port = server.sockets[0].getsockname()[:2]
        if self.tls_context is not None:
            self.local_port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        self._broker = broker

    async def kick(self, client_id: str) -> bool:
        """Drop a connected client (its will is published); it must log in again to come back."""
        if self._broker is None:
            return False
        entry = self._broker._sessions.get(client_id)
        if entry is None:
            return False
        session, handler = entry
        if not session.transitions.is_connected():
            return False
        await handler.handle_connection_closed()
        await handler.stop()
        return True

    async def stop(self) -> None:
        if self._broker is not None and self.running:
            await self._broker.shutdown()
        self._broker = None
