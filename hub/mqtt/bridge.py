"""The hub's MQTT client: subscribes to every node topic and hands messages to the event loop.

paho runs its network loop on a thread of its own; received messages are queued and
drained on the asyncio loop in batches, so no handler ever runs on paho's thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hub.const import HUB_SUBSCRIPTION
from hub.metrics import HubMetrics
from hub.mqtt.backoff import backoff_delay
from hub.mqtt.topics import NodeTopic, parse_node_topic

log = logging.getLogger(__name__)

KEEPALIVE_S = 30


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


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """What to do with messages of one kind: decode into `schema` (None: raw bytes), then call."""

    schema: Any
    handler: Callable[[NodeTopic, Any], Any]


class MqttBridge:
    """Subscribes to `hark/v1/nodes/+/#`, validates and dispatches, publishes commands."""

    def __init__(self, address: BrokerAddress, client_id: str, metrics: HubMetrics) -> None:
        self.address = address
        self.metrics = metrics
        self.routes: dict[str, TopicRoute] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._drain_scheduled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._received: dict[str, Any] = {}  # kind -> prometheus child, cached off the hot path
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
        self._client = client

    # -- public --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def route(self, kind: str, handler: Callable[[NodeTopic, Any], Any], schema: Any = Any) -> None:
        """Send messages whose topic kind is `kind` to `handler` after decoding into `schema`."""
        self.routes[kind] = TopicRoute(schema, handler)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="hark-mqtt", daemon=True)
        self._thread.start()

    async def wait_connected(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._connected.wait, timeout)

    def publish(self, topic: str, payload: bytes | dict[str, Any], qos: int = 1, retain: bool = False) -> bool:
        """Queue a message for the broker; False when paho refused it at once."""
        data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.metrics.mqtt_published.inc()
            return True
        return False

    async def stop(self) -> None:
        """Disconnect, stop the network thread, and finish handling what was received."""
        self._stop.set()
        try:
            self._client.disconnect()
        except Exception:  # noqa: BLE001 - already gone is fine on the way out
            pass
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
        self._drain()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- paho thread -----------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self._client.connect(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
                    first = False
                else:
                    self._client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as err:
                delay = backoff_delay(attempt)
                attempt += 1
                log.warning("mqtt connect to %s failed (%s); retrying in %.1fs", self.address.url(), err, delay)
                self._stop.wait(delay)
                continue
            rc = mqtt.MQTT_ERR_SUCCESS
            while rc == mqtt.MQTT_ERR_SUCCESS and not self._stop.is_set():
                rc = self._client.loop(timeout=0.5)
            if self._connected.is_set():
                attempt = 0
            self._set_connected(False)
            if self._stop.is_set():
                break
            delay = backoff_delay(attempt)
            attempt += 1
            log.warning(
                "mqtt connection to %s lost (%s); reconnecting in %.1fs", self.address.url(), mqtt.error_string(rc), delay
            )
            self._stop.wait(delay)

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

    def _set_connected(self, value: bool) -> None:
        if value:
            self._connected.set()
        else:
            self._connected.clear()
        self.metrics.mqtt_connected.set(1 if value else 0)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.append((message.topic, bytes(message.payload)))
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the hub is stopping
                pass

    # -- event loop --------------------------------------------------------------

    def _drain(self) -> None:
        self._drain_scheduled = False
        inbox = self._inbox
        while inbox:
            topic, payload = inbox.popleft()
            self.handle(topic, payload)

    def _drop(self, reason: str, topic: str) -> None:
        self.metrics.mqtt_dropped.labels(reason).inc()
        log.debug("mqtt message on %s dropped: %s", topic, reason)

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate and dispatch one message; a bad one is counted and dropped, never raised."""
        parsed = parse_node_topic(topic)
        if parsed is None:
            self._drop("bad_topic", topic)
            return
        route = self.routes.get(parsed.kind)
        if route is None:
            self._drop("unknown_kind", topic)
            return
        counter = self._received.get(parsed.kind)
        if counter is None:
            counter = self._received[parsed.kind] = self.metrics.mqtt_received.labels(parsed.kind)
        counter.inc()
        try:
            message = payload if route.schema is None else msgspec.json.decode(payload, type=route.schema)
        except msgspec.ValidationError:
            self._drop("invalid_payload", topic)
            return
        except msgspec.DecodeError:
            self._drop("invalid_json", topic)
            return
        try:
            result = route.handler(parsed, message)
        except InvalidMessage:
            self._drop("invalid_payload", topic)
            return
        except Exception:
            log.exception("mqtt handler for %s failed", topic)
            self._drop("handler_error", topic)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, topic=topic))

    def _task_done(self, task: asyncio.Task[Any], topic: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, InvalidMessage):
            self._drop("invalid_payload", topic)
        elif err is not None:
            log.error("mqtt handler for %s failed: %r", topic, err)
            self._drop("handler_error", topic)
