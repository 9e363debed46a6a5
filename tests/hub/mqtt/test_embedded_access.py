"""The embedded broker admits only who the hub's policy names: deny by default."""

from __future__ import annotations

import asyncio

import pytest

from hub.const import HUB_MQTT_USERNAME
from hub.mqtt.access import BrokerAccess
from hub.mqtt.embedded import EmbeddedBroker
from tests.harness import mqtt_login


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
            return await asyncio.to_thread(mqtt_login, port, username, password)
        finally:
            await broker.stop()

    assert asyncio.run(scenario()) is accepted


def test_policy_denies_topics_to_anyone_but_the_hub() -> None:
    access = BrokerAccess("s")
    assert access.may(HUB_MQTT_USERNAME, "hark/v1/nodes/n1/cmd/config", "publish")
    assert not access.may("n1", "hark/v1/nodes/n1/heartbeat", "publish")
    assert not access.may(None, "#", "subscribe")
