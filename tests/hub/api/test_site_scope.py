"""Site scope: a grant limited to sites shows only those sites' objects, in every list, facet and export."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Node
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

PASSWORD = "scope-test-password-1"


_sites_exist = sites_exist("north", "south", "east")


@pytest.fixture(scope="module")
def fleet(hub: HubProcess) -> Iterator[None]:
    with hub_database(hub):
        Node.delete().execute()
        for name, site in (("a-north", "north"), ("b-south", "south"), ("c-east", "east"), ("d-none", None)):
            Node.create(id=new_id("nod"), name=name, site=site, tags=[], status="online", created_at=utcnow())
    yield
    with hub_database(hub):
        Node.delete().execute()


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None, groups: list[str] | None = None) -> str:
    username = f"s-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": roles, "sites": sites, "groups": groups or []}
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def visible(hub: HubProcess, token: str) -> list[str]:
    with hub.client(token) as client:
        return [n["name"] for n in client.get("/api/v1/nodes").json()["data"]]


def test_an_unlimited_user_sees_every_site(hub: HubProcess, fleet: None) -> None:
    assert visible(hub, user_token(hub, ["viewer"], None)) == ["a-north", "b-south", "c-east", "d-none"]


def test_a_site_limited_user_sees_only_those_sites(hub: HubProcess, fleet: None) -> None:
    token = user_token(hub, ["viewer"], ["north", "east"])
    assert visible(hub, token) == ["a-north", "c-east"]
    with hub.client(token) as client:
        facets = client.get("/api/v1/nodes/facets", params={"fields": "site"}).json()["data"]["site"]
        export = client.get("/api/v1/nodes/export", params={"format": "ndjson"}).text
        selected = client.post("/api/v1/nodes/export", params={"format": "ndjson"}, json={"filters": {"site": "south"}}).text
    assert facets == [{"value": "east", "count": 1}, {"value": "north", "count": 1}]
    assert "b-south" not in export and "d-none" not in export
    assert selected == ""


def test_an_empty_site_list_sees_nothing(hub: HubProcess, fleet: None) -> None:
    assert visible(hub, user_token(hub, ["viewer"], [])) == []


def test_a_group_adds_its_sites_for_its_roles(hub: HubProcess, fleet: None) -> None:
    with hub.admin() as admin:
        group = admin.post(
            "/api/v1/auth/groups", json={"name": f"south-{uuid.uuid4().hex[:6]}", "roles": ["viewer"], "sites": ["south"]}
        )
    token = user_token(hub, ["viewer"], ["north"], [group.json()["data"]["id"]])
    assert visible(hub, token) == ["a-north", "b-south"]


def test_scope_is_per_permission(hub: HubProcess, fleet: None) -> None:
    """node:read everywhere through one grant; auth:manage only on a site through another is not a full admin."""
    with hub.admin() as admin:
        group = admin.post(
            "/api/v1/auth/groups", json={"name": f"adm-{uuid.uuid4().hex[:6]}", "roles": ["admin"], "sites": ["north"]}
        )
    token = user_token(hub, ["viewer"], None, [group.json()["data"]["id"]])
    assert visible(hub, token) == ["a-north", "b-south", "c-east", "d-none"]
    with hub.client(token) as client:
        me = client.get("/api/v1/auth/me").json()["data"]
        service_key = client.post("/api/v1/auth/keys", json={"name": "k", "kind": "service", "scopes": ["node:read"]})
    assert me["grants"][1]["sites"] == ["north"] and "auth:manage" in me["grants"][1]["permissions"]
    assert service_key.status_code == 403
