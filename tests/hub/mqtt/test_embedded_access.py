"""The embedded broker admits only who the hub's policy names: deny by default."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.const import HUB_MQTT_USERNAME
from hub.mqtt.access import BrokerAccess
from hub.mqtt.embedded import EmbeddedBroker


def connect_result(port: int, username: str | None, password: str | None) -> bool:
    """Whether the broker accepted a CONNECT with these credentials."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}")
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(c, userdata, flags, reason, properties) -> None:
        outcome.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return outcome == [True]


@pytest.mark.parametrize(
    ("username", "password", "accepted"),
    [
        (HUB_MQTT_USERNAME, "the-secret", True),
        (HUB_MQTT_USERNAME, "a-guess", False),
        (None, None, False),
        ("someone", "the-secret", False),
    ],
)
def test_only_the_hub_credential_logs_in(username: str | None, password: str | None, accepted: bool) -> None:
    async def scenario() -> bool:
        broker = EmbeddedBroker(BrokerAccess("the-secret"))
        _, port = await broker.start("127.0.0.1", 0, fallback_to_free_port=False)
        try:
            return await asyncio.to_thread(connect_result, port, username, password)
        finally:
            await broker.stop()

    assert asyncio.run(scenario()) is accepted


def test_policy_denies_topics_to_anyone_but_the_hub() -> None:
    access = BrokerAccess("s")
    assert access.may(HUB_MQTT_USERNAME, "hark/v1/nodes/n1/cmd/config", "publish")
    assert not access.may("n1", "hark/v1/nodes/n1/heartbeat", "publish")
    assert not access.may(None, "#", "subscribe")
