"""The node's MQTT connection: paho on a thread of its own, status and last will, commands to the loop.

The network thread connects as the node (username = node id, password = credential) with a
persistent session, publishes the retained `online` status on every connect, leaves a
retained `offline` last will, and reconnects with jittered backoff. Received messages and
connection changes are handed to the asyncio loop with `call_soon_threadsafe`; nothing
else of the agent runs on this thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import paho.mqtt.client as mqtt
from hark_fleet.node import const
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.hub_client import plain_refused
from hark_fleet.node.topics import NodeTopics
from hark_fleet.protocol.backoff import backoff_delay
from hark_fleet.protocol.messages import Status
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


def _written_by_network_thread(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's "register for writing" hook: nothing to do, the network thread's loop() writes what is queued."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is; the node logs in with its own identity, never with URL credentials."""

    host: str
    port: int
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """Parse `mqtt://host[:port]` or `mqtts://...`; ValueError when it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {parts.scheme}://{parts.hostname or ''}")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


MessageHandler = Callable[[str, bytes], None]
ConnectionHandler = Callable[[bool], None]
LoginHandler = Callable[[str, bool], None]  # the credential a CONNECT carried, and whether the broker took it

# CONNACK answers that refuse the login itself (MQTT 3.1.1 codes 4 and 5, as paho names them).
LOGIN_REFUSED = frozenset({"Bad user name or password", "Not authorized"})


class MqttTransport:
    """One MQTT session of the node with the broker."""

    def __init__(
        self,
        topics: NodeTopics,
        credential: str,
        boot_id: str,
        agent_version: str,
        on_message: MessageHandler,
        on_connection: ConnectionHandler,
        tls: ssl.SSLContext | None = None,
        allow_plain: bool = False,
        on_login: LoginHandler | None = None,
    ) -> None:
        self.topics = topics
        self._tls = tls  # the hub's CA pinned, and the node's certificate
        self._allow_plain = allow_plain
        self.boot_id = boot_id
        self.agent_version = agent_version
        self._credential = credential
        self._login_credential = credential  # what the CONNECT in progress carries
        self._on_login_cb = on_login
        self._on_message_cb = on_message
        self._on_connection_cb = on_connection
        self._address: BrokerAddress | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # interrupts a backoff wait
        self._reconnect_requested = threading.Event()
        self._connected = threading.Event()
        self._connected_at = 0.0
        self._client: mqtt.Client | None = None
        self._client_tls = False
        self._rng = random.Random()

    # -- called from the event loop ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def address(self) -> BrokerAddress | None:
        return self._address

    def start(self, address: BrokerAddress) -> None:
        """Start connecting to `address` in the background."""
        self._loop = asyncio.get_running_loop()
        self._address = address
        log.info("mqtt broker %s (client id %s)", address.url(), self.topics.node_id)
        self._thread = threading.Thread(target=self._run, name="hark-node-mqtt", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def set_address(self, address: BrokerAddress) -> None:
        """Use another broker from now on (reconnects within a second)."""
        if address == self._address:
            return
        log.info("mqtt broker changes from %s to %s", self._where(), address.url())
        self._address = address
        self._request_reconnect()

    def set_credential(self, credential: str, reconnect: bool = True) -> None:
        """Log in with `credential` from now on: reconnect within a second (or at the next attempt, without `reconnect`)."""
        self._credential = credential
        if reconnect:
            self._request_reconnect()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Hand one message to paho; False when it could not be queued for sending now."""
        client = self._client
        if client is None or not self.connected:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    async def stop(self) -> None:
        """Publish the retained offline status, disconnect cleanly and end the network thread."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is not None and self.connected:
            info = client.publish(self.topics.status, self._status("offline"), qos=1, retain=True)
            try:
                await loop.run_in_executor(None, info.wait_for_publish, const.OFFLINE_PUBLISH_TIMEOUT_S)
                if info.is_published():  # raises too when the connection went meanwhile
                    log.info("published offline status")
            except (RuntimeError, ValueError) as err:
                log.warning("offline status not confirmed by the broker: %s", err)
        else:
            log.info("not connected to the broker: the offline status is left to the last will")
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await loop.run_in_executor(None, self._thread.join, 10.0)
            self._thread = None

    def _where(self) -> str:
        return self._address.url() if self._address else "?"

    def _request_reconnect(self) -> None:
        self._reconnect_requested.set()
        self._wake.set()

    # -- the network thread ----------------------------------------------------------

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return msgspec.json.encode(Status(state=state, ts=utc_iso(), agent_version=self.agent_version, boot_id=self.boot_id))

    def _make_client(self, tls: bool) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.topics.node_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if tls and self._tls is not None:
            client.tls_set_context(self._tls)
        elif tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.max_inflight_messages_set(const.OUTBOX_MAX_IN_FLIGHT)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # Only the network thread writes: without this paho's publish() writes from the caller's thread
        # when the client runs no loop_start() thread, and two threads sending at once reorder QoS 1
        # messages (the outbox's health open/resolved pairs must reach the hub in order). With it,
        # publish() queues the packet and wakes the network thread's select, which sends it.
        client.on_socket_register_write = _written_by_network_thread
        return client

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            address = self._address
            assert address is not None
            if self._client is None or self._client_tls != address.tls:
                self._client = self._make_client(address.tls)
                self._client_tls = address.tls
            client = self._client
            self._reconnect_requested.clear()
            self._wake.clear()
            self._login_credential = self._credential
            client.username_pw_set(self.topics.node_id, self._login_credential)
            client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)
            try:
                if plain_refused(address.url(), self._tls, self._allow_plain):
                    raise ValueError(f"plain MQTT to {address.url()} refused: TLS expected (HARK_ALLOW_PLAIN)")
                client.connect(address.host, address.port, keepalive=const.KEEPALIVE_S)
            except (OSError, ssl.SSLError, ValueError) as err:
                delay = backoff_delay(attempt, const.RECONNECT_BASE_S, const.RECONNECT_CAP_S, self._rng)
                attempt += 1
                log.warning("mqtt connect to %s failed (%s); retrying in %.1fs", address.url(), err, delay)
                self._pause(delay)
                continue
            rc = mqtt.MQTT_ERR_SUCCESS
            while rc == mqtt.MQTT_ERR_SUCCESS and not self._stop.is_set() and not self._reconnect_requested.is_set():
                rc = client.loop(timeout=0.5)
            # A connection that lasted restarts the backoff; one dropped at once (a duplicate
            # client id, a revoked login) keeps growing it so the node never hammers the broker.
            stable = self._connected.is_set() and time.monotonic() - self._connected_at >= const.STABLE_CONNECTION_S
            if self._stop.is_set() or self._reconnect_requested.is_set():
                self._disconnect(client)
            self._set_connected(False)
            if self._stop.is_set():
                break
            if self._reconnect_requested.is_set():
                attempt = 0
                delay = self._rng.uniform(0.0, const.PROMPT_RECONNECT_S)
                log.info("mqtt reconnecting to %s in %.1fs (new credential or broker)", self._where(), delay)
                self._stop.wait(delay)
                continue
            if stable:
                attempt = 0
            delay = backoff_delay(attempt, const.RECONNECT_BASE_S, const.RECONNECT_CAP_S, self._rng)
            attempt += 1
            log.warning("mqtt connection to %s lost (%s); reconnecting in %.1fs", address.url(), mqtt.error_string(rc), delay)
            self._pause(delay)
        self._client = None

    def _pause(self, delay: float) -> None:
        """Wait `delay` seconds, or less when stopped or asked to reconnect at once."""
        self._wake.wait(delay)
        if self._reconnect_requested.is_set() and not self._stop.is_set():
            self._stop.wait(self._rng.uniform(0.0, const.PROMPT_RECONNECT_S))

    def _disconnect(self, client: mqtt.Client) -> None:
        """Send DISCONNECT (so the broker drops the last will) and let paho write it out."""
        if client.disconnect() != mqtt.MQTT_ERR_SUCCESS:
            return
        for _ in range(20):
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("mqtt broker %s refused node %s: %s", self._where(), self.topics.node_id, reason)
            client.disconnect()
            if self._on_login_cb is not None and str(reason) in LOGIN_REFUSED:
                self._call_on_loop(self._on_login_cb, self._login_credential, False)
            return
        if self._on_login_cb is not None:
            self._call_on_loop(self._on_login_cb, self._login_credential, True)
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        client.subscribe(self.topics.commands_filter, qos=1)
        log.info(
            "mqtt connected to %s (session %s)",
            self._where(),
            "resumed" if flags.session_present else "new",
        )
        self._set_connected(True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._set_connected(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._call_on_loop(self._on_message_cb, message.topic, bytes(message.payload))

    def _set_connected(self, value: bool) -> None:
        if value == self._connected.is_set():
            return
        if value:
            self._connected_at = time.monotonic()
            self._connected.set()
        else:
            self._connected.clear()
            log.info("mqtt disconnected")
        self._call_on_loop(self._on_connection_cb, value)

    def _call_on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the agent is stopping
            pass
