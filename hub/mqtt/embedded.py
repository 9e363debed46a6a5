"""The embedded MQTT broker (amqtt), started inside the hub when no external broker is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id
from hark_fleet.hub.errors import StartupError
from hark_fleet.hub.mqtt.access import BrokerAccess

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
        return self.access.check_connect(session.client_id, session.username, session.password)


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
    """amqtt's broker, authenticating before sessions are touched and checking every delivery's access.

    amqtt (0.12) reads a CONNECT, then deletes, resumes or takes over the session of its
    client id, and only then authenticates: a refused CONNECT could drop a live node or
    wipe its session. Here the CONNECT is authenticated first (its last will included:
    amqtt publishes a will unchecked, so one the login may not publish is refused, as
    Mosquitto does) and a refused one is answered and closed without touching any session.
    amqtt also delivers what a session queued while away, and sends a newly connected
    client the retained messages of every subscription in the broker, without asking the
    topic plugins, and flags queued messages as retained: both go through the receiver's
    access here, queued ones as ordinary messages. With TLS, its listeners use the hub's
    context (client certificates checked against the CRL).
    """

    tls_context: ssl.SSLContext | None = None

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        if self.tls_context is None:
            return Broker._create_ssl_context(listener)
        return self.tls_context

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError:
            await writer.close()
            raise
        allowed = await self._authenticate(incoming, None)  # amqtt ignores the listener argument
        if not allowed or not await self._will_allowed(incoming):
            await refuse_connect(writer)
            raise AMQTTError(f"CONNECT from {remote_address}:{remote_port} (client id {incoming.client_id!r}) refused")
        # From here on as amqtt does it: the CONNECT is the session owner's.
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
            session = incoming
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username", "password"):
                setattr(session, name, getattr(incoming, name))
            session.parent = 1
            await self._drop_unreceivable_in_flight(session)
        else:
            session = incoming
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _will_allowed(self, session: Session) -> bool:
        """amqtt publishes a last will without asking the topic plugins: one the login may not publish is refused here."""
        if not session.will_flag:
            return True
        return bool(session.will_topic) and await self._topic_filtering(session, session.will_topic, Action.PUBLISH)

    async def _drop_unreceivable_in_flight(self, session: Session) -> None:
        """Unacknowledged deliveries are sent again on resume: only those its owner may receive."""
        for packet_id, message in list(session.inflight_out.items()):
            if not message.topic or not await self._topic_filtering(session, message.topic, Action.RECEIVE):
                del session.inflight_out[packet_id]

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            if not queued.topic or not await self._topic_filtering(session, queued.topic, Action.RECEIVE):
                log.warning("mqtt: message queued for %s on %s not theirs to receive: dropped", session.client_id, queued.topic)
                continue
            tasks.append(asyncio.ensure_future(handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)))
        if tasks:
            await asyncio.wait(tasks)

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


async def refuse_connect(writer: WriterAdapter) -> None:
    """Answer a CONNECT with "not authorized" and close the connection (a client gone already is fine)."""
    with contextlib.suppress(OSError):
        try:
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
        finally:
            await writer.close()


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

    async def forget(self, client_id: str) -> bool:
        """Drop the client if connected and delete its session with what it queued (a deleted node's); whether one existed."""
        if self._broker is None or client_id not in self._broker._sessions:
            return False
        await self.kick(client_id)
        await self._broker._delete_session(client_id)
        return True

    def has_session(self, client_id: str) -> bool:
        """Whether the broker keeps a session for `client_id` (connected or not)."""
        return self._broker is not None and client_id in self._broker._sessions

    def drop_queued(self, client_id: str, topic: str) -> int:
        """Forget what waits on `topic` for the session of `client_id` while it is away; how many were dropped."""
        entry = self._broker._sessions.get(client_id) if self._broker is not None else None
        if entry is None:
            return 0
        session = entry[0]
        waiting = []
        while not session.retained_messages.empty():
            waiting.append(session.retained_messages.get_nowait())
        kept = [message for message in waiting if message.topic != topic]
        for message in kept:
            session.retained_messages.put_nowait(message)
        dropped = len(waiting) - len(kept)
        if not session.transitions.is_connected():  # a live session's unacknowledged ones are being delivered now
            for packet_id, message in list(session.inflight_out.items()):
                if message.topic == topic:
                    del session.inflight_out[packet_id]
                    dropped += 1
        return dropped

    async def stop(self) -> None:
        if self._broker is not None and self.running:
            await self._broker.shutdown()
        self._broker = None
