"""The hub's own Mosquitto as its embedded broker: node identities fenced by the dynamic security plugin, restarted
when it dies, gone when the hub stops or is killed, one per hub; the in-process broker where it is not wanted or missing."""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.mqtt.mosquitto_conf import find_binary
from hark_fleet.protocol.tls import client_context
from hark_fleet.provision.ca import CLIENT, CertificateAuthority
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import ROOT, HubProcess, mqtt_login, running_hub, wait_for
from tests.hub.mqtt.peer import Peer

MOSQUITTO = find_binary(None)
MANAGED = {"HARK_EMBEDDED_BROKER": "mosquitto"}


def managed_pids(data_dir: Path) -> list[int]:
    """Processes running the Mosquitto configuration of the hub with this data dir."""
    config = str(data_dir / "mosquitto" / "mosquitto.conf").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if config in argv and state != "Z":
            pids.append(int(entry.name))
    return pids


def readyz(hub: HubProcess) -> dict:
    return httpx.get(f"{hub.url}/readyz", timeout=5).json()


def enroll(hub: HubProcess) -> tuple[str, str]:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def rotate_and_deliver(hub: HubProcess, node_id: str) -> str:
    with hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node_id}/credentials/rotate", json={"grace_s": 60, "deliver": True})
    assert response.status_code == 201, response.text
    return response.json()["data"]["credential"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("hub-mosquitto"), env_extra=MANAGED) as process:
        yield process


def test_the_hub_runs_its_own_mosquitto_and_says_so(hub: HubProcess) -> None:
    assert len(managed_pids(hub.data_dir)) == 1
    assert f"embedded mqtt broker listening on 127.0.0.1:{hub.mqtt_port} (Mosquitto, " in hub.log()
    wait_for(lambda: f"mqtt mqtt://127.0.0.1:{hub.mqtt_port} (embedded Mosquitto)" in hub.log(), 10, "the startup line")
    assert readyz(hub)["checks"]["embedded_broker"] == {"ok": True}
    load = httpx.get(f"{hub.url}/api/load", timeout=5).json()["data"]
    assert load["broker"]["kind"] == "mosquitto" and load["broker"]["running"] is True
    config = (hub.data_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {hub.mqtt_port} 127.0.0.1" in config and "allow_anonymous false" in config
    assert "persistence true" in config
    assert stat.S_IMODE((hub.data_dir / "mosquitto" / "dynamic-security.json").stat().st_mode) == 0o600


def test_a_node_logs_in_only_as_itself_and_gets_only_its_own_commands(hub: HubProcess) -> None:
    node_a, credential_a = enroll(hub)
    node_b, credential_b = enroll(hub)
    assert not mqtt_login(hub.mqtt_port, node_a, credential_a, client_id=f"{node_a}-elsewhere"), "a client id not its own"
    assert not mqtt_login(hub.mqtt_port, node_a, credential_a, client_id=node_b), "another node's client id"
    assert not mqtt_login(hub.mqtt_port, node_a, credential_b), "another node's credential"
    assert not mqtt_login(hub.mqtt_port, None, None, client_id="anonymous")
    assert mqtt_login(hub.mqtt_port, node_a, credential_a)

    peer = Peer(hub.mqtt_port, node_a, node_a, credential_a)
    try:
        assert peer.connect()
        peer.subscribe("hark/v1/nodes/#")  # refused by the broker (SUBACK failure): not its subtree
        peer.subscribe(f"hark/v1/nodes/{node_b}/cmd/#")
        peer.subscribe(f"hark/v1/nodes/{node_a}/cmd/#")
        rotate_and_deliver(hub, node_b)
        assert peer.received(1.0) == [], "node A received a command for node B"
        new_a = rotate_and_deliver(hub, node_a)
        got = wait_for(lambda: peer.received(0.2), 10, "node A's own credential delivery")
    finally:
        peer.close()
    assert [topic for topic, _, _ in got] == [f"hark/v1/nodes/{node_a}/cmd/credentials"]
    assert new_a.encode() in got[0][1]


def test_a_deleted_node_cannot_log_in_any_more(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    assert mqtt_login(hub.mqtt_port, node_id, credential)
    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/nodes/{node_id}").status_code in (200, 204)
    assert not mqtt_login(hub.mqtt_port, node_id, credential)


def held_mosquitto(workdir: Path) -> tuple[Path, Path]:
    """A Mosquitto wrapper that refuses to start while `hold` exists: the broker stays down until the test lets it."""
    workdir.mkdir(parents=True, exist_ok=True)
    hold = workdir / "hold"
    wrapper = workdir / "mosquitto"
    wrapper.write_text(f'#!/bin/sh\nif [ -e "{hold}" ]; then echo "held by the test"; exit 1; fi\nexec {MOSQUITTO} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, hold


def test_a_killed_mosquitto_is_restarted_and_the_hub_reconnects(tmp_path: Path) -> None:
    wrapper, hold = held_mosquitto(tmp_path / "bin")
    env = {**MANAGED, "HARK_MOSQUITTO_BIN": str(wrapper)}
    with running_hub(tmp_path / "hub", env_extra=env) as hub:
        node_id, credential = enroll(hub)
        (pid,) = managed_pids(hub.data_dir)
        hold.touch()
        os.kill(pid, signal.SIGKILL)

        def down() -> bool:
            response = httpx.get(f"{hub.url}/readyz", timeout=5)
            return response.status_code == 503 and response.json()["checks"]["embedded_broker"]["ok"] is False

        wait_for(down, 10, "/readyz to report the broker down")
        reason = readyz(hub)["checks"]["embedded_broker"]["reason"]
        assert "restarting" in reason, reason
        load = httpx.get(f"{hub.url}/api/load", timeout=5).json()["data"]
        assert load["broker"] == {"kind": "mosquitto", "running": False, "shed_total": 0, "shedding": False}
        hold.unlink()
        wait_for(lambda: readyz(hub)["status"] == "ready", 60, "the broker back and the bridge reconnected", interval=0.2)
        assert managed_pids(hub.data_dir) != [pid]
        assert mqtt_login(hub.mqtt_port, node_id, credential), "node identities survive the restart"
        assert "the embedded Mosquitto stopped (killed by SIGKILL); restarting it" in hub.log()
        assert hub.log().count("mqtt connected to") >= 2


def test_stopping_the_hub_stops_its_mosquitto(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", env_extra=MANAGED)
    hub.start()
    assert len(managed_pids(hub.data_dir)) == 1
    assert hub.stop() == 0, hub.log()
    assert managed_pids(hub.data_dir) == []
    assert "Saving in-memory database" in hub.log()  # a clean stop: sessions kept for the next start


def test_a_hub_killed_with_sigkill_leaves_no_mosquitto_and_starts_again(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", env_extra=MANAGED)
    hub.start()
    node_id, credential = enroll(hub)
    assert hub.proc is not None
    hub.proc.kill()
    hub.proc.wait()
    hub.proc = None
    wait_for(lambda: managed_pids(hub.data_dir) == [], 10, "the orphaned Mosquitto to stop")
    hub.start()
    try:
        assert len(managed_pids(hub.data_dir)) == 1
        assert mqtt_login(hub.mqtt_port, node_id, credential)
    finally:
        assert hub.stop() == 0, hub.log()


def test_hubs_side_by_side_each_run_their_own_mosquitto(tmp_path: Path) -> None:
    hubs = [HubProcess(tmp_path / f"hub-{i}", env_extra=MANAGED) for i in range(3)]
    try:
        for hub in hubs:
            hub.start(wait_ready=False)
        for hub in hubs:
            hub.wait_ready()
        pids = [managed_pids(hub.data_dir) for hub in hubs]
        assert all(len(p) == 1 for p in pids) and len({p[0] for p in pids}) == 3
        for hub in hubs:
            node_id, credential = enroll(hub)
            assert mqtt_login(hub.mqtt_port, node_id, credential)
            other = next(h for h in hubs if h is not hub)
            assert not mqtt_login(other.mqtt_port, node_id, credential), "one hub's node on another's broker"
    finally:
        for hub in hubs:
            assert hub.stop() == 0, hub.log()
    assert all(managed_pids(hub.data_dir) == [] for hub in hubs)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"HARK_EMBEDDED_BROKER": "in-process"}, "(embedded, in-process)"),
        ({"HARK_MOSQUITTO_BIN": "/nonexistent"}, "embedded broker: in-process (HARK_MOSQUITTO_BIN /nonexistent is not"),
    ],
    ids=["asked", "auto-without-binary"],
)
def test_the_in_process_broker_when_asked_or_without_mosquitto(tmp_path: Path, env: dict[str, str], line: str) -> None:
    with running_hub(tmp_path / "hub", env_extra=env) as hub:
        wait_for(lambda: line in hub.log(), 10, line)
        assert managed_pids(hub.data_dir) == []
        assert readyz(hub)["checks"]["embedded_broker"] == {"ok": True}
        assert httpx.get(f"{hub.url}/api/load", timeout=5).json()["data"]["broker"]["kind"] == "in-process"
        node_id, credential = enroll(hub)
        assert mqtt_login(hub.mqtt_port, node_id, credential)


def test_asking_for_mosquitto_without_one_is_a_clear_startup_error(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", env_extra={"HARK_EMBEDDED_BROKER": "mosquitto", "HARK_MOSQUITTO_BIN": "/nonexistent"})
    hub.start(wait_ready=False)
    assert hub.proc is not None
    code = hub.proc.wait(30)
    hub.proc = None
    assert code != 0
    assert "HARK_EMBEDDED_BROKER=mosquitto: HARK_MOSQUITTO_BIN /nonexistent is not an executable" in hub.log()
    assert "Traceback" not in hub.log()


def test_a_hub_with_nodes_enrolled_in_process_stays_there_under_auto(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub", env_extra={"HARK_EMBEDDED_BROKER": "in-process"}) as hub:
        node_id, credential = enroll(hub)
    with running_hub(tmp_path / "hub") as hub:  # auto, Mosquitto installed
        assert "Mosquitto cannot take over their credentials" in hub.log()
        assert managed_pids(hub.data_dir) == []
        assert mqtt_login(hub.mqtt_port, node_id, credential)


def mqtts_login(port: int, context: ssl.SSLContext, username: str, password: str) -> bool:
    """Whether the broker's TLS listener lets this client certificate and login in (client id = username)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    client.tls_set_context(context)
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        outcome.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError):
        return False
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return outcome == [True]


def test_over_tls_a_node_needs_its_certificate_and_a_revoked_one_is_refused(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", tls=True, env_extra=MANAGED)
    try:
        hub.start()
        node_id, credential = enroll(hub)
        ca = CertificateAuthority.open(hub.data_dir, create=False)
        issued = ca.issue(node_id, CLIENT)
        with_certificate = client_context(ca.ca_pem, issued.cert_pem, issued.key_pem)
        assert mqtts_login(hub.mqtt_port, with_certificate, node_id, credential)
        assert not mqtts_login(hub.mqtt_port, client_context(ca.ca_pem), node_id, credential), "no client certificate"
        revoked = subprocess.run(
            [sys.executable, "-m", "hark_fleet.provision", "ca", "--data-dir", str(hub.data_dir), "revoke", node_id],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert revoked.returncode == 0, revoked.stderr
        fresh = lambda: client_context(ca.ca_pem, issued.cert_pem, issued.key_pem)  # noqa: E731 - a context per attempt
        wait_for(
            lambda: not mqtts_login(hub.mqtt_port, fresh(), node_id, credential),
            15,
            "the broker to refuse the revoked certificate",
            interval=0.5,
        )
    finally:
        assert hub.stop() == 0, hub.log()
