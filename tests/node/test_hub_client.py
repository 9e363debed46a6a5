"""The node's HTTP client against a real HTTP server: config, clock offset, and failures mapped to errors."""

from __future__ import annotations

import asyncio

import pytest
from hark_fleet.hub.processes import free_port
from hark_fleet.node.errors import HubProtocolError, HubRejected, HubUnreachable
from hark_fleet.node.hub_client import HubClient, answer_data

from tests.node.fakes import ConfigStub


def fetch(url: str, node_id: str = "n1", credential: str = "cred-1") -> object:
    async def scenario() -> object:
        client = HubClient(url, node_id, credential)
        try:
            return await client.fetch_config()
        finally:
            client.close()

    return asyncio.run(scenario())


def test_config_and_clock_offset(no_thread_leak: None) -> None:
    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1"}) as stub:
        stub.hub_time_shift_s = 2.5  # the hub's clock runs 2.5 s ahead
        fetched = fetch(stub.url + "/")
    assert fetched.config.mqtt_url == "mqtt://127.0.0.1:1883"  # type: ignore[attr-defined]
    assert fetched.config.name == "test box" and fetched.config.meter_interval_ms == 100  # type: ignore[attr-defined]
    assert 2400 < fetched.clock_offset_ms < 2600  # type: ignore[attr-defined]
    assert stub.requests == [("/api/v1/nodes/n1/config", "Bearer cred-1")]


def test_a_rotated_credential_is_used_at_once(no_thread_leak: None) -> None:
    async def scenario(url: str) -> None:
        client = HubClient(url, "n1", "cred-1")
        try:
            await client.fetch_config()
            client.set_credential("cred-2")
            await client.fetch_config()
        finally:
            client.close()

    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1", "cred-2"}) as stub:
        asyncio.run(scenario(stub.url))
    assert [auth for _, auth in stub.requests] == ["Bearer cred-1", "Bearer cred-2"]


def test_a_wrong_credential_is_rejected_without_showing_it(no_thread_leak: None) -> None:
    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1"}) as stub:
        with pytest.raises(HubRejected, match="401 unauthenticated") as caught:
            fetch(stub.url, credential="wrong-secret")
    assert caught.value.status == 401
    assert "wrong-secret" not in str(caught.value)


def test_hub_trouble_is_unreachable(no_thread_leak: None) -> None:
    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1"}) as stub:
        stub.status_override = 503
        with pytest.raises(HubUnreachable, match="503"):
            fetch(stub.url)
    with pytest.raises(HubUnreachable):
        fetch(f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    "body", [b"not json", b'{"data": {"node_id": "n1"}}', b'{"data": {"node_id": "n9", "mqtt_url": "mqtt://x"}}']
)
def test_an_answer_the_node_cannot_use_is_a_protocol_error(body: bytes, no_thread_leak: None) -> None:
    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1"}) as stub:
        stub.body_override = body
        with pytest.raises(HubProtocolError):
            fetch(stub.url)


DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"data": ' + DEEP + b"}",
        b'{"data": {"node_id": "n1", "mqtt_url": "mqtt://x", "cache_policy": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}}",
        b'{"data": {"node_id": "n1", "mqtt_url": "mqtt://x", "tags": "' + b"x" * 2_000_000 + b'"}}',
    ],
    ids=["deep", "deep-data", "deep-free-form", "huge"],
)
def test_a_deep_or_huge_answer_is_a_protocol_error_not_a_crash(body: bytes, no_thread_leak: None) -> None:
    with ConfigStub("n1", "mqtt://127.0.0.1:1883", {"cred-1"}) as stub:
        stub.body_override = body
        with pytest.raises(HubProtocolError):
            fetch(stub.url)


@pytest.mark.parametrize("body", [DEEP, b"[1, 2]", b"\xff", b'"' + b"x" * 2_000_000 + b'"'])
def test_every_json_answer_from_the_hub_is_bounded(body: bytes) -> None:
    with pytest.raises(HubProtocolError):
        answer_data(body)
    assert answer_data(b'{"data": {"id": "r1"}}') == {"id": "r1"}
    assert answer_data(b"") is None
