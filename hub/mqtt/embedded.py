"""The embedded MQTT broker (amqtt), started inside the hub when no external broker is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, MQTTError
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.packet import CONNECT, RESERVED_0, RESERVED_15, MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id
from hark_fleet.hub.errors import StartupError
from hark_fleet.hub.mqtt.access import BrokerAccess
from hark_fleet.hub.mqtt.listen import port_available
from hark_fleet.hub.mqtt.shedding import Shedder, shed_kind

log = logging.getLogger(__name__)

TLS_LISTENER = "nodes-tls"
BROADCAST_BATCH = 512  # messages handed to subscribers per wake-up of the broadcast loop
SUBSCRIBER_BUFFER_CAP = 64 * 1024  # QoS 0 deliveries to a connection with this much unsent are dropped (asyncio's
# high-water mark: past it amqtt's QoS 1 sends wait for the buffer to drain, and QoS 0 frames written on would starve them)
SUBSCRIBER_SNDBUF = 128 * 1024  # the kernel's send buffer of a QoS 0 subscriber: what it holds is as late as the rest
TARGETS_CACHE_MAX = 100_000  # topics whose matching subscription filters are remembered
READ_CHUNK = 64 * 1024  # bytes a connection's reader takes per wake-up
MAX_PACKET = 16 * 1024 * 1024  # a longer packet closes the connection (amqtt would buffer whatever is announced)
HANDLERS = {  # packet type -> the ProtocolHandler method amqtt's reader calls for it (in a task of its own)
    2: "handle_connack",
    3: "handle_publish",
    4: "handle_puback",
    5: "handle_pubrec",
    6: "handle_pubrel",
    7: "handle_pubcomp",
    8: "handle_subscribe",
    9: "handle_suback",
    10: "handle_unsubscribe",
    11: "handle_unsuback",
    12: "handle_pingreq",
    13: "handle_pingresp",
    14: "handle_disconnect",
}


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


def _varint(value: int) -> bytes:
    """MQTT remaining-length encoding."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


class HarkHandler(BrokerProtocolHandler):
    """amqtt's per-connection handler, with QoS 0 and 1 PUBLISH taken straight to the broker (`HarkBroker.publish`).

    amqtt queues every incoming PUBLISH on the session, wakes the session's message loop, asks the
    topic plugins (a task each), then queues it again for the broadcast loop. A plain QoS 0 or 1
    PUBLISH (not retained, a valid topic) is decided by the reader instead, as soon as it is read:
    a QoS 0 meter frame shed if the broker is overloaded, else checked and queued for broadcast
    (QoS 1: then acknowledged). Everything else (QoS 2, retained, invalid topics) goes amqtt's way.
    """

    broker: HarkBroker | None = None

    async def _reader_loop(self) -> None:
        """Read the connection in chunks and split packets here: a plain QoS 0 PUBLISH is decided at once (no task,
        no awaits per byte); every other packet is parsed by amqtt's classes and handled as amqtt's reader does.

        amqtt's reader awaits every field of every packet and starts a task per packet: reading alone then
        costs more than the hub can afford for frames it will shed.
        """
        if not isinstance(self.reader, StreamReaderAdapter) or self.session is None or self._reader_ready is None:
            await super()._reader_loop()
            return
        stream = self.reader._reader
        running: set[asyncio.Task[None]] = set()
        buffer = bytearray()
        self._reader_ready.set()
        try:
            while True:
                chunk = await stream.read(READ_CHUNK)
                if not chunk:
                    break
                buffer += chunk
                used = await self._take_packets(buffer, running)
                if used < 0:
                    break
                del buffer[:used]
        except asyncio.CancelledError:
            pass
        except (MQTTError, AMQTTError, OSError, ValueError) as err:
            log.debug("mqtt: reader of %s ends: %s", self.session.client_id if self.session else None, err)
        for task in running:
            task.cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    async def _take_packets(self, buffer: bytearray, running: set[asyncio.Task[None]]) -> int:
        """Handle the complete packets at the start of `buffer`; the bytes used (-1: close the connection)."""
        at, end = 0, len(buffer)
        broker, session = self.broker, self.session
        while end - at >= 2:
            length, shift, offset = 0, 0, at + 1
            while True:
                if offset >= end:
                    return at
                byte = buffer[offset]
                length |= (byte & 0x7F) << shift
                offset += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    return -1  # a malformed remaining length
            if length > MAX_PACKET:
                log.warning(
                    "mqtt: %s sent a packet of %d bytes: connection closed", session.client_id if session else None, length
                )
                return -1
            stop = offset + length
            if stop > end:
                return at
            first = buffer[at]
            kind = first >> 4
            qos = (first >> 1) & 3
            if kind == 3 and qos < 2 and not first & 0x01 and broker is not None and session is not None and length >= 2:
                # PUBLISH at QoS 0 or 1, not retained
                topic_end = offset + 2 + int.from_bytes(buffer[offset : offset + 2], "big")
                payload_at = topic_end + 2 * qos  # a QoS 1 PUBLISH has its packet id after the topic
                if payload_at <= stop and (qos == 1 or not first & 0x08):  # a QoS 0 duplicate is invalid: amqtt's way
                    try:
                        topic = buffer[offset + 2 : topic_end].decode()
                    except UnicodeDecodeError:
                        return -1
                    if topic and "#" not in topic and "+" not in topic and not topic.startswith("$"):
                        broker.publish(session, topic, bytes(buffer[payload_at:stop]), qos)
                        if qos == 1 and self.writer is not None:
                            self.writer.write(b"\x40\x02" + bytes(buffer[topic_end:payload_at]))  # PUBACK
                        at = stop
                        continue
            if kind in (RESERVED_0, RESERVED_15):
                return -1
            raw = bytes(buffer[at:stop])
            at = stop
            packet_reader = BufferReader(raw)
            fixed_header = await MQTTFixedHeader.from_stream(packet_reader)
            if fixed_header is None:
                return -1
            packet = await packet_class(fixed_header).from_stream(packet_reader, fixed_header=fixed_header)
            if kind == CONNECT:
                await self.handle_connect(packet)
                continue
            method = HANDLERS.get(kind)
            if method is not None:
                task = asyncio.create_task(getattr(self, method)(packet))
                running.add(task)
                task.add_done_callback(running.discard)
        return at

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        broker, session = self.broker, self.session
        topic, data = publish_packet.topic_name, publish_packet.data
        if (
            broker is None
            or session is None
            or publish_packet.qos != 0
            or publish_packet.retain_flag
            or publish_packet.dup_flag
            or not topic
            or data is None
            or "#" in topic
            or "+" in topic
            or topic.startswith("$")
        ):
            await super().handle_publish(publish_packet)
            return
        broker.publish(session, topic, data)


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
    access: BrokerAccess | None = None
    shedder: Shedder | None = None
    _targets_cache: dict[str, list[str]] | None = None
    _qos0_transports: dict[str, asyncio.WriteTransport] | None = None  # by client id: where QoS 0 frames were written

    # -- the message path: QoS 0 straight to the broadcast, shed under overload, delivered in batches --------

    def publish(self, session: Session, topic: str, data: bytes | bytearray, qos: int = 0) -> None:
        """A QoS 0 or 1 PUBLISH (not retained) just read from `session`: shed (QoS 0 meter frames under overload),
        refused, or queued for broadcast. A QoS 1 one is acknowledged by the caller, as amqtt does once it is queued."""
        shedder = self.shedder
        if qos == 0 and shedder is not None:
            kind = shed_kind(topic)
            if kind is not None and shedder.shed(kind, self._broadcast_queue.qsize()):
                return
        if not self._may(session, topic, Action.PUBLISH):
            log.info("mqtt: %s may not publish to %s: dropped", session.client_id, topic)
            return
        self._broadcast_queue.put_nowait({"session": session, "topic": topic, "data": data, "qos": qos})

    def most_buffered(self) -> int:
        """The most bytes waiting unsent on a connection QoS 0 frames were written to (closed ones forgotten)."""
        transports = self._qos0_transports or {}
        most = 0
        for client_id, transport in list(transports.items()):
            if transport.is_closing():
                del transports[client_id]
            else:
                most = max(most, transport.get_write_buffer_size())
        return most

    def _may(self, session: Session, topic: str, action: Action) -> bool:
        access = self.access
        return access is not None and access.may(session.username, topic, action.value)

    def _filters_for(self, topic: str) -> list[str]:
        """The subscription filters `topic` matches (remembered until the set of filters changes)."""
        cache = self._targets_cache
        if cache is None or len(cache) > TARGETS_CACHE_MAX:
            cache = self._targets_cache = {}
        filters = cache.get(topic)
        if filters is None:
            filters = cache[topic] = [f for f in self._subscriptions if self._matches(topic, f)]
        return filters

    def _filters_changed(self) -> None:
        self._targets_cache = None

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        fresh = subscription[0] not in self._subscriptions
        result = await super().add_subscription(subscription, session)
        if fresh:
            self._filters_changed()
        return result

    async def _del_all_subscriptions(self, session: Session) -> None:
        await super()._del_all_subscriptions(session)
        self._filters_changed()

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """Hand every waiting message to its subscribers, not one per wake-up as amqtt does (its backlog then grows
        with the number of busy connections): up to BROADCAST_BATCH per call."""
        queue = self._broadcast_queue
        broadcast = await queue.get()
        for _ in range(BROADCAST_BATCH):
            await self._deliver(broadcast, running_tasks)
            if queue.empty():
                break
            broadcast = queue.get_nowait()
        else:
            await self._deliver(broadcast, running_tasks)

    async def _deliver(self, broadcast: dict[str, Any], running_tasks: Any) -> None:
        """One message to every session subscribed to its topic that may receive it, at the lower of the
        publish and subscription QoS (amqtt delivers at the subscription's: a QoS 0 frame to a QoS 1
        subscriber then waits for a PUBACK, five seconds at most, and is logged as failed after that)."""
        topic = broadcast["topic"]
        data = broadcast["data"]
        published_qos = broadcast.get("qos")
        if not topic or data is None:
            return
        for topic_filter in self._filters_for(topic):
            for target, subscribed_qos in list(self._subscriptions.get(topic_filter, ())):
                qos = subscribed_qos if published_qos is None else min(published_qos, subscribed_qos)
                if not self._may(target, topic, Action.RECEIVE):
                    continue
                if target.transitions.state != "connected":
                    # As amqtt: kept for a persistent, non-anonymous session only at QoS 1 and 2 [MQTT 3.1.2.4]
                    if not target.clean_session and qos in (1, 2) and not target.is_anonymous:
                        await self._retain_broadcast_message(broadcast, qos, target)
                    continue
                handler = self._get_handler(target)
                if handler is None:
                    continue
                if qos == 0 and isinstance(handler.writer, StreamWriterAdapter):
                    self._write_qos0(target, handler.writer, topic, data)
                else:
                    running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False)))

    def _write_qos0(self, target: Session, writer: StreamWriterAdapter, topic: str, data: bytes | bytearray) -> None:
        """A QoS 0 PUBLISH written out at once (no task, no drain); dropped for a subscriber SUBSCRIBER_BUFFER_CAP behind."""
        if writer.is_closed:
            return
        transport = writer._writer.transport
        if self._qos0_transports is None:
            self._qos0_transports = {}
        key = target.client_id or ""
        if self._qos0_transports.get(key) is not transport:
            self._qos0_transports[key] = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SNDBUF)
        waiting = transport.get_write_buffer_size()
        # While the transport is paused (past its high-water mark until it drains to the low one) amqtt's QoS 1
        # sends wait in drain(): QoS 0 frames written meanwhile would keep it paused and starve them.
        if waiting > SUBSCRIBER_BUFFER_CAP or getattr(writer._writer._protocol, "_paused", False):
            if self.shedder is not None:
                self.shedder.shed_counts[shed_kind(topic) or "other"] += 1
            return
        name = topic.encode()
        size = 2 + len(name) + len(data)
        writer.write(b"".join((b"\x30", _varint(size), len(name).to_bytes(2, "big"), name, data)))

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        if self.tls_context is None:
            return Broker._create_ssl_context(listener)
        return self.tls_context

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await HarkHandler.init_from_connect(reader, writer, self.plugins_manager)
            handler.broker = self
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
        """The retained messages of one of `session`'s own subscriptions, sent without waiting for them.

        amqtt calls this on every connect for every filter in the broker, anyone's: with a thousand nodes that is a
        thousand filters times a thousand retained statuses per connect. Only the session's own filters count here.
        amqtt also iterates its subscriptions around this call, so it must not yield to the loop (another client
        subscribing meanwhile ends the connecting client's session): the sends are scheduled, not awaited.
        """
        topic_filter, qos = subscription
        if not any(subscriber is session for subscriber, _ in self._subscriptions.get(topic_filter, ())):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and self._may(session, topic, Action.RECEIVE):
                self._tasks_queue.append(
                    asyncio.ensure_future(handler.mqtt_publish(topic, retained.data, min(qos, retained.qos or qos), retain=True))
                )


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


class EmbeddedBroker:
    """An amqtt broker listening on one TCP address, with the hub's access policy."""

    def __init__(self, access: BrokerAccess, tls_context: ssl.SSLContext | None = None) -> None:
        self.access = access
        self.tls_context = tls_context
        self._broker: Broker | None = None
        self.shedder = Shedder()
        self.host = ""
        self.port = 0
        self.local_port = 0  # with TLS: the plain loopback listener of the hub's own bridge

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.transitions.state == "started"

    async def start(self, host: str, port: int, fallback_to_free_port: bool) -> tuple[str, int]:
        """Listen on `host:port`; if taken and allowed, on a free port. Return the address used."""
        if port != 0 and not port_available(host, port):
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
        broker.access = self.access
        broker.shedder = self.shedder
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, (HarkAuthPlugin, HarkTopicPlugin)):
                plugin.access = self.access
        await broker.start()
        server = broker._servers[TLS_LISTENER if self.tls_context is not None else "default"].instance
        self.host, self.port = server.sockets[0].getsockname()[:2]
        if self.tls_context is not None:
            self.local_port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        self._broker = broker
        self.shedder.start(broker._broadcast_queue.qsize, broker.most_buffered)

    @property
    def shedding(self) -> bool:
        """Whether QoS 0 meter frames are being shed now (the broker is overloaded)."""
        return self.shedder.shedding

    @property
    def shed_total(self) -> int:
        """QoS 0 frames shed since the start."""
        return self.shedder.shed_total

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
        await self.shedder.stop()
        if self._broker is not None and self.running:
            await self._broker.shutdown()
        self._broker = None
