"""Delegated administration and visibility: site admins manage their own sites' users and nodes only;
`approved` and `admin_only` sites are hidden from those not approved; a recordist sees only the
recordings it started."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx

from tests.harness import HubProcess

USERS = "/api/v1/auth/users"
PASSWORD = "site-admin-password-1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def new_site(hub: HubProcess, **fields: Any) -> str:
    site_id = unique("site")
    hub.ensure_site(site_id, **fields)
    return site_id


def new_user(hub: HubProcess, roles: list[str], sites: list[str] | None, groups: list[str] | None = None) -> dict[str, Any]:
    body = {"username": unique("u"), "password": PASSWORD, "roles": roles, "sites": sites, "groups": groups or []}
    with hub.admin() as admin:
        response = admin.post(USERS, json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["data"]
    return user


def client_of(hub: HubProcess, user: dict[str, Any]) -> httpx.Client:
    return hub.client(hub.login(user["username"], PASSWORD))


def enroll(hub: HubProcess, site: str) -> str:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": unique("box"), "site": site})
    assert response.status_code == 201, response.text
    node_id: str = response.json()["data"]["node"]["id"]
    return node_id


def test_a_site_admin_manages_its_own_sites_users_and_nodes_and_gets_404_for_another_sites(hub: HubProcess) -> None:
    north, south = new_site(hub), new_site(hub)
    site_admin = new_user(hub, ["admin"], [north])
    ours = new_user(hub, ["viewer"], [north])
    theirs = new_user(hub, ["viewer"], [south])
    both = new_user(hub, ["viewer"], [north, south])
    with hub.admin() as admin:
        everywhere = admin.post("/api/v1/auth/groups", json={"name": unique("all"), "roles": ["viewer"]}).json()["data"]
    via_group = new_user(hub, [], [north], [everywhere["id"]])  # its group reaches every site
    south_node = enroll(hub, south)

    with client_of(hub, site_admin) as client:
        listed = {u["id"] for u in client.get(USERS, params={"limit": 200}).json()["data"]}
        assert {ours["id"], site_admin["id"]} <= listed
        assert listed.isdisjoint({theirs["id"], both["id"], via_group["id"]})
        exported = list(csv.DictReader(io.StringIO(client.get(f"{USERS}/export", params={"format": "csv"}).text)))
        assert {r["id"] for r in exported} == listed
        selected = client.post(f"{USERS}/export", params={"format": "csv"}, json={"ids": [ours["id"], theirs["id"]]})
        assert [r["id"] for r in csv.DictReader(io.StringIO(selected.text))] == [ours["id"]]
        facets = client.get(f"{USERS}/facets", params={"fields": "site"}).json()["data"]
        assert {f["value"] for f in facets["site"]} == {north}

        # Its own site's user: seen, changed, reset, disabled, deleted.
        assert client.get(f"{USERS}/{ours['id']}").status_code == 200
        changed = client.patch(f"{USERS}/{ours['id']}/access", json={"roles": ["operator"]})
        assert changed.status_code == 200 and changed.json()["data"]["roles"] == ["operator"]
        assert client.patch(f"{USERS}/{ours['id']}/password", json={"password": "another-Lantern-58"}).status_code == 200
        assert client.patch(f"{USERS}/{ours['id']}/status", json={"status": "disabled"}).status_code == 200
        # ... but never granted beyond its sites: what it does not hold there is refused (403), and a
        # user it would lose sight of (sites or groups beyond its own, even granting nothing yet) too (400).
        for change in ({"sites": [north, south]}, {"sites": None}, {"groups": [everywhere["id"]]}):
            refused = client.patch(f"{USERS}/{ours['id']}/access", json=change)
            assert refused.status_code == 403, (change, refused.text)
            assert refused.json()["error"]["message"].startswith("You cannot grant permissions you do not hold"), change
        emptied = client.patch(f"{USERS}/{ours['id']}/access", json={"roles": [], "sites": None})
        assert emptied.status_code == 400 and set(emptied.json()["error"]["fields"]) == {"sites"}
        assert client.delete(f"{USERS}/{ours['id']}").status_code == 204

        # Other sites' users, and users reaching beyond its sites, are not there.
        for other in (theirs, both, via_group):
            assert client.get(f"{USERS}/{other['id']}").status_code == 404
            assert client.patch(f"{USERS}/{other['id']}/access", json={"roles": []}).status_code == 404
            assert client.patch(f"{USERS}/{other['id']}/password", json={"password": "another-Lantern-58"}).status_code == 404
            assert client.patch(f"{USERS}/{other['id']}/status", json={"status": "disabled"}).status_code == 404
            assert client.delete(f"{USERS}/{other['id']}").status_code == 404

        # It makes users of its own sites only.
        made = client.post(USERS, json={"username": unique("n"), "password": PASSWORD, "roles": ["viewer"], "sites": [north]})
        assert made.status_code == 201, made.text
        for sites in (None, [south], [north, south]):
            body = {"username": unique("n"), "password": PASSWORD, "roles": ["viewer"], "sites": sites}
            assert client.post(USERS, json=body).status_code == 403, sites
            roleless = client.post(USERS, json={**body, "roles": []})
            assert roleless.status_code == 400 and set(roleless.json()["error"]["fields"]) == {"sites"}, sites

        # Nodes: its site's, not another's.
        mine = client.post("/api/v1/nodes/enroll", json={"name": unique("box"), "site": north})
        assert mine.status_code == 201, mine.text
        node_id = mine.json()["data"]["node"]["id"]
        assert client.patch(f"/api/v1/nodes/{node_id}", json={"name": "renamed"}).status_code == 200
        assert client.post("/api/v1/nodes/enroll", json={"name": unique("box"), "site": south}).status_code == 400
        assert client.get(f"/api/v1/nodes/{south_node}").status_code == 404
        assert client.patch(f"/api/v1/nodes/{south_node}", json={"name": "taken"}).status_code == 404
        assert client.delete(f"/api/v1/nodes/{south_node}").status_code == 404
        assert {n["site"] for n in client.get("/api/v1/nodes", params={"limit": 200}).json()["data"]} == {north}

        # Groups, roles and policies stay hub-wide.
        assert client.get("/api/v1/auth/groups").status_code == 403
        # It is named among the site's admins.
        assert site_admin["id"] in {a["id"] for a in client.get(f"/api/v1/sites/{north}").json()["data"]["admins"]}
        assert client.get(f"/api/v1/sites/{south}").status_code == 404


def test_approved_and_admin_only_sites_are_hidden_until_the_viewer_is_approved(hub: HubProcess) -> None:
    approved = new_site(hub, visibility="approved")
    admin_only = new_site(hub, visibility="admin_only")
    public = new_site(hub)
    nodes = {site: enroll(hub, site) for site in (approved, admin_only, public)}
    viewer = new_user(hub, ["viewer"], None)  # every site its grants reach ...
    site_admin = new_user(hub, ["admin"], [admin_only])
    with hub.admin() as admin:
        key = admin.post("/api/v1/auth/keys", json={"name": "full", "scopes": ["node:read"]})
        assert key.status_code == 201, key.text

    def seen(client: httpx.Client) -> set[str]:
        listed = {n["id"] for n in client.get("/api/v1/nodes", params={"limit": 200}).json()["data"]}
        return {site for site, node in nodes.items() if node in listed}

    with client_of(hub, viewer) as client:
        assert seen(client) == {public}  # ... but not the sites hidden from it
        assert client.get(f"/api/v1/nodes/{nodes[approved]}").status_code == 404
        assert client.get(f"/api/v1/sites/{approved}").status_code == 404
        sites = {s["id"] for s in client.get("/api/v1/sites", params={"limit": 200}).json()["data"]}
        assert public in sites and sites.isdisjoint({approved, admin_only})
        facets = client.get("/api/v1/nodes/facets", params={"fields": "site"}).json()["data"]["site"]
        assert {f["value"] for f in facets}.isdisjoint({approved, admin_only})
        own_key = client.post("/api/v1/auth/keys", json={"name": "mine", "scopes": ["node:read"]}).json()["data"]["secret"]
    with hub.client(own_key) as client:
        assert seen(client) == {public}  # a user's key sees what its user sees

    with hub.admin() as admin:
        for site in (approved, admin_only):
            response = admin.post(f"/api/v1/sites/{site}/approved-users", json={"user_id": viewer["id"]})
            assert response.status_code == 201, response.text
        assert [u["id"] for u in admin.get(f"/api/v1/sites/{approved}").json()["data"]["approved_users"]] == [viewer["id"]]
        assert seen(admin) == set(nodes)  # full admins see every site
    with client_of(hub, viewer) as client:
        assert seen(client) == {public, approved}  # approval opens `approved`, never `admin_only`
        assert client.get(f"/api/v1/nodes/{nodes[approved]}").status_code == 200
        assert client.get(f"/api/v1/sites/{approved}").status_code == 200
    with hub.client(own_key) as client:
        assert seen(client) == {public, approved}
    with client_of(hub, site_admin) as client:
        assert seen(client) == {admin_only}  # the site's admin sees it

    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/sites/{approved}/approved-users/{viewer['id']}").status_code == 204
        assert admin.delete(f"/api/v1/sites/{approved}/approved-users/{viewer['id']}").status_code == 404
        actions = [e["action"] for e in admin.get("/api/v1/audit-events", params={"target_id": approved}).json()["data"]]
        assert actions[:2] == ["site.unapprove", "site.approve"]
        assert admin.patch(f"/api/v1/sites/{public}", json={"visibility": "admin_only"}).status_code == 200
    with client_of(hub, viewer) as client:
        assert seen(client) == set()  # unapproved, and the public site made admin-only


def test_a_recordist_sees_only_the_recordings_it_started(hub: HubProcess) -> None:
    site = new_site(hub)
    node_id = enroll(hub, site)
    first, second = new_user(hub, ["recordist"], [site]), new_user(hub, ["recordist"], [site])
    operator = new_user(hub, ["operator"], [site])
    started = {}
    for user in (first, second):
        with client_of(hub, user) as client:
            response = client.post("/api/v1/recordings", json={"node_id": node_id, "duration_s": 5, "name": user["username"]})
            assert response.status_code == 201, response.text
            started[user["id"]] = response.json()["data"]["recording"]["id"]
    mine, theirs = started[first["id"]], started[second["id"]]

    with client_of(hub, first) as client:
        listed = [r["id"] for r in client.get("/api/v1/recordings", params={"limit": 200}).json()["data"]]
        assert listed == [mine]
        facets = client.get("/api/v1/recordings/facets", params={"fields": "status"}).json()["data"]
        assert facets["status"] == [{"value": "queued", "count": 1}]
        exported = client.get("/api/v1/recordings/export", params={"format": "csv"}).text
        assert [r["id"] for r in csv.DictReader(io.StringIO(exported))] == [mine]
        assert client.get(f"/api/v1/recordings/{mine}").status_code == 200
        assert client.get(f"/api/v1/recordings/{theirs}").status_code == 404
        assert client.get(f"/api/v1/recordings/{theirs}/context").status_code == 404
        # Playback and download: its own is found (no file yet: 409), another's is not (404).
        assert client.post(f"/api/v1/recordings/{mine}/playback").status_code == 409
        assert client.post(f"/api/v1/recordings/{theirs}/playback").status_code == 404
        assert client.post(f"/api/v1/recordings/{theirs}/download").status_code == 404
        assert client.get(f"/api/v1/recordings/{theirs}/file").status_code == 404
    with client_of(hub, operator) as client:  # recording:read: every recording of its sites
        listed = {r["id"] for r in client.get("/api/v1/recordings", params={"limit": 200}).json()["data"]}
        assert {mine, theirs} <= listed
        assert client.get(f"/api/v1/recordings/{theirs}").status_code == 200
    with hub.admin() as admin:
        recording = admin.get(f"/api/v1/recordings/{mine}").json()["data"]
        assert recording["created_by"]["id"] == first["id"]


def test_a_sites_admins_are_the_users_managing_it_directly_or_through_a_group_and_never_full_admins(hub: HubProcess) -> None:
    north, south = new_site(hub), new_site(hub)
    direct = new_user(hub, ["admin"], [north])
    with hub.admin() as admin:
        group = admin.post("/api/v1/auth/groups", json={"name": unique("north-admins"), "roles": ["admin"], "sites": [north]})
        assert group.status_code == 201, group.text
    through_group = new_user(hub, [], [north], [group.json()["data"]["id"]])
    new_user(hub, ["admin"], [south])  # another site's admin
    new_user(hub, ["operator"], [north])  # on the site, but not managing it
    new_user(hub, ["admin"], None)  # a full admin manages every site and is not listed
    with hub.admin() as admin:
        listed = admin.get(f"/api/v1/sites/{north}").json()["data"]["admins"]
        disabled = admin.patch(f"{USERS}/{direct['id']}/status", json={"status": "disabled"})
        assert disabled.status_code == 200, disabled.text
        after = admin.get(f"/api/v1/sites/{north}").json()["data"]["admins"]
    assert {a["id"] for a in listed} == {direct["id"], through_group["id"]}
    assert [a["id"] for a in after] == [through_group["id"]]  # a disabled user manages nothing
