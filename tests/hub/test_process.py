"""The `hark-hub` process: start on a busy machine, readiness, and a graceful stop."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.harness import ADMIN_PASSWORD, HubProcess, Mosquitto, port_open, running_hub, wait_for


def test_embedded_broker_moves_to_a_free_port_when_1883_is_taken(tmp_path: Path) -> None:
    blocker = None
    if not port_open("127.0.0.1", 1883):
        blocker = Mosquitto(tmp_path / "blocker", port=1883)
        blocker.start()
    try:
        with running_hub(tmp_path / "hub", env_extra={"HARK_EMBEDDED_MQTT_BIND": None}) as hub:
            assert httpx.get(f"{hub.url}/readyz").json()["status"] == "ready"
            log = hub.log()
            assert "mqtt port 127.0.0.1:1883 is taken" in log
            assert "embedded mqtt broker listening on 127.0.0.1:" in log
            assert "127.0.0.1:1883 " not in log.split("embedded mqtt broker listening on", 1)[1].splitlines()[0]
    finally:
        if blocker:
            blocker.stop()


def test_an_explicit_broker_address_that_is_taken_stops_the_hub_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hub = HubProcess(tmp_path, env_extra={"HARK_EMBEDDED_MQTT_BIND": f"127.0.0.1:{port}"})
        hub.start(wait_ready=False)
        assert hub.proc is not None
        assert hub.proc.wait(30) == 1
    assert f"HARK_EMBEDDED_MQTT_BIND 127.0.0.1:{port} is already in use" in hub.log()
    assert "Traceback" not in hub.log()


def test_a_taken_http_port_stops_the_hub_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        hub = HubProcess(tmp_path, port=taken.getsockname()[1])
        hub.start(wait_ready=False)
        assert hub.proc is not None
        assert hub.proc.wait(30) == 1
    assert "cannot listen on 127.0.0.1" in hub.log()


def test_readyz_goes_503_while_the_external_broker_is_down(tmp_path: Path, own_mosquitto: Mosquitto) -> None:
    with running_hub(tmp_path, mqtt_url=own_mosquitto.url) as hub:
        body = httpx.get(f"{hub.url}/readyz").json()
        assert body["status"] == "ready" and "embedded_broker" not in body["checks"]
        own_mosquitto.stop()

        def not_ready() -> dict | None:
            response = httpx.get(f"{hub.url}/readyz")
            return response.json() if response.status_code == 503 else None

        body = wait_for(not_ready, 10, "readyz to report 503")
        assert body["status"] == "not_ready"
        assert body["checks"]["database"] == {"ok": True}
        assert body["checks"]["mqtt"]["ok"] is False
        assert own_mosquitto.url in body["checks"]["mqtt"]["reason"]
        assert httpx.get(f"{hub.url}/healthz").status_code == 200
        own_mosquitto.start()
        wait_for(lambda: httpx.get(f"{hub.url}/readyz").status_code == 200, 40, "the hub to reconnect")


def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path)
    hub.start()
    assert hub.proc is not None
    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    head = (
        f"POST /api/v1/auth/login HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=20) as sock:
        sock.sendall(head + body[:10])  # the request is now in flight, waiting for its body
        time.sleep(0.3)
        hub.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not port_open("127.0.0.1", hub.port), 5, "the hub to stop accepting connections")
        assert hub.proc.poll() is None, "the hub must wait for the request in flight"
        sock.sendall(body[10:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["data"]["token"].startswith("hks_")
    assert hub.proc.wait(15) == 0
    log = hub.log()
    assert "stopping (signal received)" in log
    assert "hark hub stopped" in log
    assert "Traceback" not in log
