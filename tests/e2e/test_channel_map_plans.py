"""Channel-map plans with real processes: two running `hark-node`s apply a plan's map and confirm it, a third
node (enrolled, never started) does not and is rolled back and reported; rolling the plan back reaches the
running nodes too, and they confirm their earlier map."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import Fleet
from tests.harness import wait_for

PLANS = "/api/v1/settings/channel-map-plans"
ASSIGNMENTS = "/api/v1/settings/channel-map-assignments"


def template(fleet: Fleet, left: str, right: str) -> dict[str, Any]:
    body = {
        "name": f"plan-{uuid.uuid4().hex[:6]}",
        "channels": [{"input": 0, "name": left, "role": "L"}, {"input": 1, "name": right, "role": "R"}],
        "programmes": [{"name": "main", "channels": [left, right]}],
    }
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/settings/channel-map-templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def plan(fleet: Fleet, plan_id: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        return admin.get(f"{PLANS}/{plan_id}").json()["data"]


def wait_plan(fleet: Fleet, plan_id: str, state: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        current = plan(fleet, plan_id)
        return current if current["state"] == state else None

    try:
        found: dict[str, Any] = wait_for(reached, 40, f"plan {plan_id} {state}", interval=0.2)
    except AssertionError as err:
        logs = "\n".join(f"--- {n.node_id} ---\n{n.log()[-2000:]}" for n in fleet.nodes if n.proc is not None)
        raise AssertionError(f"{err}: {plan(fleet, plan_id)}\n{logs}\n--- hub ---\n{fleet.hub.log()[-3000:]}") from None
    return found


def test_a_plan_applies_to_two_running_nodes_and_rolls_back_the_one_that_never_confirms(fleet: Fleet) -> None:
    before, after = template(fleet, "L", "R"), template(fleet, "Left", "Right")
    running = [fleet.enroll(), fleet.enroll()]
    absent = fleet.enroll()  # enrolled, never started: it cannot confirm
    with fleet.hub.admin() as admin:
        for node in [*running, absent]:
            assert admin.put(f"{ASSIGNMENTS}/{node.node_id}", json={"template_id": before["id"]}).status_code == 200
    for node in running:
        node.start()
    for node in running:
        fleet.wait_status(node, "online")
    node_ids = [n.node_id for n in [*running, absent]]
    with fleet.hub.admin() as admin:
        staged = admin.post(
            PLANS, json={"name": "rename stereo", "template_id": after["id"], "target": {"node_ids": node_ids}, "timeout_s": 5}
        )
        assert staged.status_code == 201, staged.text
        plan_id = staged.json()["data"]["id"]
        diff = admin.get(f"{PLANS}/{plan_id}/diff").json()["data"]
        assert diff["summary"] == {"nodes": 3, "changing": 3}
        assert diff["nodes"][0]["names"] == [
            {"input": 0, "before": "L", "after": "Left"},
            {"input": 1, "before": "R", "after": "Right"},
        ]
        applied = admin.post(f"{PLANS}/{plan_id}/apply")
    assert applied.status_code == 202, applied.text

    done = wait_plan(fleet, plan_id, "partially_applied")
    rows = {n["node_id"]: n for n in done["nodes"]}
    for node in running:
        assert rows[node.node_id]["state"] == "confirmed", rows[node.node_id]
        assert rows[node.node_id]["rolled_back_at"] is None
    missing = rows[absent.node_id]
    assert missing["state"] == "timed_out" and missing["error"] == "did not confirm within 5 s"
    assert missing["rolled_back_at"] is not None
    with fleet.hub.admin() as admin:
        now = {n: admin.get(f"{ASSIGNMENTS}/{n}").json()["data"]["template_id"] for n in node_ids}
        timed_out = admin.get("/api/v1/audit-events", params={"target_id": absent.node_id}).json()["data"]
    assert now == {running[0].node_id: after["id"], running[1].node_id: after["id"], absent.node_id: before["id"]}
    assert {"channel_map_plan.node_timed_out", "channel_map_plan.node_rolled_back"} <= {e["action"] for e in timed_out}
    for node in running:  # and their heartbeats say which map they run
        wait_for(
            lambda node=node: (
                (fleet.detail(node)["metrics"].get("applied") or {}).get("channel_map")
                == {"id": after["id"], "version": after["version"]}
            ),
            20,
            f"{node.node_id}'s heartbeat to name the plan's map",
            interval=0.2,
        )

    with fleet.hub.admin() as admin:
        rolled = admin.post(f"{PLANS}/{plan_id}/rollback")
    assert rolled.status_code == 202, rolled.text
    final = wait_plan(fleet, plan_id, "rolled_back")
    rows = {n["node_id"]: n for n in final["nodes"]}
    for node in running:  # each running node applied its earlier map again and said so
        assert rows[node.node_id]["state"] == "rolled_back" and rows[node.node_id]["rollback_confirmed_at"] is not None
    assert rows[absent.node_id]["rollback_confirmed_at"] is None  # it never ran anything: reported, not confirmed
