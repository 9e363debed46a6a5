"""The hub's MQTT client: subscribes to every node topic and dispatches on the event loop.

paho is driven from the asyncio loop through its socket callbacks (readers and writers on
the loop, `loop_misc` once a second), so messages are handled where they are read, with
no thread hand-off per message. Only the blocking TCP connect runs on an executor.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.drops import DropLog
from hark_fleet.protocol.backoff import backoff_delay
from hark_fleet.protocol.decoding import MAX_BYTES, PayloadError, decode
from hark_fleet.protocol.topics import HUB_SUBSCRIPTION, parse_node_topic
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
READ_BATCH = 1000  # packets paho may parse per readable event


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


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """What to do with messages of one kind: decode into `schema` (None: raw bytes), then call."""

    schema: Any
    handler: Callable[..., Any]
    with_retain: bool = False  # the handler also gets whether the broker sent a retained message


class MqttBridge:
    """Subscribes to `hark/v1/nodes/+/#`, validates and dispatches, publishes commands."""

    def __init__(self, address: BrokerAddress, client_id: str, metrics: HubMetrics) -> None:
        self.address = address
        self.metrics = metrics
        self.routes: dict[str, TopicRoute] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_since: datetime | None = None
        self._fd: int | None = None
        self._loop_thread = 0
        self._received: dict[str, Any] = {}  # kind -> prometheus child, cached off the hot path
        self._drops = DropLog(log)
        self._tasks: set[asyncio.Task[Any]] = set()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311)
        if address.username:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
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

    def route(self, kind: str, handler: Callable[..., Any], schema: Any = Any, with_retain: bool = False) -> None:
        """Send messages whose topic kind is `kind` to `handler` after decoding into `schema` (and the retain flag)."""
        self.routes[kind] = TopicRoute(schema, handler, with_retain)

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
        self._loop.add_reader(fd, self._read)
        if self._client.want_write():
            self._loop.add_writer(fd, self._client.loop_write)

    def _read(self) -> None:
        if self._client.loop_read(READ_BATCH) != mqtt.MQTT_ERR_SUCCESS:
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
        client.subscribe(HUB_SUBSCRIPTION, qos=1)
        log.info("mqtt connected to %s", self.address.url())
        self._set_connected(True)

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

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Validate and dispatch one message; a bad one is counted and dropped, never raised."""
        parsed = parse_node_topic(topic)
        if parsed is None:
            self._drop("bad_topic", topic)
            return
        if parsed.kind == "cmd":
            return  # the hub's own commands to nodes, matched by its subscription
        route = self.routes.get(parsed.kind)
        if route is None:
            self._drop("unknown_kind", topic, parsed.node_id)
            return
        counter = self._received.get(parsed.kind)
        if counter is None:
            counter = self._received[parsed.kind] = self.metrics.mqtt_received.labels(parsed.kind)
        counter.inc()
        try:
            if route.schema is None:
                if len(payload) > MAX_BYTES:
                    raise PayloadError("too_large", f"larger than {MAX_BYTES} bytes")
                message = payload
            else:
                message = decode(payload, route.schema)
        except PayloadError as err:
            self._drop(err.reason, topic, parsed.node_id, str(err))
            return
        try:
            result = route.handler(parsed, message, retained) if route.with_retain else route.handler(parsed, message)
        except InvalidMessage as err:
            self._drop("invalid_payload", topic, parsed.node_id, str(err))
            return
        except Exception as err:  # noqa: BLE001 - logged with its traceback (rate-limited) and counted
            self._drop("handler_error", topic, parsed.node_id, repr(err), exc_info=True)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, topic=topic, node_id=parsed.node_id))

    def _task_done(self, task: asyncio.Task[Any], topic: str, node_id: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, InvalidMessage):
            self._drop("invalid_payload", topic, node_id, str(err))
        elif err is not None:
            self._drop("handler_error", topic, node_id, repr(err))
