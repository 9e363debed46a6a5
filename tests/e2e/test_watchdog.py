"""The signal-chain watchdog end to end: a hub, real `hark-node` processes with synthetic sources, policies set
through the API. A mic that loses 20 dB after calibration raises the noise-floor event, a flatline source raises
flatline, a restart-audio ladder runs and shows on the event's timeline until the hourly limit stops it, and a
policy change reaches a running node and applies without a restart."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import Fleet
from tests.harness import NodeProcess, wait_for

POLICIES = "/api/v1/settings/watchdog-policies"


def create_policy(fleet: Fleet, node: NodeProcess, detectors: dict[str, Any]) -> dict[str, Any]:
    body = {"name": f"wd-{uuid.uuid4().hex[:6]}", "detectors": detectors, "assignments": [{"node_id": node.node_id}]}
    with fleet.hub.admin() as admin:
        response = admin.post(POLICIES, json=body)
    assert response.status_code == 201, response.text
    policy: dict[str, Any] = response.json()["data"]
    return policy


def node_row(fleet: Fleet, policy_id: str, node: NodeProcess) -> dict[str, Any] | None:
    with fleet.hub.admin() as admin:
        nodes = admin.get(f"{POLICIES}/{policy_id}").json()["data"]["nodes"]
    return next((n for n in nodes if n["node_id"] == node.node_id), None)


def wait_applied(fleet: Fleet, policy_id: str, node: NodeProcess, version: int, timeout: float = 30) -> None:
    """Until the node says it runs `version` of the policy."""

    def applied() -> bool:
        row = node_row(fleet, policy_id, node)
        return row is not None and row["current"] and row["applied"]["version"] == version

    try:
        wait_for(applied, timeout, f"{node.node_id} running v{version} of {policy_id}", interval=0.3)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- node log ---\n{node.log()[-4000:]}") from None


def open_event(fleet: Fleet, node: NodeProcess, kind: str, timeout: float = 40) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        with fleet.hub.admin() as admin:
            events = admin.get("/api/v1/health-events", params={"node_id": node.node_id, "kind": kind}).json()["data"]
        return next((e for e in events if e["state"] != "resolved"), None)

    try:
        event: dict[str, Any] = wait_for(found, timeout, f"{kind} on {node.node_id}", interval=0.3)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- node log ---\n{node.log()[-4000:]}") from None
    return event


def kinds_of(fleet: Fleet, node: NodeProcess) -> set[str]:
    with fleet.hub.admin() as admin:
        events = admin.get("/api/v1/health-events", params={"node_id": node.node_id}).json()["data"]
    return {e["kind"] for e in events}


def test_a_mic_that_drops_20_db_after_calibration_raises_the_noise_floor_event(fleet: Fleet) -> None:
    # Noise at -30 dBFS RMS that falls 20 dB 45 s after the capture opens (a phantom-powered mic losing power):
    # time enough for the node to start, take its policy and be calibrated on a busy machine.
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:noise?dbfs=-30&channels=1&step_s=45&step_db=-20")
    node.start()
    fleet.wait_status(node, "online")
    detectors = {"noise_floor": {"shift_db": 10, "window_s": 2, "hold_s": 1}, "silence": {"enabled": False}}
    policy = create_policy(fleet, node, detectors)
    wait_applied(fleet, policy["id"], node, 1)
    with fleet.hub.admin() as admin:
        asked = admin.post(f"{POLICIES}/{policy['id']}/calibrate", json={"node_id": node.node_id, "duration_s": 3})
        assert asked.status_code == 202, asked.text
        url = f"{POLICIES}/{policy['id']}/calibrations/{asked.json()['data']['id']}"
        wait_for(lambda: admin.get(url).json()["data"]["state"] in ("completed", "failed"), 20, "the calibration", interval=0.3)
        calibration = admin.get(url).json()["data"]
    assert calibration["state"] == "completed", calibration
    floors = [c["noise_floor_dbfs"] for c in calibration["baseline"]["channels"].values()]
    assert floors and all(-34 < floor < -26 for floor in floors), floors  # about the source's -30 dBFS
    wait_applied(fleet, policy["id"], node, 2)  # the policy with the baseline reached the node
    assert "audio.noise_floor" not in kinds_of(fleet, node)  # nothing moved yet
    event = open_event(fleet, node, "audio.noise_floor", timeout=90)
    assert event["node_id"] == node.node_id


def test_a_flatline_source_raises_flatline(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:stuck?dbfs=-12&channels=2")
    node.start()
    fleet.wait_status(node, "online")
    event = open_event(fleet, node, "audio.flatline")
    assert event["severity"] == "critical"
    fleet.wait_status(node, "degraded")


def test_a_restart_audio_ladder_runs_shows_on_the_timeline_and_stops_at_the_hourly_limit(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:silence?channels=1")
    node.start()
    fleet.wait_status(node, "online")
    ladder = {
        "steps": [{"action": "restart-audio", "wait_s": 1}] * 3,
        "max_per_hour": 2,
        "max_per_day": 6,
        "cooldown_s": 0,
    }
    policy = create_policy(fleet, node, {"flatline": {"hold_s": 1, "remediation": ladder}, "silence": {"enabled": False}})
    wait_applied(fleet, policy["id"], node, 1)
    event = open_event(fleet, node, "audio.flatline")

    def remediation() -> list[dict[str, Any]]:
        with fleet.hub.admin() as admin:
            timeline = admin.get(f"/api/v1/health-events/{event['id']}").json()["data"]["timeline"]
        return [entry for entry in timeline if entry["type"] == "remediation"]

    try:
        wait_for(lambda: any(s["outcome"] == "skipped" for s in remediation()), 60, "a skipped third step", interval=0.5)
    except AssertionError as err:
        raise AssertionError(f"{err}: {remediation()}\n--- node log ---\n{node.log()[-4000:]}") from None
    steps = [(s["step"], s["action"], s["outcome"]) for s in remediation()]
    assert steps[:5] == [
        (0, "restart-audio", "started"),
        (0, "restart-audio", "succeeded"),
        (1, "restart-audio", "started"),
        (1, "restart-audio", "succeeded"),
        (2, "restart-audio", "skipped"),
    ], steps
    skipped = remediation()[4]
    assert "hour" in (skipped["reason"] or ""), skipped
    with fleet.hub.admin() as admin:
        timeline = admin.get(f"/api/v1/health-events/{event['id']}").json()["data"]["timeline"]
        audit = admin.get("/api/v1/audit-events", params={"action": "health.remediate", "target_id": event["id"]}).json()
    assert timeline[0]["type"] == "opened"
    assert len(audit["data"]) >= 5 and {e["actor"]["id"] for e in audit["data"]} == {node.node_id}


def test_a_policy_change_reaches_a_running_node_and_applies_without_a_restart(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:sine?freq=1000&dbfs=-20&channels=1")
    node.start()
    fleet.wait_status(node, "online")
    policy = create_policy(fleet, node, {"silence": {"threshold_dbfs": -60}})
    wait_applied(fleet, policy["id"], node, 1)
    pid = node.proc.pid if node.proc is not None else None
    with fleet.hub.admin() as admin:
        changed = admin.patch(f"{POLICIES}/{policy['id']}", json={"detectors": {"silence": {"threshold_dbfs": -10, "hold_s": 1}}})
        assert changed.status_code == 200 and changed.json()["data"]["version"] == 2
    wait_applied(fleet, policy["id"], node, 2)
    # The -20 dBFS sine is now "silent" under a -10 dBFS threshold: the new policy is what the node runs.
    open_event(fleet, node, "audio.silence")
    assert node.proc is not None and node.proc.pid == pid and node.proc.poll() is None
