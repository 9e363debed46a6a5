"""The hub's MQTT client: subscribes to every node topic and dispatches on the event loop.

paho connects, subscribes, publishes and keeps the session alive, driven from the asyncio loop
through its socket callbacks (writers on the loop, `loop_misc` once a second); only the blocking
TCP connect runs on an executor. The reading side is the bridge's own: paho 2.2 reads one packet
per `loop_read` (three `recv` calls each, whatever `max_packets` says), which at 10,000 meter
frames a second leaves the hub a wake-up per message. So when the socket is readable the bridge
takes everything it holds (up to `READ_LIMIT` bytes) in a few large `recv`s, splits it into packets
(`split_packets`), hands the rare non-PUBLISH ones (CONNACK, SUBACK, PUBACK, PINGRESP) to paho, and
handles the PUBLISHes as one batch: topics parsed (cached), payloads decoded, handlers called, and
counters incremented once per batch and kind. QoS 1 messages are acknowledged once their batch is handled.

One hub or several (issue 24). Alone, the bridge subscribes to everything under `hark/v1/nodes/+/#` with a
persistent session (clean session off) under a client id stable across restarts, so what nodes send while
the hub restarts waits for it at the broker. With `share_group` (`HARK_MQTT_SHARED`: several hubs on one
PostgreSQL and one broker) it subscribes per kind (`protocol.topics.hub_subscriptions`): meters and listen
audio plainly, as every hub's live clients need every frame, and every other kind through
`$share/<group>/hark/v1/nodes/+/<kind>/#`, so that the broker hands each such message to one hub of the
group. Then the session is clean and the client id this process's own, because Mosquitto 2 (2.0.11, tried)
keeps a disconnected persistent session in the share group and queues its turn of the messages for it: a
dead hub's session would swallow its share of the fleet's reports until a hub with the same client id came
back, which with a client id per process is never. With a clean session the dead hub leaves the group when
its connection drops and the others get everything from then on. What was in flight to it (delivered, not
yet acknowledged) goes with its session (Mosquitto gives it to no one else): the nodes' outboxes send every
message not acknowledged within 15 s again, and a message the dead hub had already stored is deduplicated by
its msg_id (`services.telemetry.ingest_outbox`), so none is lost or applied twice. A `status` in flight is
not an outbox message: the heartbeat (back online) and the missed-heartbeat sweep (offline) correct it.
Retained messages: MQTT 5 sends none on a shared subscription (4.8.2), while Mosquitto 2.0.11 sends the retained
statuses to each hub subscribing (tried). Nothing depends on either: a retained `online` is ignored anyway, a
retained `offline` applied by each hub changes nothing twice, and a node's live state comes from its heartbeats
(online within one) and the sweep (offline after three missed intervals); a last will is a live message and
reaches one hub of the group.
Messages arrive with their real topic whatever subscription matched (MQTT 5, 4.8.2; and Mosquitto for 3.1.1
clients), so parsing is the same; a `$share/<group>/` prefix, should a broker echo it, is read past.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.drops import DropLog
from hark_fleet.protocol.backoff import backoff_delay
from hark_fleet.protocol.decoding import MAX_BYTES, PayloadError, decode
from hark_fleet.protocol.decoding import _plan as free_form_fields
from hark_fleet.protocol.topics import SHARE_PREFIX, NodeTopic, hub_subscriptions, parse_node_topic, unshared
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
READ_CHUNK = 256 * 1024  # bytes per recv
READ_LIMIT = 4 * 1024 * 1024  # bytes read per wake-up at most, so that one busy socket cannot hold the loop
MAX_PACKET = 16 * 1024 * 1024  # a larger packet from the broker is a protocol error (the hub's own limit is far lower)
TOPIC_CACHE = 100_000  # parsed topics kept; cleared when full
PUBLISH = 0x30
SUBACK_FAILURE = 0x80
_SHARE_PREFIX = SHARE_PREFIX.encode()


class InvalidMessage(Exception):
    """A handler found a message it cannot accept; the bridge counts and drops it."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is and how to log in to it."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def url(self, with_credentials: bool = False) -> str:
        auth = ""
        if with_credentials and self.username:
            auth = self.username + (f":{self.password}" if self.password else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{host}:{self.port}"


def bridge_client_id(data_dir: Path) -> str:
    """The hub's client id: the same across restarts of this hub, different for another hub.

    The bridge keeps a persistent session, so what nodes send while the hub restarts waits
    for it at the broker; a new id per start would leave the old session behind, queueing
    messages no one collects.
    """
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"hark-hub-{socket.gethostname()[:40]}-{digest}"


def shared_client_id(base: str, instance_id: str) -> str:
    """The client id of one hub process sharing the ingest: `base` and the random tail of its instance id.

    Clean sessions (see the module docstring), so a new id per start leaves nothing behind; two hubs
    on one data directory (and one host) still differ. At most 64 characters, within every broker's limit.
    """
    tail = instance_id.rsplit("-", 1)[-1] or hashlib.sha256(instance_id.encode()).hexdigest()[:6]
    return f"{base[:56]}-{tail[:7]}"


class ProtocolError(Exception):
    """The broker sent bytes that are not MQTT 3.1.1 packets."""


class Publish(NamedTuple):
    """One PUBLISH packet as read off the wire."""

    topic: bytes
    payload: bytes
    qos: int
    mid: int  # 0 for QoS 0
    retain: bool


def split_packets(
    buffer: bytearray, publishes: list[Publish], others: list[tuple[int, bytes]], max_packet: int = MAX_PACKET
) -> int:
    """Split the complete MQTT packets at the start of `buffer`; PUBLISHes into `publishes`, any other
    packet as (first byte, body) into `others`, in order of arrival within each list. Returns how many
    bytes were consumed (an incomplete packet at the end stays for the next read); ProtocolError on garbage."""
    pos = 0
    end = len(buffer)
    view = memoryview(buffer)
    try:
        while end - pos >= 2:
            first = buffer[pos]
            # remaining length: 1 to 4 bytes, 7 bits each
            length = 0
            shift = 0
            index = pos + 1
            while True:
                if index >= end:
                    return pos  # the length itself is incomplete
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                index += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if length > max_packet:
                raise ProtocolError(f"packet of {length} bytes")
            body_end = index + length
            if body_end > end:
                return pos
            if first & 0xF0 == PUBLISH:
                if length < 2:
                    raise ProtocolError("PUBLISH without a topic")
                topic_end = index + 2 + (buffer[index] << 8 | buffer[index + 1])
                qos = (first >> 1) & 0x03
                mid = 0
                if qos:
                    if topic_end + 2 > body_end:
                        raise ProtocolError("PUBLISH shorter than its topic and packet id")
                    mid = buffer[topic_end] << 8 | buffer[topic_end + 1]
                    payload_start = topic_end + 2
                else:
                    if topic_end > body_end:
                        raise ProtocolError("PUBLISH shorter than its topic")
                    payload_start = topic_end
                publishes.append(
                    Publish(bytes(view[index + 2 : topic_end]), bytes(view[payload_start:body_end]), qos, mid, bool(first & 0x01))
                )
            else:
                others.append((first, bytes(view[index:body_end])))
            pos = body_end
        return pos
    finally:
        view.release()


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """What to do with messages of one kind: decode into `schema` (None: raw bytes), then call.

    With `batch`, the handler is called once per read with every message of the kind in it, as a
    list of (topic, message) pairs, and returns how many it applied. With `applied_later`, the
    handler only queues the message: whoever applies it counts it as ingested (`hark_mqtt_ingested_total`).
    """

    schema: Any
    handler: Callable[..., Any]
    with_retain: bool = False  # the handler also gets whether the broker sent a retained message
    batch: bool = False
    applied_later: bool = False
    decoder: Any = None  # a msgspec Decoder for schemas decoded without a walk (the fast path)


class MqttBridge:
    """Subscribes to `hark/v1/nodes/+/#` (or per kind, shared: `share_group`), validates and dispatches, publishes commands."""

    def __init__(self, address: BrokerAddress, client_id: str, metrics: HubMetrics, share_group: str | None = None) -> None:
        self.address = address
        self.metrics = metrics
        self.share_group = share_group  # set: several hubs share the ingest (clean session, filters per kind)
        self.client_id = client_id
        self.routes: dict[str, TopicRoute] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_since: datetime | None = None
        self._fd: int | None = None
        self._loop_thread = 0
        self._received: dict[str, Any] = {}  # kind -> prometheus child, cached off the hot path
        self._ingested: dict[str, Any] = {}
        self._topics: dict[bytes, NodeTopic | None] = {}  # parsed topics, by their bytes
        self._buffer = bytearray()  # bytes read that do not make a whole packet yet
        self.reads = 0  # wake-ups that read the socket
        self.packets = 0  # PUBLISH packets read
        self._drops = DropLog(log)
        self._tasks: set[asyncio.Task[Any]] = set()
        clean = share_group is not None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
        if address.username:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE packet id -> its filters, until the SUBACK
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client
        self._runner: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._stopping = False

    # -- public --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connected_since(self) -> datetime | None:
        """When the current connection to the broker was made (UTC), None while disconnected."""
        return self._connected_since

    def route(
        self,
        kind: str,
        handler: Callable[..., Any],
        schema: Any = Any,
        with_retain: bool = False,
        batch: bool = False,
        applied_later: bool = False,
    ) -> None:
        """Send messages whose topic kind is `kind` to `handler` after decoding into `schema` (and the retain flag).

        `batch`: the handler takes a list of (topic, message) pairs per read and returns how many it applied.
        `applied_later`: the handler queues; whoever applies the message counts it (`count_ingested`).
        """
        decoder = None
        if schema is not None and free_form_fields(schema) is None:
            decoder = msgspec.json.Decoder(schema)
        self.routes[kind] = TopicRoute(schema, handler, with_retain, batch, applied_later, decoder)

    def subscriptions(self) -> list[str]:
        """The filters the bridge subscribes to at each connect: everything, or per routed kind when shared."""
        return hub_subscriptions(self.routes, self.share_group)

    def count_ingested(self, kind: str, count: int = 1) -> None:
        """`count` messages of `kind` were decoded and applied (`hark_mqtt_ingested_total{kind}`)."""
        counter = self._ingested.get(kind)
        if counter is None:
            counter = self._ingested[kind] = self.metrics.mqtt_ingested.labels(kind)
        counter.inc(count)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lost = asyncio.Event()
        self._runner = asyncio.create_task(self._run())

    async def wait_connected(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.connected:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def publish(self, topic: str, payload: bytes | dict[str, Any], qos: int = 1, retain: bool = False) -> bool:
        """Queue a message for the broker; False when paho refused it at once."""
        data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.metrics.mqtt_published.inc()
            return True
        return False

    async def stop(self) -> None:
        """Disconnect, stop reconnecting, and finish the handlers still running."""
        self._stopping = True
        if self.connected:
            self._client.disconnect()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._close_socket()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- connection (on the event loop) ----------------------------------------------

    async def _run(self) -> None:
        """Connect, keep paho's timers going while connected, and reconnect with jittered backoff."""
        loop = asyncio.get_running_loop()
        assert self._lost is not None
        attempt = 0
        first = True
        while not self._stopping:
            self._lost.clear()
            try:
                if first:
                    await loop.run_in_executor(None, self._client.connect, self.address.host, self.address.port, KEEPALIVE_S)
                    first = False
                else:
                    await loop.run_in_executor(None, self._client.reconnect)
            except (OSError, ssl.SSLError, ValueError) as err:
                delay = backoff_delay(attempt)
                attempt += 1
                log.warning("mqtt connect to %s failed (%s); retrying in %.1fs", self.address.url(), err, delay)
                await asyncio.sleep(delay)
                continue
            while not self._lost.is_set():
                try:
                    await asyncio.wait_for(self._lost.wait(), timeout=1.0)
                except TimeoutError:
                    if self._client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                        break
            was_connected = self.connected
            self._set_connected(False)
            self._close_socket()
            if was_connected:
                attempt = 0
            delay = backoff_delay(attempt)
            attempt += 1
            log.warning("mqtt connection to %s lost; reconnecting in %.1fs", self.address.url(), delay)
            await asyncio.sleep(delay)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Called from the executor thread inside connect(): hand the socket to the loop.
        self._on_loop(self._watch, sock.fileno())

    def _watch(self, fd: int) -> None:
        assert self._loop is not None
        self._fd = fd
        self._buffer.clear()  # a partial packet of the last connection is no start for this one
        self._loop.add_reader(fd, self._read)
        if self._client.want_write():
            self._loop.add_writer(fd, self._client.loop_write)

    def _read(self) -> None:
        """The socket is readable: take what it holds, split it into packets and handle them as one batch."""
        sock = self._client.socket()
        if sock is None:
            self._signal_lost()
            return
        self.reads += 1
        tls = isinstance(sock, ssl.SSLSocket)
        buffer = self._buffer
        got = 0
        closed = False
        try:
            while got < READ_LIMIT:
                data = sock.recv(READ_CHUNK)
                if not data:
                    closed = True
                    break
                buffer += data
                got += len(data)
                if len(data) < READ_CHUNK and not (tls and sock.pending()):  # type: ignore[attr-defined]
                    break  # drained for now (TLS: its decrypted records too); the next wake-up takes what arrives meanwhile
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as err:
            log.warning("mqtt read from %s failed: %s", self.address.url(), err)
            closed = True
        if got:
            client = self._client
            with client._msgtime_mutex:
                client._last_bytes_received = time.monotonic()
            publishes: list[Publish] = []
            others: list[tuple[int, bytes]] = []
            try:
                used = split_packets(buffer, publishes, others)
            except ProtocolError as err:
                log.error("mqtt broker %s sent a malformed packet (%s); reconnecting", self.address.url(), err)
                buffer.clear()
                self._lose(mqtt.MQTT_ERR_PROTOCOL)
                return
            del buffer[:used]
            for first, body in others:
                if not self._to_paho(first, body):
                    return
            if publishes:
                try:
                    self.handle_batch(publishes)
                except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
                    self._drop("internal_error", "(batch)", detail=repr(err), exc_info=True)
        if closed:
            buffer.clear()
            self._lose(mqtt.MQTT_ERR_CONN_LOST)

    def _to_paho(self, first: int, body: bytes) -> bool:
        """Let paho handle a packet that is not a PUBLISH (CONNACK, SUBACK, PUBACK, PINGRESP): False if the connection is lost."""
        client = self._client
        client._in_packet = {
            "command": first,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = client._packet_handle()
        except Exception as err:  # noqa: BLE001 - paho's MalformedPacket and friends: the connection cannot go on
            log.error("mqtt broker %s sent a packet paho refused (%r); reconnecting", self.address.url(), err)
            rc = mqtt.MQTT_ERR_PROTOCOL
        finally:
            client._in_packet = {
                "command": 0,
                "have_remaining": 0,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": 0,
                "packet": bytearray(b""),
                "to_process": 0,
                "pos": 0,
            }
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lose(rc)
            return False
        return True

    def _lose(self, rc: Any) -> None:
        """The connection is unusable: let paho close it and tell its callbacks, then reconnect."""
        self._buffer.clear()
        self._client._loop_rc_handle(rc)
        self._signal_lost()

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._close_socket)
        self._on_loop(self._signal_lost)

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock.fileno())

    def _want_write(self, fd: int) -> None:
        if self._loop is not None and fd == self._fd:
            self._loop.add_writer(fd, self._client.loop_write)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._no_write, sock.fileno())

    def _no_write(self, fd: int) -> None:
        if self._loop is not None and fd == self._fd:
            self._loop.remove_writer(fd)

    def _close_socket(self) -> None:
        """Stop watching the socket (before paho closes it, so the loop never holds a dead fd)."""
        fd, self._fd = self._fd, None
        if fd is not None and self._loop is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` now when on the event loop's thread, else hand it over."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _signal_lost(self) -> None:
        if self._lost is not None:
            self._lost.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("mqtt broker %s refused the hub: %s", self.address.url(), reason)
            client.disconnect()
            return
        filters = self.subscriptions()
        if filters:
            _, mid = client.subscribe([(f, 1) for f in filters])
            if mid is not None:
                self._subscribing[mid] = filters
        if self.share_group is None:
            log.info("mqtt connected to %s", self.address.url())
        else:
            log.info(
                "mqtt connected to %s as %s (clean session), ingest shared in group %s",
                self.address.url(),
                self.client_id,
                self.share_group,
            )
        self._set_connected(True)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        """A filter the broker refused (an ACL without `$share/<group>/...`, a broker without shared subscriptions)
        means messages the hub never gets: said loudly, not left to be noticed."""
        filters = self._subscribing.pop(mid, [])
        refused = [f for f, reason in zip(filters, reasons, strict=False) if getattr(reason, "value", reason) >= SUBACK_FAILURE]
        if refused:
            log.error(
                "mqtt broker %s refused the subscription to %s; messages on it do not reach this hub "
                "(check the hub's ACL: it must allow subscribing to them)",
                self.address.url(),
                ", ".join(refused),
            )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._set_connected(False)
        self._signal_lost()

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        self._connected_since = utcnow() if value else None
        self.metrics.mqtt_connected.set(1 if value else 0)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Nothing may escape into paho's read loop: the message would go unacknowledged and
        # come back again and again, and every other node's messages would wait behind it.
        try:
            self.handle(message.topic, bytes(message.payload), message.retain)
        except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
            self._drop("internal_error", message.topic, detail=repr(err), exc_info=True)

    def _drop(self, reason: str, topic: str, node_id: str = "?", detail: str = "", exc_info: bool = False) -> None:
        """Count a dropped message and log it (once per node and reason a minute)."""
        self.metrics.mqtt_dropped.labels(reason).inc()
        self._drops.dropped(node_id, reason, topic, detail, exc_info)

    def handle_batch(self, publishes: list[Publish]) -> None:
        """Validate and dispatch the messages of one read, kind by kind where routes take batches; then
        acknowledge those sent at QoS 1. A bad message is counted and dropped, never raised, and never
        costs the others in the batch."""
        self.packets += len(publishes)
        received: dict[str, int] = {}
        applied: dict[str, int] = {}
        batches: dict[str, list[tuple[NodeTopic, Any]]] = {}
        topics = self._topics
        routes = self.routes
        for publish in publishes:
            raw_topic = publish.topic
            try:
                parsed = topics[raw_topic]
            except KeyError:
                try:
                    text = raw_topic.decode()
                    parsed = parse_node_topic(unshared(text) if raw_topic.startswith(_SHARE_PREFIX) else text)
                except UnicodeDecodeError:
                    parsed = None
                if len(topics) >= TOPIC_CACHE:
                    topics.clear()
                topics[raw_topic] = parsed
            if parsed is None:
                self._drop("bad_topic", raw_topic.decode(errors="replace"))
                continue
            kind = parsed.kind
            if kind == "cmd":
                continue
            route = routes.get(kind)
            if route is None:
                self._drop("unknown_kind", raw_topic.decode(errors="replace"), parsed.node_id)
                continue
            received[kind] = received.get(kind, 0) + 1
            payload = publish.payload
            decoder = route.decoder
            message: Any
            if decoder is not None and len(payload) <= MAX_BYTES:
                try:
                    message = decoder.decode(payload)
                except Exception:  # noqa: BLE001 - decoded again below for the exact reason (and msgspec's rare int-from-float case)
                    message = self._decode(route, parsed, payload, raw_topic)
            else:
                message = self._decode(route, parsed, payload, raw_topic)
            if message is _INVALID:
                continue
            if route.batch:
                found = batches.get(kind)
                if found is None:
                    found = batches[kind] = []
                found.append((parsed, message))
            elif self._dispatch(route, parsed, message, publish.retain, raw_topic) and not route.applied_later:
                applied[kind] = applied.get(kind, 0) + 1
        for kind, items in batches.items():
            try:
                count = routes[kind].handler(items)
            except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
                for parsed, _ in items:
                    self._drop("handler_error", f"{parsed.node_id}/{kind}", parsed.node_id, repr(err), exc_info=True)
                continue
            applied[kind] = applied.get(kind, 0) + (len(items) if count is None else count)
        for kind, count in received.items():
            counter = self._received.get(kind)
            if counter is None:
                counter = self._received[kind] = self.metrics.mqtt_received.labels(kind)
            counter.inc(count)
        for kind, count in applied.items():
            if count:
                self.count_ingested(kind, count)
        client = self._client
        for publish in publishes:
            if publish.qos:  # the hub subscribes at QoS 1, so the broker sends nothing higher
                client._send_puback(publish.mid)

    def _decode(self, route: TopicRoute, parsed: NodeTopic, payload: bytes, raw_topic: bytes) -> Any:
        """The payload decoded into the route's schema, or _INVALID (counted and logged)."""
        try:
            if route.schema is None:
                if len(payload) > MAX_BYTES:
                    raise PayloadError("too_large", f"larger than {MAX_BYTES} bytes")
                return payload
            return decode(payload, route.schema)
        except PayloadError as err:
            self._drop(err.reason, raw_topic.decode(errors="replace"), parsed.node_id, str(err))
            return _INVALID

    def _dispatch(self, route: TopicRoute, parsed: NodeTopic, message: Any, retained: bool, raw_topic: bytes) -> bool:
        """Call a per-message handler; True when it applied the message (a coroutine counts itself once done)."""
        topic = raw_topic.decode(errors="replace")
        try:
            result = route.handler(parsed, message, retained) if route.with_retain else route.handler(parsed, message)
        except InvalidMessage as err:
            self._drop("invalid_payload", topic, parsed.node_id, str(err))
            return False
        except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
            self._drop("handler_error", topic, parsed.node_id, repr(err), exc_info=True)
            return False
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            kind = None if route.applied_later else parsed.kind
            task.add_done_callback(functools.partial(self._task_done, topic=topic, node_id=parsed.node_id, kind=kind))
            return False
        return True

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Validate and dispatch one message; a bad one is counted and dropped, never raised."""
        self.handle_batch([Publish(topic.encode(), payload, 0, 0, retained)])

    def _task_done(self, task: asyncio.Task[Any], topic: str, node_id: str, kind: str | None = None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, InvalidMessage):
            self._drop("invalid_payload", topic, node_id, str(err))
        elif err is not None:
            self._drop("handler_error", topic, node_id, repr(err))
        elif kind is not None:
            self.count_ingested(kind)


_INVALID = object()  # a message that could not be decoded (already counted as dropped)
