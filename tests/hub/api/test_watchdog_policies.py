"""Watchdog policies: the built-in default, create/read/update/delete with field-level 400s and versions,
resolution (node+channel > node > site > default) as delivered in a node's config, site scope, audit,
calibration through a node's MQTT session, and remediation steps on a health event's timeline."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.harness import HubProcess, wait_for
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_fleet import close, mqtt_client

POLICIES = "/api/v1/settings/watchdog-policies"
PASSWORD = "watchdog-test-password"


_sites_exist = sites_exist("north", "south")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enroll(hub: HubProcess, site: str = "north") -> tuple[str, str]:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": unique("wd"), "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def create(hub: HubProcess, **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(POLICIES, json={"name": unique("policy"), **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def delete(hub: HubProcess, policy_id: str) -> None:
    with hub.admin() as admin:
        assert admin.delete(f"{POLICIES}/{policy_id}").status_code == 204


def node_watchdog(hub: HubProcess, node_id: str, credential: str) -> dict[str, Any]:
    with hub.client(credential) as client:
        response = client.get(f"/api/v1/nodes/{node_id}/config")
    assert response.status_code == 200, response.text
    watchdog: dict[str, Any] = response.json()["data"]["watchdog"]
    return watchdog


def audit(hub: HubProcess, **params: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        events: list[dict[str, Any]] = admin.get("/api/v1/audit-events", params={**params, "limit": 200}).json()["data"]
    return list(reversed(events))


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None) -> str:
    username = unique("wduser")
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": roles, "sites": sites}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


class NodeSession:
    """A node's own MQTT session on the hub's broker: it hears its `cmd/` topics and publishes under its prefix."""

    def __init__(self, hub: HubProcess, node_id: str, credential: str) -> None:
        self.node_id = node_id
        self.prefix = f"hark/v1/nodes/{node_id}"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client, outcome = mqtt_client(hub, node_id, credential)
        assert outcome == [True]
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe(f"{self.prefix}/cmd/#", qos=1)
        assert subscribed.wait(5)
        self.publish("status", {"state": "online", "ts": now_iso(), "agent_version": "test"}, retain=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic.removeprefix(self.prefix + "/"), json.loads(message.payload)))

    def commands(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for topic, payload in self.received if topic == f"cmd/{kind}"]

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        self.client.publish(f"{self.prefix}/{topic}", json.dumps(payload), qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        close(self.client)


# -- the built-in default and CRUD ---------------------------------------------------------------


def test_the_built_in_default_has_the_protocol_defaults_and_cannot_be_renamed_assigned_or_deleted(hub: HubProcess) -> None:
    with hub.admin() as admin:
        default = admin.get(f"{POLICIES}/default").json()["data"]
        assert default["builtin"] and default["name"] == "default" and default["assignments"] == []
        assert default["detectors"]["silence"]["threshold_dbfs"] == -60.0
        assert default["detectors"]["flatline"]["severity"] == "critical"
        assert default["actions"]["delete"] == {"allowed": False, "reason": "the built-in policy cannot be deleted"}
        assert admin.get(POLICIES, params={"builtin": "true"}).json()["data"][0]["id"] == "default"
        assert admin.delete(f"{POLICIES}/default").status_code == 409
        renamed = admin.patch(f"{POLICIES}/default", json={"name": "mine"})
        assert renamed.status_code == 400 and set(renamed.json()["error"]["fields"]) == {"name"}
        assigned = admin.patch(f"{POLICIES}/default", json={"assignments": [{"site": "north"}]})
        assert assigned.status_code == 400 and set(assigned.json()["error"]["fields"]) == {"assignments"}
        assert admin.post(POLICIES, json={"name": "default"}).status_code == 409


def test_a_policy_is_created_read_changed_with_a_version_and_deleted_all_audited(hub: HubProcess) -> None:
    ladder = {"steps": [{"action": "restart-audio", "wait_s": 30}, {"action": "restart-agent"}], "max_per_hour": 2}
    policy = create(
        hub,
        description="stage mics",
        detectors={"noise_floor": {"shift_db": 15}, "flatline": {"remediation": ladder}},
    )
    assert policy["version"] == 1
    assert policy["detectors"]["noise_floor"]["shift_db"] == 15.0
    assert policy["detectors"]["noise_floor"]["window_s"] == 10.0  # a field left out takes its default
    assert policy["detectors"]["flatline"]["remediation"]["steps"][1] == {"action": "restart-agent", "wait_s": 60.0}
    with hub.admin() as admin:
        changed = admin.patch(f"{POLICIES}/{policy['id']}", json={"detectors": {"noise_floor": {"hold_s": 3}}, "version": 1})
        assert changed.status_code == 200, changed.text
        after = changed.json()["data"]
        assert after["version"] == 2
        assert after["detectors"]["noise_floor"] | {} == {**policy["detectors"]["noise_floor"], "hold_s": 3.0}  # merged
        stale = admin.patch(f"{POLICIES}/{policy['id']}", json={"description": "x", "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        same = admin.patch(f"{POLICIES}/{policy['id']}", json={"description": "stage mics"})
        assert same.json()["data"]["version"] == 2  # nothing changed: no new version
        listed = admin.get(POLICIES, params={"q": policy["name"]}).json()["data"]
        assert [p["id"] for p in listed] == [policy["id"]]
        assert admin.get(f"{POLICIES}/{policy['id']}/actions").json()["data"]["delete"]["allowed"] is True
        exported = admin.get(f"{POLICIES}/export", params={"format": "ndjson", "q": policy["name"]}).text
        assert json.loads(exported.splitlines()[0])["id"] == policy["id"]
        facets = admin.get(f"{POLICIES}/facets").json()["data"]
        assert {f["value"] for f in facets["builtin"]} == {True, False}
    delete(hub, policy["id"])
    with hub.admin() as admin:
        assert admin.get(f"{POLICIES}/{policy['id']}").status_code == 404
    actions = [e["action"] for e in audit(hub, target_id=policy["id"])]
    assert actions == ["watchdog_policy.create", "watchdog_policy.update", "watchdog_policy.delete"]
    update = audit(hub, target_id=policy["id"], action="watchdog_policy.update")[0]
    assert update["before"]["version"] == 1 and update["after"]["version"] == 2


@pytest.mark.parametrize(
    ("detectors", "field"),
    [
        ({"silence": {"threshold_dbfs": 5}}, "detectors.silence.threshold_dbfs"),
        ({"silence": {"loudness": 1}}, "detectors.silence.loudness"),
        ({"flatline": {"remediation": {"steps": [{"action": "format-disk"}]}}}, "detectors.flatline.remediation.steps[0].action"),
        ({"clipping": {"severity": "dire"}}, "detectors.clipping.severity"),
        ({"disk_hours_left": {"warning_hours": 2, "critical_hours": 5}}, "detectors.disk_hours_left.critical_hours"),
        ({"tea_kettle": {}}, "detectors.tea_kettle"),
    ],
)
def test_a_bad_detector_setting_is_a_400_naming_the_field(hub: HubProcess, detectors: dict[str, Any], field: str) -> None:
    with hub.admin() as admin:
        response = admin.post(POLICIES, json={"name": unique("bad"), "detectors": detectors})
    assert response.status_code == 400, response.text
    assert list(response.json()["error"]["fields"]) == [field]


def test_bad_assignments_are_400s_and_a_target_belongs_to_one_policy(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    bad = [
        {"site": "atlantis"},
        {"node_id": "nod_missing"},
        {"site": "north", "node_id": node_id},
        {"site": "north", "channel": "L"},
    ]
    with hub.admin() as admin:
        response = admin.post(POLICIES, json={"name": unique("bad"), "assignments": bad})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {
        "assignments[0].site",
        "assignments[1].node_id",
        "assignments[2]",
        "assignments[3].channel",
    }
    first = create(hub, assignments=[{"node_id": node_id, "channel": "L"}])
    with hub.admin() as admin:
        clash = admin.post(POLICIES, json={"name": unique("clash"), "assignments": [{"node_id": node_id, "channel": "L"}]})
        assert clash.status_code == 409 and clash.json()["error"]["policy_id"] == first["id"]
    other_channel = create(hub, assignments=[{"node_id": node_id, "channel": "R"}])
    delete(hub, first["id"])
    delete(hub, other_channel["id"])


# -- resolution and delivery --------------------------------------------------------------------


def test_the_most_specific_policy_wins_and_reaches_the_node_in_its_config(hub: HubProcess) -> None:
    site = unique("site")
    hub.ensure_site(site)
    node_id, credential = enroll(hub, site)
    untouched = node_watchdog(hub, node_id, credential)
    assert untouched["node"]["policy_id"] is None and untouched["channels"] == {}  # the node's own built-in default
    by_site = create(hub, assignments=[{"site": site}], detectors={"silence": {"hold_s": 20}})
    assert node_watchdog(hub, node_id, credential)["node"]["policy_id"] == by_site["id"]
    by_node = create(hub, assignments=[{"node_id": node_id}], detectors={"silence": {"hold_s": 30}})
    by_channel = create(hub, assignments=[{"node_id": node_id, "channel": "Mic 1"}], detectors={"silence": {"hold_s": 40}})
    watchdog = node_watchdog(hub, node_id, credential)
    assert watchdog["node"]["policy_id"] == by_node["id"] and watchdog["node"]["detectors"]["silence"]["hold_s"] == 30.0
    assert watchdog["channels"]["Mic 1"]["policy_id"] == by_channel["id"]
    assert watchdog["channels"]["Mic 1"]["detectors"]["silence"]["hold_s"] == 40.0
    with hub.admin() as admin:
        detail = admin.get(f"{POLICIES}/{by_site['id']}").json()["data"]
        assert detail["nodes"] == []  # its one node has a policy of its own
        assert detail["assignments"] == [{"site": site, "nodes": 0}]
        node_row = admin.get(f"{POLICIES}/{by_channel['id']}").json()["data"]["nodes"][0]
        assert (node_row["node_id"], node_row["via"], node_row["channels"]) == (node_id, "channel", ["Mic 1"])
        assert node_row["expected"] == {"policy_id": by_channel["id"], "version": 1} and node_row["current"] is False
    delete(hub, by_node["id"])
    assert node_watchdog(hub, node_id, credential)["node"]["policy_id"] == by_site["id"]
    delete(hub, by_site["id"])
    delete(hub, by_channel["id"])
    assert node_watchdog(hub, node_id, credential) == untouched


def test_a_change_sends_cmd_config_to_the_nodes_whose_policy_moved_and_a_site_move_does_too(hub: HubProcess) -> None:
    site = unique("site")
    hub.ensure_site(site)
    node_id, credential = enroll(hub, site)
    bystander_id, bystander_credential = enroll(hub, "south")
    session = NodeSession(hub, node_id, credential)
    bystander = NodeSession(hub, bystander_id, bystander_credential)
    try:
        policy = create(hub, assignments=[{"site": site}])
        wait_for(lambda: session.commands("config") == [{"changed": ["watchdog"]}], 5, "cmd/config after the create")
        with hub.admin() as admin:
            patched = admin.patch(f"{POLICIES}/{policy['id']}", json={"detectors": {"clipping": {"min_samples": 4}}})
            assert patched.status_code == 200
        wait_for(lambda: len(session.commands("config")) == 2, 5, "cmd/config after the change")
        with hub.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node_id}", json={"site": "south"}).status_code == 200
        wait_for(lambda: len(session.commands("config")) == 3, 5, "cmd/config after the site move")
        assert node_watchdog(hub, node_id, credential)["node"]["policy_id"] is None
        delete(hub, policy["id"])  # reaches no node now: nobody is told
        applied = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "what": "watchdog", "ok": True, "id": None, "version": 0}
        session.publish("applied", applied)
        with hub.admin() as admin:
            wait_for(
                lambda: any(
                    n["node_id"] == node_id and n["current"] for n in admin.get(f"{POLICIES}/default").json()["data"]["nodes"]
                ),
                5,
                "the node's applied report",
            )
        assert bystander.commands("config") == []
        assert len(session.commands("config")) == 3
    finally:
        session.close()
        bystander.close()


# -- site scope -----------------------------------------------------------------------------------


def test_a_site_admin_manages_only_policies_inside_its_sites(hub: HubProcess) -> None:
    north_node, _ = enroll(hub, "north")
    south_node, _ = enroll(hub, "south")
    token = user_token(hub, ["admin"], ["north"])
    outside = create(hub, assignments=[{"node_id": south_node}])
    with hub.client(token) as site_admin:
        mine = site_admin.post(POLICIES, json={"name": unique("north"), "assignments": [{"node_id": north_node}]})
        assert mine.status_code == 201, mine.text
        unassigned = site_admin.post(POLICIES, json={"name": unique("nowhere")})
        assert unassigned.status_code == 400 and "assignments" in unassigned.json()["error"]["fields"]
        beyond = site_admin.post(POLICIES, json={"name": unique("south"), "assignments": [{"site": "south"}]})
        assert beyond.status_code == 400 and beyond.json()["error"]["fields"] == {"assignments[0].site": "not one of your sites"}
        hidden_node = site_admin.post(POLICIES, json={"name": unique("south"), "assignments": [{"node_id": south_node}]})
        assert hidden_node.json()["error"]["fields"] == {"assignments[0].node_id": "no node has this id"}
        assert site_admin.patch(f"{POLICIES}/{outside['id']}", json={"description": "mine now"}).status_code == 403
        assert site_admin.delete(f"{POLICIES}/{outside['id']}").status_code == 403
        assert site_admin.patch(f"{POLICIES}/default", json={"description": "mine now"}).status_code == 403
        seen = site_admin.get(f"{POLICIES}/{outside['id']}").json()["data"]
        assert seen["assignments"] == [] and seen["actions"]["update"]["allowed"] is False
        listed = site_admin.get(POLICIES, params={"name": outside["name"]}).json()["data"]
        exported = site_admin.get(f"{POLICIES}/export", params={"format": "ndjson", "name": outside["name"]}).text
        assert listed[0]["assignments"] == [] and json.loads(exported)["assignments"] == []  # the south node stays hidden
        assert site_admin.patch(f"{POLICIES}/{mine.json()['data']['id']}", json={"description": "ok"}).status_code == 200
        assert site_admin.delete(f"{POLICIES}/{mine.json()['data']['id']}").status_code == 204
    delete(hub, outside["id"])


# -- calibration and remediation ----------------------------------------------------------------


def test_calibration_reaches_the_node_and_its_baseline_lands_in_the_policy_audited(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    policy = create(hub, assignments=[{"node_id": node_id}])
    with hub.admin() as admin:
        away = admin.post(f"{POLICIES}/{policy['id']}/calibrate", json={"node_id": node_id, "duration_s": 5})
        assert away.status_code == 202, away.text
        calibration = away.json()["data"]
        assert calibration["state"] == "requested"  # the node is not connected yet
        busy = admin.post(f"{POLICIES}/{policy['id']}/calibrate", json={"node_id": node_id})
        assert busy.status_code == 409
        too_long = admin.post(f"{POLICIES}/{policy['id']}/calibrate", json={"node_id": node_id, "duration_s": 4000})
        assert too_long.status_code == 400 and set(too_long.json()["error"]["fields"]) == {"duration_s"}
        elsewhere = admin.post(f"{POLICIES}/default/calibrate", json={"node_id": node_id})
        assert elsewhere.status_code == 409  # the node runs another policy
    session = NodeSession(hub, node_id, credential)
    try:
        wait_for(lambda: session.commands("calibrate"), 5, "cmd/calibrate when the node connects")
        assert session.commands("calibrate")[0] == {"calibration_id": calibration["id"], "duration_s": 5.0}
        baseline = {
            "measured_at": now_iso(),
            "duration_s": 5.0,
            "frames": 50,
            "sample_rate": 48000,
            "channel_count": 2,
            "channels": {"L": {"noise_floor_dbfs": -72.5, "rms_median_dbfs": -40.0}, "R": {"noise_floor_dbfs": -71.0}},
        }
        result = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "calibration_id": calibration["id"], "baseline": baseline}
        session.publish(f"watchdog/calibration/{calibration['id']}", result)
        session.publish(f"watchdog/calibration/{calibration['id']}", result)  # a replay: applied once
        url = f"{POLICIES}/{policy['id']}/calibrations/{calibration['id']}"
        with hub.admin() as admin:
            wait_for(lambda: admin.get(url).json()["data"]["state"] == "completed", 5, "the calibration's result")
            done = admin.get(url).json()["data"]
            assert done["baseline"]["channels"]["L"]["noise_floor_dbfs"] == -72.5
            listed = admin.get(f"{POLICIES}/{policy['id']}/calibrations").json()["data"]
            assert [c["id"] for c in listed] == [calibration["id"]]
            stored = admin.get(f"{POLICIES}/{policy['id']}").json()["data"]
            assert stored["version"] == 2 and stored["baselines"][node_id]["channels"]["R"]["noise_floor_dbfs"] == -71.0
        wait_for(lambda: session.commands("config"), 5, "cmd/config with the new baseline")
        delivered = node_watchdog(hub, node_id, credential)["node"]
        assert delivered["version"] == 2 and delivered["baseline"]["channels"]["L"]["noise_floor_dbfs"] == -72.5
        calibrations = audit(hub, target_id=policy["id"], action="watchdog_policy.calibrate")
        assert len(calibrations) == 2  # the request, and the baseline stored (before: none)
        assert calibrations[1]["actor"]["type"] == "node" and calibrations[1]["before"]["baseline"] is None
        assert calibrations[1]["after"]["baseline"]["frames"] == 50
    finally:
        session.close()
    delete(hub, policy["id"])


def test_remediation_steps_appear_on_the_health_events_timeline_and_in_the_audit(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    session = NodeSession(hub, node_id, credential)
    try:
        opened = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "kind": "audio.flatline", "state": "open", "severity": "critical"}
        session.publish("health", opened)
        with hub.admin() as admin:
            wait_for(lambda: admin.get("/api/v1/health-events", params={"node_id": node_id}).json()["data"], 5, "the event")
            event_id = admin.get("/api/v1/health-events", params={"node_id": node_id}).json()["data"][0]["id"]
            assert admin.post(f"/api/v1/health-events/{event_id}/acknowledge").status_code == 200
        steps = [("started", None), ("failed", "exit 1"), ("skipped", "rate limit: 2 per hour")]
        for outcome, reason in steps:
            report = {
                "msg_id": uuid.uuid4().hex,
                "ts": now_iso(),
                "event_kind": "audio.flatline",
                "detector": "flatline",
                "step": 0,
                "action": "restart-audio",
                "outcome": outcome,
                "reason": reason,
                "output": "",
            }
            session.publish("watchdog/remediation", report)
        with hub.admin() as admin:

            def timeline() -> list[dict[str, Any]]:
                entries: list[dict[str, Any]] = admin.get(f"/api/v1/health-events/{event_id}").json()["data"]["timeline"]
                return entries

            wait_for(lambda: len([e for e in timeline() if e["type"] == "remediation"]) == 3, 5, "three remediation steps")
            entries = timeline()
        assert entries[0]["type"] == "opened"
        assert [(e["outcome"], e["reason"]) for e in entries if e["type"] == "remediation"] == steps
        assert "acknowledged" in [e["type"] for e in entries]
        assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
        remediations = audit(hub, target_id=event_id, action="health.remediate")
        assert [e["outcome"] for e in remediations] == ["success", "failure", "success"]
        assert remediations[0]["actor"] == {"type": "node", "id": node_id, "name": remediations[0]["actor"]["name"]}
    finally:
        session.close()
