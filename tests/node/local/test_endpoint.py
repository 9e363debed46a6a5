"""The local endpoint of a real unprovisioned `hark-node`: info, claim, wrong codes, replay, reset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import NodeProcess, wait_for

pytestmark = pytest.mark.slow

HANDOVER = {"node_id": "nod_local1", "credential": "cred-local-1", "hub_url": "http://127.0.0.1:9", "mqtt_url": None}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path / "node", env_extra={"HARK_MDNS_INTERFACES": "off"})
    process.start()
    wait_for(lambda: _answers(process), 20, "the local endpoint")
    yield process
    assert process.stop() == 0, process.log()


def _answers(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{node.local_url}/local/v1/info", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def info(node: NodeProcess) -> dict:
    return httpx.get(f"{node.local_url}/local/v1/info").json()["data"]


def claim_code(node: NodeProcess) -> str:
    return json.loads(node.state_path.read_text())["claim_code"]


def provision(node: NodeProcess, code: str) -> httpx.Response:
    return httpx.post(f"{node.local_url}/local/v1/provision", json={"claim_code": code, **HANDOVER})


def test_an_unprovisioned_node_says_who_it_is_without_secrets_and_logs_its_claim_code(node: NodeProcess) -> None:
    data = info(node)
    code = claim_code(node)
    assert data["state"] == "unprovisioned" and data["node_id"] is None
    assert data["hardware_id"].startswith("hw-") and data["audio"].startswith("synthetic")
    assert code not in json.dumps(data)
    assert f"{code[:4]}-{code[4:]}" in node.log()


def test_the_claim_code_enrolls_the_node_once_and_a_replay_is_refused(node: NodeProcess) -> None:
    code = claim_code(node)
    response = provision(node, code.lower()[:4] + "-" + code.lower()[4:])
    assert response.status_code == 200, response.text
    assert response.json()["data"]["state"] == "enrolled"
    assert info(node)["node_id"] == "nod_local1"
    state = json.loads(node.state_path.read_text())
    assert (state["node_id"], state["credential"], state["hub_url"]) == ("nod_local1", "cred-local-1", "http://127.0.0.1:9")
    wait_for(lambda: "hark-node" in node.log() and "node nod_local1" in node.log(), 10, "the agent to start as the node")
    replay = provision(node, code)
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "already_enrolled"


def test_wrong_codes_are_refused_logged_and_limited_to_five_a_minute(node: NodeProcess) -> None:
    answers = [provision(node, "0000-0000") for _ in range(6)]
    assert [a.status_code for a in answers] == [403] * 5 + [429]
    assert answers[0].json()["error"]["code"] == "claim_code_invalid"
    assert int(answers[5].headers["Retry-After"]) > 0
    assert provision(node, claim_code(node)).status_code == 429  # even the right code waits
    assert node.log().count("wrong claim code from 127.0.0.1") == 5
    assert info(node)["state"] == "unprovisioned"


def test_a_reset_with_the_claim_code_or_the_credential_makes_the_node_claimable_again(node: NodeProcess) -> None:
    code = claim_code(node)
    assert provision(node, code).status_code == 200
    wrong = httpx.post(f"{node.local_url}/local/v1/reset", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    reset = httpx.post(f"{node.local_url}/local/v1/reset", json={}, headers={"Authorization": "Bearer cred-local-1"})
    assert reset.status_code == 200 and reset.json()["data"]["state"] == "unprovisioned"
    assert info(node)["node_id"] is None
    assert provision(node, code).status_code == 200  # the label's code works again after a factory reset
    assert httpx.post(f"{node.local_url}/local/v1/reset", json={"claim_code": code}).status_code == 200
    state = json.loads(node.state_path.read_text())
    assert state["node_id"] is None and state["credential"] is None and state["claim_code"] == code


def test_unknown_routes_and_methods_answer_in_the_error_shape(node: NodeProcess) -> None:
    missing = httpx.get(f"{node.local_url}/local/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = httpx.get(f"{node.local_url}/local/v1/provision")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    bad = httpx.post(f"{node.local_url}/local/v1/provision", content=b"not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_any_method_a_route_does_not_take_is_405_with_allow(node: NodeProcess) -> None:
    for method in ("GET", "TRACE", "PROPFIND"):
        response = httpx.request(method, f"{node.local_url}/local/v1/provision")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST", method
        assert response.json()["error"]["code"] == "method_not_allowed", method


def test_hostile_bodies_are_400_or_413_in_the_error_shape_and_change_nothing(node: NodeProcess) -> None:
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    bodies = {
        b'{"claim_code": ' + deep + b"}": 400,
        deep: 400,
        b"[" * 1000 + b"]" * 1000: 400,
        b"\xff\xfe{": 400,
        b'{"claim_code": "' + b"x" * 70_000 + b'"}': 413,
    }
    for route in ("provision", "reset", "login"):
        for body, status in bodies.items():
            response = httpx.post(f"{node.local_url}/local/v1/{route}", content=body)
            if route == "login" and response.status_code == 404:
                continue  # the technician's routes are served once a technician access is set up
            assert response.status_code == status, (route, body[:20], response.text)
            assert response.json()["error"]["code"] == {400: "invalid_request", 413: "payload_too_large"}[status]
    assert info(node)["state"] == "unprovisioned"
    assert "Traceback" not in node.log()
