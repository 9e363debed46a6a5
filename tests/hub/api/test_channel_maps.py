"""Channel maps: templates validated whole, assignments with rollback and bulk, site scope, audit,
the node's own route, and the `cmd/config` nudge a node gets on every change."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import HubProcess, wait_for
from tests.hub.api.sites import sites_exist

TEMPLATES = "/api/v1/settings/channel-map-templates"
ASSIGNMENTS = "/api/v1/settings/channel-map-assignments"
PASSWORD = "channel-map-test-password"


_sites_exist = sites_exist("north", "south")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def stereo(name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name or unique("stereo"),
        "description": "desk feed",
        "channels": [
            {"input": 0, "name": "L", "calibration_db": 120.0, "role": "L"},
            {"input": 1, "name": "R", "calibration_db": 120.0, "role": "R"},
            {"input": 4, "name": "Ambient", "role": "mono"},
        ],
        "programmes": [{"name": "main", "channels": ["L", "R"]}],
        **extra,
    }


def create_template(hub: HubProcess, **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(TEMPLATES, json=stereo(**body))
    assert response.status_code == 201, response.text
    return response.json()["data"]


def enroll(hub: HubProcess, site: str = "north") -> tuple[str, str]:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": unique("cm"), "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = unique("cmu")
    with hub.admin() as admin:
        body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
        if sites is not None:
            body["sites"] = sites
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return [e["action"] for e in reversed(events)]


# -- templates ----------------------------------------------------------------------------------


def test_a_template_is_created_read_updated_and_audited(hub: HubProcess) -> None:
    template = create_template(hub)
    assert template["version"] == 1 and template["channel_count"] == 3
    assert template["channels"][2] == {"input": 4, "name": "Ambient", "calibration_db": None, "role": "mono"}
    assert template["programmes"] == [{"name": "main", "channels": ["L", "R"]}]
    path = f"{TEMPLATES}/{template['id']}"
    with hub.admin() as admin:
        detail = admin.get(path).json()["data"]
        assert detail["assigned_nodes"] == 0
        assert detail["actions"] == {"update": {"allowed": True, "reason": None}, "delete": {"allowed": True, "reason": None}}
        assert admin.get(f"{path}/actions").json()["data"] == detail["actions"]
        channels = [*template["channels"], {"input": 5, "name": "LFE", "role": "LFE"}]
        patched = admin.patch(
            path,
            json={"channels": channels, "programmes": [{"name": "main", "channels": ["L", "R", "LFE"]}], "version": 1},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["data"]["version"] == 2 and patched.json()["data"]["channel_count"] == 4
        stale = admin.patch(path, json={"description": "late", "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        same = admin.patch(path, json={"description": "desk feed"})
        assert same.json()["data"]["version"] == 2, "a change that changes nothing makes no new version"
        assert admin.get(path).json()["data"]["description"] == "desk feed"
        assert admin.patch(f"{TEMPLATES}/cmt_missing", json={"description": "x"}).status_code == 404
    assert audit_actions(hub, template["id"]) == ["channel_map.template.create", "channel_map.template.update"]


def test_templates_list_filter_facet_and_export(hub: HubProcess) -> None:
    marker = unique("zephyr")
    created = [create_template(hub, name=f"{marker}-{i}") for i in range(3)]
    with hub.admin() as admin:
        page = admin.get(TEMPLATES, params={"q": marker, "limit": 2}).json()
        assert [t["id"] for t in page["data"]] == [t["id"] for t in created[:2]]
        rest = admin.get(TEMPLATES, params={"q": marker, "cursor": page["meta"]["next_cursor"]}).json()
        assert [t["id"] for t in rest["data"]] == [created[2]["id"]] and rest["meta"]["next_cursor"] is None
        named = admin.get(TEMPLATES, params={"name": created[1]["name"]}).json()["data"]
        assert [t["id"] for t in named] == [created[1]["id"]]
        facets = admin.get(f"{TEMPLATES}/facets", params={"q": marker}).json()["data"]
        assert facets == {"channel_count": [{"value": 3, "count": 3}]}
        bad = admin.get(TEMPLATES, params={"channel_count": "65", "colour": "red"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"channel_count", "colour"}
        exported = admin.get(f"{TEMPLATES}/export", params={"q": marker, "format": "csv"})
        selected = admin.post(f"{TEMPLATES}/export?format=ndjson", json={"ids": [created[0]["id"]]})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["name"] for r in rows] == [t["name"] for t in created]
    assert json.loads(rows[0]["programmes"]) == [{"channels": ["L", "R"], "name": "main"}]
    assert [json.loads(line)["id"] for line in selected.text.splitlines()] == [created[0]["id"]]


def _channels(n: int) -> list[dict[str, Any]]:
    return [{"input": i, "name": f"ch{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"channels": [{"input": 0, "name": "L"}, {"input": 1, "name": "L"}], "programmes": []}, {"channels[1].name"}),
        ({"channels": [{"input": 64, "name": "L"}, {"input": -1, "name": "R"}]}, {"channels[0].input", "channels[1].input"}),
        ({"channels": [{"input": 0, "name": "L"}, {"input": 0, "name": "R"}]}, {"channels[1].input"}),
        ({"channels": _channels(65), "programmes": []}, {"channels", "channels[64].input"}),
        ({"channels": [], "programmes": []}, {"channels"}),
        ({"programmes": [{"name": "main", "channels": ["L", "Centre"]}]}, {"programmes[0].channels"}),
        ({"programmes": [{"name": "a", "channels": ["L"]}, {"name": "a", "channels": ["R"]}]}, {"programmes[1].name"}),
        ({"programmes": [{"name": "main", "channels": []}]}, {"programmes[0].channels"}),
        ({"programmes": [{"name": "main", "channels": ["L", "L"]}]}, {"programmes[0].channels"}),
        (
            {"channels": [{"input": 0, "name": "A", "role": "L"}, {"input": 1, "name": "B", "role": "L"}], "programmes": []},
            set(),  # two left channels are fine in a template (two stereo pairs) ...
        ),
        (
            {
                "channels": [{"input": 0, "name": "A", "role": "L"}, {"input": 1, "name": "B", "role": "L"}],
                "programmes": [{"name": "main", "channels": ["A", "B"]}],
            },
            {"programmes[0].channels"},  # ... but not in one programme
        ),
        ({"channels": [{"input": 0, "name": "L", "role": "left"}], "programmes": []}, {"channels[0].role"}),
        ({"channels": [{"input": 0, "name": "L", "calibration_db": 900}], "programmes": []}, {"channels[0].calibration_db"}),
        ({"channels": [{"input": 0, "name": " L"}], "programmes": []}, {"channels[0].name"}),
        ({"name": ""}, {"name"}),
        ({"description": "x" * 501}, {"description"}),
        ({"channels": [{"input": 0}]}, {"channels[0].name"}),
        ({"channels": [{"input": "0", "name": "L"}]}, {"channels[0].input"}),
        ({"channels": [{"input": 0, "name": "L", "gain": 3}]}, {"channels[0].gain"}),
        ({"colour": "red"}, {"colour"}),
    ],
)
def test_an_invalid_template_names_each_problem_and_nothing_is_stored(
    hub: HubProcess, change: dict[str, Any], fields: set[str]
) -> None:
    body = {**stereo(), **change}
    with hub.admin() as admin:
        response = admin.post(TEMPLATES, json=body)
        if not fields:
            assert response.status_code == 201, response.text
            return
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and set(error["fields"]) == fields, error
        assert admin.get(TEMPLATES, params={"name": body.get("name") or "-"}).json()["data"] == []


def test_an_invalid_update_changes_nothing_and_names_are_unique(hub: HubProcess) -> None:
    first, second = create_template(hub), create_template(hub)
    path = f"{TEMPLATES}/{first['id']}"
    with hub.admin() as admin:
        # Dropping a channel a programme still uses is refused at the programme.
        dropped = admin.patch(path, json={"channels": [first["channels"][0]]})
        assert dropped.status_code == 400 and set(dropped.json()["error"]["fields"]) == {"programmes[0].channels"}
        taken = admin.patch(path, json={"name": second["name"]})
        assert taken.status_code == 409
        assert admin.post(TEMPLATES, json=stereo(name=second["name"])).status_code == 409
        stored = admin.get(path).json()["data"]
    assert {k: v for k, v in stored.items() if k not in ("assigned_nodes", "actions")} == first
    assert audit_actions(hub, first["id"]) == ["channel_map.template.create"]


# -- assignments ---------------------------------------------------------------------------------


def test_assign_reassign_rollback_unassign_and_delete(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    a, b = create_template(hub), create_template(hub)
    path = f"{ASSIGNMENTS}/{node_id}"
    with hub.admin() as admin:
        empty = admin.get(path).json()["data"]
        assert empty["template_id"] is None and empty["actions"]["rollback"]["allowed"] is False
        assigned = admin.put(path, json={"template_id": a["id"]})
        assert assigned.status_code == 200, assigned.text
        data = assigned.json()["data"]
        assert (data["template_id"], data["template_name"], data["previous_template_id"]) == (a["id"], a["name"], None)
        assert data["assigned_by"]["name"] == "admin" and data["site"] == "north"
        none_yet = admin.post(f"{path}/rollback")
        assert none_yet.status_code == 409 and none_yet.json()["error"]["code"] == "conflict"
        again = admin.put(path, json={"template_id": a["id"]})  # the same template: nothing changes
        assert again.status_code == 200 and again.json()["data"]["previous_template_id"] is None
        changed = admin.put(path, json={"template_id": b["id"]}).json()["data"]
        assert (changed["template_id"], changed["previous_template_id"]) == (b["id"], a["id"])
        assert admin.get(f"{path}/actions").json()["data"]["rollback"] == {"allowed": True, "reason": None}
        rolled = admin.post(f"{path}/rollback").json()["data"]
        assert (rolled["template_id"], rolled["previous_template_id"]) == (a["id"], b["id"])
        in_use = admin.delete(f"{TEMPLATES}/{a['id']}")
        assert in_use.status_code == 409 and in_use.json()["error"]["assigned_nodes"] == 1
        assert admin.get(f"{TEMPLATES}/{a['id']}").json()["data"]["actions"]["delete"] == {
            "allowed": False,
            "reason": "assigned to 1 nodes",
        }
        listed = admin.get(ASSIGNMENTS, params={"template_id": a["id"]}).json()["data"]
        assert [(x["node_id"], x["template_name"]) for x in listed] == [(node_id, a["name"])]
        assert admin.delete(path).status_code == 204
        assert admin.delete(path).status_code == 404
        assert admin.get(ASSIGNMENTS, params={"node_id": node_id}).json()["data"] == []
        restored = admin.post(f"{path}/rollback").json()["data"]
        assert restored["template_id"] == a["id"]
        # B is only a rollback target now: deleting it is allowed and forgets it.
        assert admin.put(path, json={"template_id": b["id"]}).status_code == 200
        assert admin.put(path, json={"template_id": a["id"]}).json()["data"]["previous_template_id"] == b["id"]
        assert admin.delete(f"{TEMPLATES}/{b['id']}").status_code == 204
        assert admin.get(f"{TEMPLATES}/{b['id']}").status_code == 404
        assert admin.get(path).json()["data"]["previous_template_id"] is None
        assert admin.post(f"{path}/rollback").status_code == 409
        missing = admin.put(path, json={"template_id": "cmt_missing"})
        assert missing.status_code == 400 and set(missing.json()["error"]["fields"]) == {"template_id"}
        assert admin.put(path, json={}).json()["error"]["fields"] == {"template_id": "is required"}
        assert admin.put(f"{ASSIGNMENTS}/nod_missing", json={"template_id": a["id"]}).status_code == 404
    assert audit_actions(hub, node_id) == [
        "node.enroll",
        "channel_map.assign",
        "channel_map.assign",
        "channel_map.rollback",
        "channel_map.unassign",
        "channel_map.rollback",
        "channel_map.assign",
        "channel_map.assign",
    ]
    assert audit_actions(hub, b["id"])[-1] == "channel_map.template.delete"


def test_bulk_assignment_answers_per_node(hub: HubProcess) -> None:
    first, _ = enroll(hub)
    second, _ = enroll(hub)
    template = create_template(hub)
    with hub.admin() as admin:
        admin.put(f"{ASSIGNMENTS}/{second}", json={"template_id": template["id"]})
        result = admin.post(
            f"{ASSIGNMENTS}/bulk", json={"node_ids": [first, second, "nod_missing", first], "template_id": template["id"]}
        )
        assert result.status_code == 200, result.text
        rows = result.json()["data"]
        assert [(r["node_id"], r["ok"], r.get("changed")) for r in rows] == [
            (first, True, True),
            (second, True, False),
            ("nod_missing", False, None),
        ]
        assert rows[0]["assignment"]["template_id"] == template["id"] and rows[2]["error"]["code"] == "not_found"
        unknown = admin.post(f"{ASSIGNMENTS}/bulk", json={"node_ids": [first], "template_id": "cmt_missing"})
        assert unknown.status_code == 400 and set(unknown.json()["error"]["fields"]) == {"template_id"}
        empty = admin.post(f"{ASSIGNMENTS}/bulk", json={"node_ids": [], "template_id": template["id"]})
        assert empty.status_code == 400 and set(empty.json()["error"]["fields"]) == {"node_ids"}
        listed = admin.get(ASSIGNMENTS, params={"template_id": template["id"]}).json()["data"]
    assert sorted(x["node_id"] for x in listed) == sorted([first, second])
    assert audit_actions(hub, first)[-1] == "channel_map.assign"


def test_a_site_limited_manager_sees_and_changes_only_its_sites(hub: HubProcess) -> None:
    north, _ = enroll(hub, "north")
    south, _ = enroll(hub, "south")
    template = create_template(hub)
    with hub.admin() as admin:
        for node_id in (north, south):
            assert admin.put(f"{ASSIGNMENTS}/{node_id}", json={"template_id": template["id"]}).status_code == 200
    mine = create_template(hub)
    with hub.client(user_token(hub, ["admin"], ["north"])) as limited:
        listed = {x["node_id"] for x in limited.get(ASSIGNMENTS, params={"template_id": template["id"]}).json()["data"]}
        assert listed == {north}
        assert limited.get(ASSIGNMENTS, params={"site": "south"}).json()["data"] == []
        assert limited.get(f"{ASSIGNMENTS}/{south}").status_code == 404
        assert limited.put(f"{ASSIGNMENTS}/{south}", json={"template_id": mine["id"]}).status_code == 404
        assert limited.post(f"{ASSIGNMENTS}/{south}/rollback").status_code == 404
        assert limited.delete(f"{ASSIGNMENTS}/{south}").status_code == 404
        bulk = limited.post(f"{ASSIGNMENTS}/bulk", json={"node_ids": [north, south], "template_id": mine["id"]}).json()["data"]
        assert [(r["node_id"], r["ok"]) for r in bulk] == [(north, True), (south, False)]
        # The shared template still runs on a south node: a north-only manager may not change it.
        actions = limited.get(f"{TEMPLATES}/{template['id']}/actions").json()["data"]
        assert actions["update"] == {"allowed": False, "reason": "assigned to 1 nodes outside your sites"}
        assert limited.patch(f"{TEMPLATES}/{template['id']}", json={"description": "x"}).status_code == 403
        assert limited.patch(f"{TEMPLATES}/{mine['id']}", json={"description": "north only"}).status_code == 200
    with hub.admin() as admin:
        assert admin.get(f"{ASSIGNMENTS}/{south}").json()["data"]["template_id"] == template["id"]


def test_a_viewer_reads_settings_but_cannot_change_them(hub: HubProcess) -> None:
    node_id, _ = enroll(hub)
    template = create_template(hub)
    with hub.client(user_token(hub, ["viewer"])) as viewer:
        assert viewer.get(TEMPLATES).status_code == 200
        assert viewer.get(f"{ASSIGNMENTS}/{node_id}").status_code == 200
        denied = viewer.put(f"{ASSIGNMENTS}/{node_id}", json={"template_id": template["id"]})
        assert denied.status_code == 403 and denied.json()["error"]["required"] == ["settings:manage"]
        assert viewer.post(TEMPLATES, json=stereo()).status_code == 403
    with hub.admin() as admin:
        denials = admin.get("/api/v1/audit-events", params={"action": "access.denied", "permission": "settings:manage"})
    assert denials.json()["data"], "the denied attempts are audited"


# -- the node's side ---------------------------------------------------------------------------------


def test_the_node_reads_its_own_assignment_in_full(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    other_id, other_credential = enroll(hub)
    template = create_template(hub)
    route = f"/api/v1/nodes/{node_id}/channel-map-assignments"
    with hub.client(credential) as node:
        assert node.get(route).json() == {"data": None}
        with hub.admin() as admin:
            admin.put(f"{ASSIGNMENTS}/{node_id}", json={"template_id": template["id"]})
        data = node.get(route).json()["data"]
        assert data["node_id"] == node_id and data["template_id"] == template["id"]
        assert {k: data["template"][k] for k in ("id", "name", "channels", "programmes", "version")} == {
            k: template[k] for k in ("id", "name", "channels", "programmes", "version")
        }
        assert node.get(TEMPLATES).status_code == 403, "a node credential reads only its own route"
    with hub.client(other_credential) as other:
        mismatch = other.get(route)
        assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "node_mismatch"
        assert other.get(f"/api/v1/nodes/{other_id}/channel-map-assignments").json() == {"data": None}
    with hub.admin() as admin:
        assert admin.get(route).status_code == 403  # users hold no node:control


def subscribe_as_node(hub: HubProcess, node_id: str, credential: str) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    client.username_pw_set(node_id, credential)
    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: received.append({"topic": m.topic, **json.loads(m.payload)})
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"hark/v1/nodes/{node_id}/cmd/config", qos=1)
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    assert subscribed.wait(5), "no subscription on the hub's broker"
    return client, received


def test_every_change_reaches_the_node_on_cmd_config_and_the_events_stream(hub: HubProcess) -> None:
    node_id, credential = enroll(hub)
    template, other = create_template(hub), create_template(hub)
    client, received = subscribe_as_node(hub, node_id, credential)
    try:
        with hub.admin() as admin:
            admin.put(f"{ASSIGNMENTS}/{node_id}", json={"template_id": template["id"]})
            wait_for(lambda: len(received) == 1, 5, "cmd/config after the assignment")
            admin.patch(f"{TEMPLATES}/{template['id']}", json={"description": "retuned"})
            wait_for(lambda: len(received) == 2, 5, "cmd/config after the template changed")
            admin.patch(f"{TEMPLATES}/{other['id']}", json={"description": "not this node's"})
            admin.post(f"{ASSIGNMENTS}/bulk", json={"node_ids": [node_id], "template_id": other["id"]})
            admin.post(f"{ASSIGNMENTS}/{node_id}/rollback")
            admin.delete(f"{ASSIGNMENTS}/{node_id}")
            wait_for(lambda: len(received) == 5, 5, "cmd/config after bulk, rollback and unassign")
    finally:
        client.disconnect()
        client.loop_stop()
    assert received == [{"topic": f"hark/v1/nodes/{node_id}/cmd/config", "changed": ["channel_map"]}] * 5
    changes = [e["change"] for e in stream_events(hub, "channel_map.assigned") if e["node_id"] == node_id]
    assert changes == ["assign", "assign", "rollback", "unassign"]


def stream_events(hub: HubProcess, event_type: str) -> list[dict[str, Any]]:
    """The buffered events of one type, read from the start of the stream until it goes quiet."""
    found: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {hub.login()}"}
    params = {"type": event_type, "last_event_id": "0"}
    try:
        with httpx.stream("GET", f"{hub.url}/api/v1/events/stream", params=params, headers=headers, timeout=1.0) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    found.append(json.loads(line[len("data: ") :]))
    except httpx.ReadTimeout:
        pass  # the backlog is sent at once; silence means it is all here
    return found
