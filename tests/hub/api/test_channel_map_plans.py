"""Channel-map plans: staged against a resolved target, diffed per node without applying, changed only while
staged (with a version), scoped to the caller's sites, audited; applied with each node's confirmation, the
refusing and silent nodes rolled back (the nodes here are MQTT clients speaking as the node would)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import HubProcess, wait_for
from tests.hub.api.sites import sites_exist

PLANS = "/api/v1/settings/channel-map-plans"
TEMPLATES = "/api/v1/settings/channel-map-templates"
ASSIGNMENTS = "/api/v1/settings/channel-map-assignments"
PASSWORD = "channel-map-plan-password"


_sites_exist = sites_exist("north", "south")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


STEREO = [
    {"input": 0, "name": "L", "calibration_db": 120.0, "role": "L"},
    {"input": 1, "name": "R", "calibration_db": 120.0, "role": "R"},
    {"input": 4, "name": "Ambient", "role": "mono"},
]


def create_template(hub: HubProcess, channels: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body = {
        "name": unique("tpl"),
        "channels": channels or STEREO,
        "programmes": [{"name": "main", "channels": ["L", "R"]}],
        **extra,
    }
    with hub.admin() as admin:
        response = admin.post(TEMPLATES, json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def enroll(hub: HubProcess, site: str | None = "north", tags: list[str] | None = None) -> tuple[str, str]:
    body: dict[str, Any] = {"name": unique("plan-node"), "tags": tags or []}
    if site is not None:
        body["site"] = site
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def assign(hub: HubProcess, node_id: str, template_id: str) -> None:
    with hub.admin() as admin:
        assert admin.put(f"{ASSIGNMENTS}/{node_id}", json={"template_id": template_id}).status_code == 200


def assigned(hub: HubProcess, node_id: str) -> str | None:
    with hub.admin() as admin:
        return admin.get(f"{ASSIGNMENTS}/{node_id}").json()["data"]["template_id"]


def stage(client: httpx.Client, template_id: str | None, **target: list[str]) -> httpx.Response:
    return client.post(PLANS, json={"name": unique("plan"), "template_id": template_id, "target": target, "timeout_s": 5})


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = unique("planu")
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
    if sites is not None:
        body["sites"] = sites
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id, "limit": 200}).json()["data"]
    return [e["action"] for e in reversed(events)]


def test_staging_resolves_the_target_to_nodes_with_their_template_before_and_after(hub: HubProcess) -> None:
    tag = unique("stage")
    old, new = create_template(hub), create_template(hub)
    running, bare = enroll(hub, tags=[tag]), enroll(hub, tags=[tag])
    untagged, _ = enroll(hub)
    assign(hub, running[0], old["id"])
    with hub.admin() as admin:
        response = stage(admin, new["id"], sites=["north"], tags=[tag])
        assert response.status_code == 201, response.text
        plan = response.json()["data"]
        assert plan["state"] == "staged" and plan["version"] == 1 and plan["site"] == "north"
        assert plan["template_name"] == new["name"] and plan["timeout_s"] == 5
        rows = {n["node_id"]: n for n in plan["nodes"]}
        assert set(rows) == {running[0], bare[0]}  # the untagged node is not reached
        assert untagged not in rows
        assert rows[running[0]]["before_template_id"] == old["id"] and rows[bare[0]]["before_template_id"] is None
        assert {n["after_template_id"] for n in plan["nodes"]} == {new["id"]}
        assert {n["state"] for n in plan["nodes"]} == {"pending"}
        assert plan["counts"] == {**plan["counts"], "pending": 2, "total": 2}
        assert plan["actions"]["apply"]["allowed"] and not plan["actions"]["rollback"]["allowed"]
        listed = admin.get(PLANS, params={"state": "staged", "template_id": new["id"]}).json()["data"]
        assert [p["id"] for p in listed] == [plan["id"]]
        assert admin.get(PLANS, params={"q": plan["name"][-6:]}).json()["data"][0]["id"] == plan["id"]
        facets = admin.get(f"{PLANS}/facets", params={"template_id": new["id"]}).json()["data"]
        assert facets["state"] == [{"value": "staged", "count": 1}]
        exported = admin.get(f"{PLANS}/export", params={"format": "ndjson", "template_id": new["id"]})
        assert [json.loads(line)["id"] for line in exported.text.splitlines()] == [plan["id"]]
        assert admin.get(f"{PLANS}/{plan['id']}/actions").json()["data"] == plan["actions"]
    assert assigned(hub, bare[0]) is None  # staging applies nothing
    assert audit_actions(hub, plan["id"]) == ["channel_map_plan.stage"]


def test_the_diff_names_inputs_names_and_programmes_per_node_and_marks_nodes_where_nothing_changes(hub: HubProcess) -> None:
    old = create_template(hub)
    renamed = [
        {"input": 0, "name": "Left", "calibration_db": 120.0, "role": "L"},
        {"input": 1, "name": "R", "calibration_db": 110.0, "role": "R"},
        {"input": 2, "name": "Room", "role": "mono"},
    ]
    new = create_template(
        hub, renamed, programmes=[{"name": "main", "channels": ["Left", "R"]}, {"name": "room", "channels": ["Room"]}]
    )
    changing, _ = enroll(hub)
    same, _ = enroll(hub)
    assign(hub, changing, old["id"])
    assign(hub, same, new["id"])
    with hub.admin() as admin:
        plan = stage(admin, new["id"], node_ids=[changing, same]).json()["data"]
        diff = admin.get(f"{PLANS}/{plan['id']}/diff")
    assert diff.status_code == 200, diff.text
    data = diff.json()["data"]
    assert data["summary"] == {"nodes": 2, "changing": 1}
    nodes = {n["node_id"]: n for n in data["nodes"]}
    one = nodes[changing]
    assert one["changes"] is True and one["current"]["template_id"] == old["id"] and one["planned"]["name"] == new["name"]
    assert one["current"]["version"] == old["version"] and len(one["current"]["channels"]) == 3
    assert one["inputs"] == {"added": [2], "removed": [4]}
    assert one["names"] == [{"input": 0, "before": "L", "after": "Left"}]
    assert one["settings"] == [{"input": 1, "field": "calibration_db", "before": 120.0, "after": 110.0}]
    assert one["programmes"] == {
        "added": ["room"],
        "removed": [],
        "changed": [{"name": "main", "before": ["L", "R"], "after": ["Left", "R"]}],
    }
    assert nodes[same]["changes"] is False and nodes[same]["same_channels"] is True
    assert assigned(hub, changing) == old["id"]  # the diff applied nothing


def test_invalid_plans_name_every_problem(hub: HubProcess) -> None:
    with hub.admin() as admin:
        bad = admin.post(PLANS, json={"name": " x", "template_id": "cmt_nope", "target": {}, "timeout_s": 1})
        unknown = stage(admin, None, node_ids=["nod_nope"])
        extra = admin.post(PLANS, json={"name": "x", "target": {"sites": [], "colour": ["red"]}})
        nothing = stage(admin, None, tags=[unique("nobody")])
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"name", "template_id", "target", "timeout_s"}
    assert unknown.status_code == 400 and "nod_nope" in unknown.json()["error"]["fields"]["target.node_ids"]
    assert extra.status_code == 400
    assert nothing.status_code == 400 and nothing.json()["error"]["fields"]["target"] == "reaches no node in your sites"


def test_a_staged_plan_changes_with_its_current_version_and_only_while_staged(hub: HubProcess) -> None:
    template = create_template(hub)
    first, _ = enroll(hub)
    second, _ = enroll(hub, site="south")
    with hub.admin() as admin:
        plan = stage(admin, template["id"], node_ids=[first]).json()["data"]
        url = f"{PLANS}/{plan['id']}"
        changed = admin.patch(url, json={"timeout_s": 60, "target": {"node_ids": [first, second]}, "version": 1})
        assert changed.status_code == 200, changed.text
        after = changed.json()["data"]
        assert after["version"] == 2 and after["timeout_s"] == 60 and after["site"] is None  # north and south
        assert {n["node_id"] for n in after["nodes"]} == {first, second}
        stale = admin.patch(url, json={"name": "late", "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        assert admin.patch(url, json={"timeout_s": 4}).status_code == 400
        cancelled = admin.post(f"{url}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["data"]["state"] == "cancelled"
        assert admin.patch(url, json={"name": "too late"}).status_code == 409
        assert admin.post(f"{url}/apply").status_code == 409
        assert admin.delete(url).status_code == 204
        assert admin.get(url).status_code == 404
    assert audit_actions(hub, plan["id"]) == [
        "channel_map_plan.stage",
        "channel_map_plan.update",
        "channel_map_plan.cancel",
        "channel_map_plan.delete",
    ]


def test_a_site_admins_plan_reaches_only_its_sites_and_other_sites_plans_are_not_found(hub: HubProcess) -> None:
    tag = unique("scope")
    template = create_template(hub)
    north, _ = enroll(hub, "north", [tag])
    south, _ = enroll(hub, "south", [tag])
    token = user_token(hub, ["admin"], ["north"])
    with hub.client(token) as site_admin:
        mine = stage(site_admin, template["id"], tags=[tag])
        assert mine.status_code == 201, mine.text
        assert [n["node_id"] for n in mine.json()["data"]["nodes"]] == [north]
        outside = stage(site_admin, template["id"], node_ids=[north, south])
        assert outside.status_code == 400 and south in outside.json()["error"]["fields"]["target.node_ids"]
        other_site = stage(site_admin, template["id"], sites=["south"])
        assert other_site.status_code == 400 and "south" in other_site.json()["error"]["fields"]["target.sites"]
    with hub.admin() as admin:
        theirs = stage(admin, template["id"], node_ids=[south]).json()["data"]
        both = stage(admin, template["id"], node_ids=[north, south]).json()["data"]
    with hub.client(token) as site_admin:
        for plan in (theirs, both):
            assert site_admin.get(f"{PLANS}/{plan['id']}").status_code == 404
            assert site_admin.post(f"{PLANS}/{plan['id']}/apply").status_code == 404
            assert site_admin.get(f"{PLANS}/{plan['id']}/diff").status_code == 404
        listed = {p["id"] for p in site_admin.get(PLANS, params={"limit": 200}).json()["data"]}
        assert mine.json()["data"]["id"] in listed and not listed & {theirs["id"], both["id"]}
    with hub.client(user_token(hub, ["viewer"])) as viewer:
        assert viewer.get(f"{PLANS}/{theirs['id']}").status_code == 200
        refused = stage(viewer, template["id"], node_ids=[south])
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["settings:manage"]


@contextmanager
def as_node(hub: HubProcess, node_id: str, credential: str) -> Iterator[tuple[mqtt.Client, list[str]]]:
    """An MQTT client logged in as the node: it hears `cmd/config` and can publish what the node would."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    client.username_pw_set(node_id, credential)
    heard: list[str] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: heard.append(m.topic.rsplit("/", 1)[-1])
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"hark/v1/nodes/{node_id}/cmd/config", qos=1)
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    try:
        assert subscribed.wait(5), "no subscription on the hub's broker"
        yield client, heard
    finally:
        client.disconnect()
        client.loop_stop()


def report_applied(client: mqtt.Client, node_id: str, template_id: str | None, ok: bool = True, error: str | None = None) -> None:
    message = {
        "msg_id": unique("applied"),
        "ts": "2026-12-06T09:00:00Z",
        "what": "channel_map",
        "ok": ok,
        "id": template_id,
        "version": 1,
        "error": error,
    }
    client.publish(f"hark/v1/nodes/{node_id}/applied", json.dumps(message), qos=1).wait_for_publish(5)


def plan_state(hub: HubProcess, plan_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        return admin.get(f"{PLANS}/{plan_id}").json()["data"]


def test_apply_waits_for_each_node_and_rolls_back_the_refusing_and_the_silent_then_the_whole_plan(hub: HubProcess) -> None:
    old, new = create_template(hub), create_template(hub)
    nodes = [enroll(hub) for _ in range(3)]
    confirming, refusing, silent = (n for n, _ in nodes)
    for node_id in (confirming, refusing, silent):
        assign(hub, node_id, old["id"])
    with hub.admin() as admin:
        plan = stage(admin, new["id"], node_ids=[confirming, refusing, silent]).json()["data"]
    with as_node(hub, *nodes[0]) as (first, heard_first), as_node(hub, *nodes[1]) as (second, _):
        with hub.admin() as admin:
            stale = admin.post(f"{PLANS}/{plan['id']}/apply", json={"version": 7})
            assert stale.status_code == 409
            applied = admin.post(f"{PLANS}/{plan['id']}/apply", json={"version": plan["version"]})
        assert applied.status_code == 202, applied.text
        started = applied.json()["data"]
        assert started["state"] == "applying" and {n["state"] for n in started["nodes"]} == {"sent"}
        assert all(n["deadline"] is not None for n in started["nodes"])
        wait_for(lambda: "config" in heard_first, 5, "cmd/config to the node")
        assert assigned(hub, silent) == new["id"]
        report_applied(first, confirming, old["id"])  # an earlier map: not the plan's
        report_applied(first, confirming, new["id"])
        report_applied(second, refusing, new["id"], ok=False, error="input 4 is not on this device")
        done = wait_for(
            lambda: (p := plan_state(hub, plan["id"]))["state"] == "partially_applied" and p, 20, "the plan to finish"
        )
    rows = {n["node_id"]: n for n in done["nodes"]}
    assert rows[confirming]["state"] == "confirmed" and rows[confirming]["rolled_back_at"] is None
    assert rows[refusing]["state"] == "failed" and "input 4 is not on this device" in rows[refusing]["error"]
    assert rows[silent]["state"] == "timed_out" and rows[silent]["error"] == "did not confirm within 5 s"
    assert rows[refusing]["rolled_back_at"] and rows[silent]["rolled_back_at"]
    assert [assigned(hub, n) for n in (confirming, refusing, silent)] == [new["id"], old["id"], old["id"]]
    assert done["counts"] == {**done["counts"], "confirmed": 1, "failed": 1, "timed_out": 1}
    assert "channel_map_plan.node_confirmed" in audit_actions(hub, confirming)
    assert {"channel_map_plan.node_failed", "channel_map_plan.node_rolled_back"} <= set(audit_actions(hub, refusing))
    assert {"channel_map_plan.node_timed_out", "channel_map_plan.node_rolled_back"} <= set(audit_actions(hub, silent))

    with as_node(hub, *nodes[0]) as (first, _):
        with hub.admin() as admin:
            rolled = admin.post(f"{PLANS}/{plan['id']}/rollback")
            assert admin.delete(f"{PLANS}/{plan['id']}").status_code == 409  # while rolling back
        assert rolled.status_code == 202, rolled.text
        assert rolled.json()["data"]["state"] == "rolling_back"
        assert assigned(hub, confirming) == old["id"]
        report_applied(first, confirming, old["id"])
        wait_for(lambda: plan_state(hub, plan["id"])["state"] == "rolled_back", 20, "the rollback to finish")
    final = {n["node_id"]: n for n in plan_state(hub, plan["id"])["nodes"]}
    assert final[confirming]["state"] == "rolled_back" and final[confirming]["rollback_confirmed_at"]
    assert audit_actions(hub, plan["id"]) == ["channel_map_plan.stage", "channel_map_plan.apply", "channel_map_plan.rollback"]


def test_a_node_already_running_the_template_is_confirmed_at_once(hub: HubProcess) -> None:
    template = create_template(hub)
    node_id, _ = enroll(hub)
    assign(hub, node_id, template["id"])
    with hub.admin() as admin:
        plan = stage(admin, template["id"], node_ids=[node_id]).json()["data"]
        applied = admin.post(f"{PLANS}/{plan['id']}/apply")
    assert applied.status_code == 202
    data = applied.json()["data"]
    assert data["state"] == "applied" and data["nodes"][0]["state"] == "confirmed" and data["nodes"][0]["changes"] is False


def test_a_refusing_node_is_rolled_back_even_when_no_node_is_left_to_wait_for(hub: HubProcess) -> None:
    old, new = create_template(hub), create_template(hub)
    confirming, refusing = enroll(hub), enroll(hub)
    for node_id, _ in (confirming, refusing):
        assign(hub, node_id, old["id"])
    with hub.admin() as admin:
        plan = stage(admin, new["id"], node_ids=[confirming[0], refusing[0]]).json()["data"]
    with as_node(hub, *confirming) as (first, _), as_node(hub, *refusing) as (second, _):
        with hub.admin() as admin:
            assert admin.post(f"{PLANS}/{plan['id']}/apply").status_code == 202
        report_applied(second, refusing[0], new["id"], ok=False, error="no such input")
        report_applied(first, confirming[0], new["id"])
        done = wait_for(
            lambda: (p := plan_state(hub, plan["id"]))["state"] == "partially_applied" and p, 20, "the plan to finish"
        )
    rows = {n["node_id"]: n for n in done["nodes"]}
    assert rows[refusing[0]]["state"] == "failed" and rows[refusing[0]]["rolled_back_at"]
    assert [assigned(hub, n) for n in (confirming[0], refusing[0])] == [new["id"], old["id"]]
