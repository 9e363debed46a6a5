"""The platform every family shares: envelopes, errors, 404/405/413, and no 500 for bad input."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.harness import HubProcess


def test_healthz_answers_ok(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_dependency(hub: HubProcess) -> None:
    body = httpx.get(f"{hub.url}/readyz").json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["mqtt"] == {"ok": True}
    assert body["checks"]["embedded_broker"] == {"ok": True}


def test_unknown_route_is_404_in_error_shape(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/api/v1/no-such-family")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["content-type"].startswith("application/json")


def test_wrong_method_is_405_with_allow_header(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.delete("/api/v1/nodes")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD"


def test_missing_token_is_401(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/api/v1/nodes")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_unknown_token_is_401(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/api/v1/nodes", headers={"Authorization": "Bearer hks_not-a-real-token"})
    assert response.status_code == 401


def test_body_over_limit_is_413_before_it_is_read(hub: HubProcess) -> None:
    response = httpx.post(f"{hub.url}/api/v1/auth/login", content=b"x" * 100_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_body_over_limit_is_413(hub: HubProcess) -> None:
    def chunks():
        for _ in range(20):
            yield b"y" * 1024

    response = httpx.post(f"{hub.url}/api/v1/auth/login", content=chunks())
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"username": 5, "password": "x"}', "username"),
        (b'{"username": "admin"}', "password"),
        (b'{"username": "a", "password": "b", "extra": 1}', "extra"),
        (b"\xff\xfe\x00garbage", "body"),
        (b"null", "body"),
    ],
)
def test_bad_json_body_is_400_naming_the_field(hub: HubProcess, body: bytes, field: str) -> None:
    response = httpx.post(f"{hub.url}/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["fields"], error


def test_malformed_http_never_takes_the_hub_down(hub: HubProcess) -> None:
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"\x00" * 64 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
            sock.sendall(raw)
            sock.recv(4096)
    assert httpx.get(f"{hub.url}/healthz").status_code == 200


def test_errors_never_carry_a_stack_trace(hub: HubProcess) -> None:
    with hub.admin() as client:
        responses = [
            client.get("/api/v1/nodes", params={"limit": "x" * 5000}),
            client.get("/api/v1/nodes", params={"cursor": "%%%"}),
            client.get("/api/v1/nodes", params={"from": "yesterday"}),
            client.post("/api/v1/nodes/export", content=b'{"ids": "nope"}'),
        ]
    for response in responses:
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text
