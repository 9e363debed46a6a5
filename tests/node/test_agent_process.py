"""A real `hark-node` process against a real Mosquitto, a fake hub on MQTT and a stub config route."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.processes import free_port
from hark_fleet.node.state import NodeState, credential_digest, save_state

from tests.harness import Mosquitto, spawn, terminate, wait_for
from tests.node.fakes import ConfigStub, FakeHub, authenticated_mosquitto, reload, retained, write_password_file

pytestmark = pytest.mark.slow


@dataclass
class NodeProcess:
    """`hark-node` with its own data directory, configured like an installer would."""

    workdir: Path
    node_id: str
    credential: str
    hub_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "node.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(self.data_dir),
            HARK_HUB_URL=self.hub_url,
            HARK_NODE_ID=self.node_id,
            HARK_NODE_CREDENTIAL=self.credential,
            HARK_HEARTBEAT_INTERVAL_S="1",
            HARK_LOG_LEVEL="DEBUG",
        )
        env.update(self.env_extra)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([sys.executable, "-m", "hark_fleet.node"], env=env, log_path=self.log_path)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            terminate(self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def outbox_depth(self) -> int:
        db = sqlite3.connect(f"file:{self.data_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            db.close()

    def state(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "state.json").read_text())

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"hark-node exited with {self.proc.returncode}:\n{self.log()}")
        return True


def test_online_heartbeats_acks_and_a_clean_stop(tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    node_id, credential = "e2e-main", "cred-e2e-main-0123456789"
    status_topic = f"hark/v1/nodes/{node_id}/status"
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        node = NodeProcess(tmp_path, node_id, credential, stub.url)
        node.start()
        try:
            online = hub.wait_status("online", timeout=20)
            node.alive()
            beats = hub.wait_documents("heartbeat", 3)
            assert [b["seq"] for b in beats] == list(range(1, len(beats) + 1))
            assert len({b["msg_id"] for b in beats}) == len(beats)
            assert [b["outbox"]["depth"] for b in beats[:3]] == [0, 1, 2]  # nothing acked yet
            assert {r.qos for r in hub.received("heartbeat")} == {1}
            first = beats[0]
            assert first["agent_version"] == online["agent_version"]
            assert first["clock"]["offset_ms"] is not None and first["clock"]["quality"] in ("ntp", "unsynced")
            assert first["interfaces"][0]["id"] == "synthetic" and first["interfaces"][0]["channels"] == 2
            # meters: QoS 0, about ten a second
            frames = hub.wait_documents("meters", 10)
            assert {r.qos for r in hub.received("meters")} == {0}
            left = frames[0]["channels"][0]
            assert (left["index"], left["name"], left["peak_dbfs"], left["rms_dbfs"], left["clip"]) == (0, "L", -20.0, -23.01, 0)
            assert abs(left["true_peak_dbtp"] + 20.0) < 0.2 and frames[0]["loudness"]["momentary_lufs"] is not None
            # the hub acks: the outbox shrinks
            assert node.outbox_depth() >= 3
            hub.auto_ack = True
            hub.ack([b["msg_id"] for b in hub.documents("heartbeat")])
            wait_for(lambda: node.outbox_depth() <= 1, 10, "acks to shrink the outbox")
            acked_seen = len(hub.documents("heartbeat"))
            later = hub.wait_documents("heartbeat", acked_seen + 2)[acked_seen:]
            assert max(b["outbox"]["depth"] for b in later) <= 1
            # malformed and unknown commands are ignored, never fatal
            hub.send("ack", b"garbage")
            hub.send("credentials", b"{}")
            hub.send("self-destruct", b"{}")
            count = len(hub.documents("heartbeat"))
            hub.wait_documents("heartbeat", count + 2)
            node.alive()
            # cmd/config fetches the config again
            fetched = len(stub.requests)
            hub.send("config", {"changed": ["name"]})
            wait_for(lambda: len(stub.requests) > fetched, 10, "the config to be fetched again")
        finally:
            code = node.stop()
        log = node.log()
        assert code == 0, log
        offline = hub.wait_status("offline")
        assert offline["boot_id"] == online["boot_id"]
    probe = retained(mosquitto.host, mosquitto.port, status_topic)
    assert probe is not None and probe["state"] == "offline" and probe["boot_id"] == online["boot_id"]
    assert stub.requests[0] == (f"/api/v1/nodes/{node_id}/config", f"Bearer {credential}")
    assert str(node.data_dir.resolve()) in log and stub.url in log and mosquitto.url in log
    assert "ignored malformed command: cmd/ack" in log and "ignored malformed command: cmd/credentials" in log
    assert credential not in log


def test_kill_9_leaves_the_last_will(tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    node_id, credential = "e2e-will", "cred-e2e-will-0123456789"
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        node = NodeProcess(tmp_path, node_id, credential, stub.url)
        node.start()
        try:
            online = hub.wait_status("online", timeout=20)
            hub.wait_documents("heartbeat", 1)
        finally:
            node.kill()
        offline = hub.wait_status("offline", timeout=10)
        assert offline["boot_id"] == online["boot_id"]
    probe = retained(mosquitto.host, mosquitto.port, f"hark/v1/nodes/{node_id}/status")
    assert probe is not None and probe["state"] == "offline"


def test_an_unreachable_hub_does_not_keep_a_known_broker_waiting(
    tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None
) -> None:
    node_id, credential = "e2e-cached", "cred-e2e-cached-0123456789"
    node = NodeProcess(tmp_path, node_id, credential, f"http://127.0.0.1:{free_port()}")
    state = NodeState(node_id, credential, credential_digest(credential), node.hub_url, mosquitto.url, boot_count=4)
    save_state(node.data_dir / "state.json", state)
    with FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        node.start()
        try:
            hub.wait_status("online", timeout=20)
            beats = hub.wait_documents("heartbeat", 2)
            assert beats[0]["clock"]["offset_ms"] is None  # never measured: the hub is away
            wait_for(lambda: "cannot get the config from the hub" in node.log(), 10, "the retry to be logged")
        finally:
            code = node.stop()
    assert code == 0, node.log()
    assert node.state()["boot_count"] == 5


def test_credential_rotation_reconnects_and_survives_a_restart(tmp_path: Path, no_thread_leak: None) -> None:
    node_id, old, new = "e2e-rotate", "cred-old-0123456789", "cred-new-9876543210"
    broker = authenticated_mosquitto(tmp_path / "broker", {"hub": "hub-pass", node_id: old})
    broker.start()
    try:
        with (
            ConfigStub(node_id, broker.url, {old, new}) as stub,
            FakeHub(broker.host, broker.port, node_id, "hub", "hub-pass") as hub,
        ):
            node = NodeProcess(tmp_path / "node", node_id, old, stub.url)
            node.start()
            try:
                hub.wait_status("online", timeout=20)
                hub.send("credentials", {"credential": new, "valid_until_old": None, "replaces_sha256": credential_digest(old)})
                wait_for(lambda: node.state()["credential"] == new, 5, "the state file to hold the new credential")
                # the hub retires the old credential at the broker, which drops clients still using it
                write_password_file(broker.workdir / "passwords", {"hub": "hub-pass", node_id: new})
                reload(broker)
                hub.wait_status("online", after=1, timeout=15)  # back with the new password
                count = len(hub.documents("heartbeat"))
                hub.wait_documents("heartbeat", count + 2)
                assert [d["state"] for d in hub.documents("status")] == ["online", "online"]  # no will: clean reconnects
                fetched = len(stub.requests)
                hub.send("config", {})
                wait_for(lambda: len(stub.requests) > fetched, 10, "the config to be fetched again")
                assert stub.requests[-1][1] == f"Bearer {new}"
            finally:
                code = node.stop()
            assert code == 0, node.log()
            # the same environment (the old seed) starts it again: the newer credential in the state file wins
            statuses = len(hub.documents("status"))
            first_run = len(node.log())
            node.start()
            try:
                hub.wait_status("online", after=statuses, timeout=20)
            finally:
                code = node.stop()
            assert code == 0, node.log()
        log = node.log()
        assert "credential rotated" in log
        assert old not in log and new not in log
        assert "refused" not in log[first_run:]
    finally:
        broker.stop()


def test_a_filling_outbox_reports_high_then_resolved(tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None) -> None:
    node_id, credential = "e2e-outbox", "cred-e2e-outbox-0123456789"
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        node = NodeProcess(
            tmp_path, node_id, credential, stub.url, {"HARK_OUTBOX_CAPACITY": "10", "HARK_HEARTBEAT_INTERVAL_S": "0.2"}
        )
        node.start()
        try:
            reports = hub.wait_documents("health", 1, timeout=20)  # the hub acks nothing: past 8 of 10 rows
            assert (reports[0]["kind"], reports[0]["state"], reports[0]["details"]) == (
                "outbox.high",
                "open",
                {"depth": 9, "capacity": 10},
            )
            beats = hub.wait_documents("heartbeat", 14)
            assert max(b["outbox"]["depth"] for b in beats) == 10  # bounded: the oldest heartbeats made room
            hub.auto_ack = True
            hub.ack([b["msg_id"] for b in beats] + [reports[0]["msg_id"]])
            resolved = hub.wait_documents("health", 2)[1]
            assert (resolved["kind"], resolved["state"]) == ("outbox.high", "resolved")
            assert resolved["details"]["depth"] < 5
        finally:
            code = node.stop()
    assert code == 0, node.log()
    log = node.log()
    assert "outbox high: 9 of 10 rows" in log and "outbox back to normal" in log
