"""Lifecycle actions end to end: a real hub sends each action to a real node, which runs it and reports back."""

from __future__ import annotations

import json
import stat
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import LifecycleJob
from hark_fleet.node.privileged import PRIVILEGED_COMMANDS
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import hub_database
from tests.e2e.conftest import Fleet
from tests.harness import NodeProcess, wait_for

RECORDER = Path(__file__).with_name("privileged_recorder.py")
TERMINAL = ("succeeded", "failed", "expired")


def recorded_node(fleet: Fleet, tmp_path: Path, **env: str) -> tuple[NodeProcess, Path]:
    """A node whose privileged commands go to the recorder instead of the system."""
    log = tmp_path / f"privileged-{len(fleet.nodes)}.jsonl"
    node = fleet.enroll(HARK_NODE_PRIVILEGED_RUNNER=f"{sys.executable} {RECORDER}", HARK_TEST_PRIVILEGED_LOG=str(log), **env)
    return node, log


def request(fleet: Fleet, node: NodeProcess, action: str, **body: Any) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node.node_id}/lifecycle/{action}", json=body or None)
    assert response.status_code == 202, response.text
    return response.json()["data"]


def job(fleet: Fleet, node: NodeProcess, job_id: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node.node_id}/lifecycle-jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def finished(fleet: Fleet, node: NodeProcess, job_id: str, timeout: float = 30) -> dict[str, Any]:
    try:
        return wait_for(lambda: (j := job(fleet, node, job_id))["state"] in TERMINAL and j, timeout, f"job {job_id}", 0.2)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{job(fleet, node, job_id)}\n--- node log ---\n{node.log()[-3000:]}") from None


def recorded(log: Path) -> list[list[str]]:
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()] if log.exists() else []


def audit_actions(fleet: Fleet, node: NodeProcess) -> list[str]:
    with fleet.hub.admin() as admin:
        rows = admin.get("/api/v1/audit-events", params={"target_id": node.node_id, "limit": 200}).json()["data"]
    return [row["action"] for row in rows]


def test_each_action_runs_on_the_node_and_reports(fleet: Fleet, tmp_path: Path) -> None:
    node, log = recorded_node(fleet, tmp_path)
    node.start()
    fleet.wait_status(node, "online")
    pid = node.proc.pid if node.proc else None

    identify = finished(fleet, node, request(fleet, node, "identify")["id"])
    assert identify["state"] == "succeeded" and "IDENTIFY" in identify["output"], identify
    assert identify["started_at"] and identify["finished_at"] and identify["deliveries"] == 1

    audio = finished(fleet, node, request(fleet, node, "restart-audio")["id"])
    assert audio["state"] == "succeeded" and "audio restarted" in audio["output"], audio

    diagnostics = finished(fleet, node, request(fleet, node, "collect-diagnostics")["id"])
    assert diagnostics["state"] == "succeeded", diagnostics
    bundle = json.loads(diagnostics["output"])
    assert bundle["node"]["node_id"] == node.node_id and bundle["log"], bundle.keys()
    assert node.credential not in diagnostics["output"]
    saved = Path(bundle["saved_to"])
    assert saved.exists() and stat.S_IMODE(saved.stat().st_mode) == 0o600

    sync = finished(fleet, node, request(fleet, node, "sync-time")["id"])
    assert sync["state"] == "succeeded" and "clock offset to the hub" in sync["output"], sync
    reboot = finished(fleet, node, request(fleet, node, "reboot")["id"])
    assert reboot["state"] == "succeeded" and "reboot requested" in reboot["output"], reboot
    assert recorded(log) == [list(_chosen("sync-time")), ["systemctl", "reboot"]]

    restart = request(fleet, node, "restart-agent")
    restarted = finished(fleet, node, restart["id"])
    assert restarted["state"] == "succeeded" and "agent restarted (boot 2)" in restarted["output"], restarted
    assert node.proc is not None and node.proc.pid == pid and node.proc.poll() is None  # replaced in place
    fleet.wait_status(node, "online")
    assert node.log().count("restarting the agent in place") == 1

    actions = audit_actions(fleet, node)
    assert actions.count("node.lifecycle.request") == 6 and actions.count("node.lifecycle.succeeded") == 6, actions


def _chosen(action: str) -> tuple[str, ...]:
    from hark_fleet.node.privileged import choose_command

    command = choose_command(action)
    assert command in PRIVILEGED_COMMANDS[action]
    return command


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_an_unknown_action_is_400_and_changes_nothing(fleet: Fleet) -> None:
    node = fleet.enroll()
    with fleet.hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node.node_id}/lifecycle/format-disk")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and "restart-agent" in error["fields"]["action"]
        jobs = admin.get(f"/api/v1/nodes/{node.node_id}/lifecycle-jobs").json()["data"]
    assert jobs == []
    assert "node.lifecycle.request" not in audit_actions(fleet, node)


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_bad_timeouts_are_400(fleet: Fleet) -> None:
    node = fleet.enroll()
    with fleet.hub.admin() as admin:
        for body in ({"timeout_s": 0}, {"expires_in_s": 10**9}, {"timeout_s": "soon"}, {"nope": 1}):
            response = admin.post(f"/api/v1/nodes/{node.node_id}/lifecycle/identify", json=body)
            assert response.status_code == 400, (body, response.text)
        assert admin.get(f"/api/v1/nodes/{node.node_id}/lifecycle-jobs").json()["data"] == []
        assert admin.post("/api/v1/nodes/nod_missing/lifecycle/identify").status_code == 404


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_job_for_an_offline_node_runs_when_it_returns(fleet: Fleet, tmp_path: Path) -> None:
    node, _ = recorded_node(fleet, tmp_path)
    never_connected = request(fleet, node, "identify")
    assert never_connected["state"] == "queued"
    node.start()
    assert finished(fleet, node, never_connected["id"])["state"] == "succeeded"

    assert node.stop() == 0
    fleet.wait_status(node, "offline")
    waiting = request(fleet, node, "collect-diagnostics")
    assert waiting["state"] == "queued"
    node.start()
    done = finished(fleet, node, waiting["id"])
    assert done["state"] == "succeeded" and done["deliveries"] >= 1, done
    with fleet.hub.admin() as admin:
        listed = admin.get(f"/api/v1/nodes/{node.node_id}/lifecycle-jobs", params={"state": "succeeded"}).json()["data"]
    assert [j["id"] for j in listed] == [waiting["id"], never_connected["id"]]  # newest first


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_job_that_waits_too_long_expires_and_never_runs(fleet: Fleet, tmp_path: Path) -> None:
    node, log = recorded_node(fleet, tmp_path)
    stale = request(fleet, node, "reboot", expires_in_s=1)
    assert finished(fleet, node, stale["id"], timeout=15)["state"] == "expired"
    node.start()
    fleet.wait_status(node, "online")
    later = finished(fleet, node, request(fleet, node, "identify")["id"])
    assert later["state"] == "succeeded"
    assert job(fleet, node, stale["id"])["state"] == "expired"
    assert recorded(log) == []  # the reboot never ran
    assert "node.lifecycle.expired" in audit_actions(fleet, node)


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_command_that_overruns_its_timeout_is_killed_and_fails(fleet: Fleet, tmp_path: Path) -> None:
    node, log = recorded_node(fleet, tmp_path, HARK_TEST_PRIVILEGED_SLEEP="30")
    node.start()
    fleet.wait_status(node, "online")
    slow = finished(fleet, node, request(fleet, node, "sync-time", timeout_s=1)["id"])
    assert slow["state"] == "failed" and "1s" in (slow["error"] or ""), slow
    assert len(recorded(log)) == 1
    assert "node.lifecycle.failed" in audit_actions(fleet, node)


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_failing_command_reports_its_exit_code_and_output(fleet: Fleet, tmp_path: Path) -> None:
    node, _ = recorded_node(fleet, tmp_path, HARK_TEST_PRIVILEGED_EXIT="3")
    node.start()
    fleet.wait_status(node, "online")
    failed = finished(fleet, node, request(fleet, node, "reboot")["id"])
    assert failed["state"] == "failed" and failed["exit_code"] == 3, failed
    assert "would run: systemctl reboot" in failed["output"]


def report_as_node(fleet: Fleet, node: NodeProcess, job_id: str, state: str) -> None:
    """Publish a lifecycle report as the node would from its outbox (the test logs in with the node's credential)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node.node_id)
    client.username_pw_set(node.node_id, node.credential)
    client.connect("127.0.0.1", fleet.hub.mqtt_port)
    client.loop_start()
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"msg_id": f"{job_id}-{state}", "ts": ts, "job_id": job_id, "state": state, "exit_code": 0, "output": "done"}
    try:
        client.publish(f"hark/v1/nodes/{node.node_id}/lifecycle/{job_id}", json.dumps(body), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_result_the_node_replays_after_a_hub_restart_is_not_overtaken_by_the_timeout(fleet: Fleet) -> None:
    node = fleet.enroll()
    started = request(fleet, node, "identify", timeout_s=1)
    taken = request(fleet, node, "sync-time")
    report_as_node(fleet, node, started["id"], "running")
    wait_for(lambda: job(fleet, node, started["id"])["state"] == "running", 10, "the job running")
    assert fleet.hub.stop() == 0
    with hub_database(fleet.hub):  # the hub stayed away past the job's timeout and result grace, and the other's expiry
        LifecycleJob.update(started_at=utcnow() - timedelta(minutes=10)).where(LifecycleJob.id == started["id"]).execute()
        LifecycleJob.update(state="sent", sent_at=utcnow() - timedelta(minutes=10), expires_at=utcnow()).where(
            LifecycleJob.id == taken["id"]
        ).execute()
    fleet.hub.start()
    time.sleep(3)  # the node reconnects and replays its outbox a little after the hub's start
    report_as_node(fleet, node, started["id"], "succeeded")
    report_as_node(fleet, node, taken["id"], "running")  # it took the job before the deadline
    done = finished(fleet, node, started["id"], timeout=10)
    assert done["state"] == "succeeded" and done["output"] == "done", done
    wait_for(lambda: job(fleet, node, taken["id"])["state"] == "running", 10, "the other job running")
    assert "node.lifecycle.expired" not in audit_actions(fleet, node)
