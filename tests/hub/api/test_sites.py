"""Sites as objects: create/read/change/delete with field-level 400s, versions, a delete preview and
`?force`, list filters, facets and export, audit, and site scope; a node's and a grant's site must exist."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

SITES = "/api/v1/sites"
PASSWORD = "sites-test-password"


_sites_exist = sites_exist("north", "south")


def unique(prefix: str = "site") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create(hub: HubProcess, **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(SITES, json={"id": unique(), **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> tuple[str, str]:
    """A new user's id and login token."""
    username = unique("u")
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles, "sites": sites}
        )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"], hub.login(username, PASSWORD)


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return [e["action"] for e in reversed(events)]


def test_a_site_is_created_with_its_time_zone_and_location_and_read_back(hub: HubProcess) -> None:
    site = create(hub, name="North hall", time_zone="Europe/Berlin", latitude=52.52, longitude=13.405, elevation_m=34)
    assert {k: site[k] for k in ("name", "time_zone", "latitude", "longitude", "elevation_m", "visibility", "notes")} == {
        "name": "North hall",
        "time_zone": "Europe/Berlin",
        "latitude": 52.52,
        "longitude": 13.405,
        "elevation_m": 34,
        "visibility": "public",
        "notes": "",
    }
    assert site["version"] == 1 and site["node_count"] == 0
    with hub.admin() as admin:
        detail = admin.get(f"{SITES}/{site['id']}").json()["data"]
        actions = admin.get(f"{SITES}/{site['id']}/actions").json()["data"]
    assert detail["admins"] == [] and detail["approved_users"] == [] and detail["actions"] == actions
    assert actions["delete"] == {"allowed": True, "reason": None}
    assert audit_actions(hub, site["id"]) == ["site.create"]


def test_defaults_are_the_id_as_name_utc_and_public(hub: HubProcess) -> None:
    site_id = unique()
    with hub.admin() as admin:
        response = admin.post(SITES, json={"id": site_id})
    assert response.status_code == 201, response.text
    site = response.json()["data"]
    assert (site["name"], site["time_zone"], site["visibility"], site["latitude"]) == (site_id, "UTC", "public", None)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, {"time_zone"}),
        ({"time_zone": "../../etc/passwd"}, {"time_zone"}),
        ({"latitude": 91, "longitude": 0}, {"latitude"}),
        ({"latitude": 0, "longitude": -181}, {"longitude"}),
        ({"latitude": 10}, {"longitude"}),
        ({"elevation_m": 20000}, {"elevation_m"}),
        ({"visibility": "secret"}, {"visibility"}),
        ({"name": " padded "}, {"name"}),
        ({"id": "no spaces allowed"}, {"id"}),
        (
            {"time_zone": "Nowhere/Land", "latitude": -100, "longitude": 0, "visibility": "hidden"},
            {"time_zone", "latitude", "visibility"},
        ),
    ],
)
def test_an_invalid_site_names_each_problem_and_nothing_is_stored(
    hub: HubProcess, body: dict[str, Any], fields: set[str]
) -> None:
    site_id = unique()
    with hub.admin() as admin:
        response = admin.post(SITES, json={"id": site_id, **body})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and set(error["fields"]) == fields, error
        assert admin.get(f"{SITES}/{body.get('id', site_id)}").status_code in (400, 404)


def test_an_id_in_use_is_a_conflict(hub: HubProcess) -> None:
    site = create(hub)
    with hub.admin() as admin:
        again = admin.post(SITES, json={"id": site["id"]})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_patch_changes_the_fields_given_bumps_the_version_and_refuses_a_stale_one(hub: HubProcess) -> None:
    site = create(hub)
    with hub.admin() as admin:
        changed = admin.patch(f"{SITES}/{site['id']}", json={"time_zone": "America/New_York", "notes": "Dock 4", "version": 1})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["data"]["time_zone"], changed.json()["data"]["version"]) == ("America/New_York", 2)
        stale = admin.patch(f"{SITES}/{site['id']}", json={"notes": "lost update", "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        bad = admin.patch(f"{SITES}/{site['id']}", json={"time_zone": "Not/AZone"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"time_zone"}
        same = admin.patch(f"{SITES}/{site['id']}", json={"notes": "Dock 4"})
        assert same.json()["data"]["version"] == 2  # nothing changed: no new version
        assert admin.get(f"{SITES}/{site['id']}").json()["data"]["notes"] == "Dock 4"
    assert audit_actions(hub, site["id"]) == ["site.create", "site.update"]


def test_a_nodes_site_and_a_grants_sites_must_exist(hub: HubProcess) -> None:
    missing = unique("nowhere")
    with hub.admin() as admin:
        enrolled = admin.post("/api/v1/nodes/enroll", json={"name": "lost", "site": missing})
        assert enrolled.status_code == 400
        assert enrolled.json()["error"]["fields"] == {"site": f"no site {missing}"}
        user = admin.post("/api/v1/auth/users", json={"username": unique("u"), "password": PASSWORD, "sites": [missing]})
        assert user.status_code == 400 and user.json()["error"]["fields"] == {"sites": f"no site {missing}"}
        group = admin.post("/api/v1/auth/groups", json={"name": unique("g"), "roles": ["viewer"], "sites": [missing]})
        assert group.status_code == 400 and "sites" in group.json()["error"]["fields"]
        key = admin.post("/api/v1/auth/keys", json={"name": "k", "kind": "service", "scopes": ["node:read"], "sites": [missing]})
        assert key.status_code == 400 and "sites" in key.json()["error"]["fields"]
        node = admin.post("/api/v1/nodes/enroll", json={"name": "found"}).json()["data"]["node"]
        moved = admin.patch(f"/api/v1/nodes/{node['id']}", json={"site": missing})
        assert moved.status_code == 400 and moved.json()["error"]["fields"] == {"site": f"no site {missing}"}
        hub.ensure_site(missing)
        assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"site": missing}).status_code == 200


def test_delete_names_what_blocks_it_and_force_detaches_nodes_and_grants(hub: HubProcess) -> None:
    site = create(hub)
    with hub.admin() as admin:
        node = admin.post("/api/v1/nodes/enroll", json={"name": "standing", "site": site["id"]}).json()["data"]["node"]
        user = admin.post(
            "/api/v1/auth/users",
            json={"username": unique("u"), "password": PASSWORD, "roles": ["viewer"], "sites": [site["id"], "north"]},
        ).json()["data"]
        preview = admin.get(f"{SITES}/{site['id']}/delete-preview").json()["data"]
        assert preview["requires_force"] and preview["counts"] == {"nodes": 1, "users": 1, "groups": 0, "api_keys": 0}
        assert preview["blockers"]["nodes"] == [{"id": node["id"], "name": "standing"}]
        assert preview["blockers"]["users"] == [{"id": user["id"], "username": user["username"]}]
        assert preview["reasons"] == ["1 node stands on this site", "1 user has grants naming this site"]
        refused = admin.delete(f"{SITES}/{site['id']}")
        assert refused.status_code == 409
        assert refused.json()["error"]["reasons"] == preview["reasons"]
        assert refused.json()["error"]["blockers"] == preview["blockers"]
        assert admin.get(f"{SITES}/{site['id']}").status_code == 200  # still there
        assert admin.delete(f"{SITES}/{site['id']}", params={"force": "true"}).status_code == 204
        assert admin.get(f"{SITES}/{site['id']}").status_code == 404
        assert admin.get(f"/api/v1/nodes/{node['id']}").json()["data"]["site"] is None
        assert admin.get(f"/api/v1/auth/users/{user['id']}").json()["data"]["sites"] == ["north"]
        deleted = admin.get("/api/v1/audit-events", params={"target_id": site["id"], "action": "site.delete"}).json()["data"]
    assert deleted[0]["after"] == {
        "forced": True,
        "detached_nodes": [node["id"]],
        "users": [user["id"]],
        "groups": [],
        "api_keys": [],
    }
    assert "node.update" in audit_actions(hub, node["id"])


def test_a_site_without_blockers_is_deleted_without_force(hub: HubProcess) -> None:
    site = create(hub)
    with hub.admin() as admin:
        assert admin.get(f"{SITES}/{site['id']}/delete-preview").json()["data"]["requires_force"] is False
        assert admin.delete(f"{SITES}/{site['id']}").status_code == 204
        assert admin.delete(f"{SITES}/{site['id']}").status_code == 404
    assert audit_actions(hub, site["id"]) == ["site.create", "site.delete"]


def test_list_filters_facets_and_export(hub: HubProcess) -> None:
    tag = uuid.uuid4().hex[:6]
    tokyo = create(hub, id=f"tokyo-{tag}", time_zone="Asia/Tokyo", notes=f"batch {tag}")
    lima = create(hub, id=f"lima-{tag}", time_zone="America/Lima", visibility="approved", notes=f"batch {tag}")
    with hub.admin() as admin:
        listed = admin.get(SITES, params={"q": tag, "limit": 1})
        assert listed.status_code == 200
        first = listed.json()
        second = admin.get(SITES, params={"q": tag, "cursor": first["meta"]["next_cursor"]}).json()
        assert [s["id"] for s in first["data"] + second["data"]] == sorted([tokyo["id"], lima["id"]])
        only = admin.get(SITES, params={"q": tag, "time_zone": "Asia/Tokyo"}).json()["data"]
        assert [s["id"] for s in only] == [tokyo["id"]]
        approved = admin.get(SITES, params={"q": tag, "visibility": "approved"}).json()["data"]
        assert [s["id"] for s in approved] == [lima["id"]]
        bad = admin.get(SITES, params={"visibility": "secret", "time_zone": "Not/AZone"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"visibility", "time_zone"}
        facets = admin.get(f"{SITES}/facets", params={"q": tag}).json()["data"]
        assert facets["visibility"] == [{"value": "approved", "count": 1}, {"value": "public", "count": 1}]
        assert {f["value"] for f in facets["time_zone"]} == {"Asia/Tokyo", "America/Lima"}
        exported = admin.get(f"{SITES}/export", params={"q": tag, "format": "csv"})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in rows] == sorted([tokyo["id"], lima["id"]])
        assert rows[0]["time_zone"] in ("Asia/Tokyo", "America/Lima") and "node_count" in rows[0]
        selected = admin.post(f"{SITES}/export", params={"format": "ndjson"}, json={"ids": [tokyo["id"]]})
        assert [json.loads(line)["id"] for line in selected.text.splitlines()] == [tokyo["id"]]


def test_reads_need_site_read_and_writes_site_manage_on_the_right_sites(hub: HubProcess) -> None:
    _, viewer = user_token(hub, ["viewer"], ["north"])
    _, north_admin = user_token(hub, ["admin"], ["north"])
    with hub.client(viewer) as client:
        assert client.get(f"{SITES}/north").status_code == 200
        assert client.get(f"{SITES}/south").status_code == 404  # outside its sites: as if absent
        assert {s["id"] for s in client.get(SITES, params={"limit": 200}).json()["data"]} == {"north"}
        assert client.patch(f"{SITES}/north", json={"notes": "mine"}).status_code == 403
    with hub.client(north_admin) as client:
        changed = client.patch(f"{SITES}/north", json={"notes": "changed by its admin"})
        assert changed.status_code == 200, changed.text
        assert client.patch(f"{SITES}/south", json={"notes": "not mine"}).status_code == 404
        created = client.post(SITES, json={"id": unique()})
        assert created.status_code == 403 and created.json()["error"]["required"] == ["site:manage"]
        assert client.delete(f"{SITES}/north").status_code == 403
        assert client.get(f"{SITES}/north").json()["data"]["actions"]["delete"]["allowed"] is False
