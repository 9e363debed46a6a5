"""A plain paho client for broker tests: what the broker answered, what arrived (with the retain flag), whether it was dropped."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Message = tuple[str, bytes, bool]  # topic, payload, retain flag


class Peer:
    """One MQTT 3.1.1 connection with a chosen client id, login and session kind; paho never retries a refusal."""

    def __init__(
        self,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        clean: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.host, self.port = host, port
        self.connacks: queue.Queue[bool] = queue.Queue()
        self.messages: queue.Queue[Message] = queue.Queue()
        self.dropped = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.dropped.set()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connacks.put(not reason.is_failure)
        if reason.is_failure:
            client.disconnect()

    def connect(self) -> bool:
        """Connect; whether the broker accepted."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        try:
            return self.connacks.get(timeout=5)
        except queue.Empty:
            return False

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received(self, seconds: float = 0.5) -> list[Message]:
        """What arrives within `seconds`."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
