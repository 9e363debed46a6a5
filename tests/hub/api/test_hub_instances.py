"""`/api/v1/hub-instances`: the hub processes of the deployment, the leases each holds, and who holds each lease
(issue 24); on SQLite the one hub holding every lease, on PostgreSQL the instance rows and leases in the database."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from hark_fleet.hub.cluster.leases import NAMES

from tests.harness import HubProcess, wait_for

BASE = "/api/v1/hub-instances"
PASSWORD = "instances-test-password"


def get(hub: HubProcess, path: str, token: str | None = None, **params: Any) -> Any:
    with hub.client(token) if token else hub.admin() as client:
        return client.get(path, params=params)


def leases(hub: HubProcess) -> list[dict[str, Any]]:
    response = get(hub, f"{BASE}/leases")
    assert response.status_code == 200, response.text
    assert response.json()["meta"] == {"next_cursor": None}
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def holder_of_all(hub: HubProcess) -> str | None:
    """The instance holding every lease, once one does."""
    holders = {lease["holder"] for lease in leases(hub) if lease["held"]}
    held = [lease for lease in leases(hub) if lease["held"]]
    return holders.pop() if len(holders) == 1 and len(held) == len(NAMES) else None


def test_the_running_hub_is_listed_live_and_holds_every_lease(hub: HubProcess) -> None:
    me = wait_for(lambda: holder_of_all(hub), 30, "one instance holding every lease")
    every = leases(hub)
    assert [lease["name"] for lease in every] == list(NAMES)
    for lease in every:
        assert lease["holder"] == me and lease["held"] is True
        assert set(lease) == {"name", "holder", "fence", "acquired_at", "expires_at", "held"}
        assert lease["fence"] >= (1 if hub.database_url else 0)
        assert (lease["expires_at"] is None) == (hub.database_url is None)  # SQLite: held for as long as the hub runs
    listed = get(hub, BASE, state="live")
    assert listed.status_code == 200, listed.text
    mine = [item for item in listed.json()["data"] if item["id"] == me]
    assert len(mine) == 1
    item = mine[0]
    assert item["state"] == "live" and item["stopped_at"] is None
    assert item["url"] == hub.url and item["pid"] == hub.proc.pid  # type: ignore[union-attr]
    assert sorted(item["leases"]) == sorted(NAMES)
    detail = get(hub, f"{BASE}/{me}")
    assert detail.status_code == 200
    assert {k: v for k, v in detail.json()["data"].items() if k != "seen_at"} == {k: v for k, v in item.items() if k != "seen_at"}


def test_filters_facets_and_export_show_the_same_instances(hub: HubProcess) -> None:
    me = wait_for(lambda: holder_of_all(hub), 30, "one instance holding every lease")
    facets = get(hub, f"{BASE}/facets", fields="state")
    assert facets.status_code == 200, facets.text
    states = {f["value"]: f["count"] for f in facets.json()["data"]["state"]}
    assert states.get("live", 0) >= 1
    assert get(hub, BASE, state="stopped", q=me).json()["data"] == []
    assert [i["id"] for i in get(hub, BASE, q=me).json()["data"]] == [me]
    exported = get(hub, f"{BASE}/export", format="csv", q=me)
    assert exported.status_code == 200, exported.text
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == [me] and sorted(rows[0]["leases"].split()) == sorted(NAMES)
    with hub.admin() as admin:
        selected = admin.post(f"{BASE}/export", params={"format": "ndjson"}, json={"ids": [me]})
    assert selected.status_code == 200, selected.text
    assert [json.loads(line)["id"] for line in selected.text.splitlines()] == [me]


def test_bad_filters_and_unknown_ids_answer_in_the_error_shape(hub: HubProcess) -> None:
    bad = get(hub, BASE, state="sleeping", colour="red")
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"state", "colour"}
    assert get(hub, f"{BASE}/facets", fields="pid").status_code == 400
    missing = get(hub, f"{BASE}/nobody-{uuid.uuid4().hex[:6]}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_instances_need_metrics_read(hub: HubProcess) -> None:
    username = f"viewer-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        created = admin.post("/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": ["viewer"]})
    assert created.status_code == 201, created.text
    token = hub.login(username, PASSWORD)
    for path in (BASE, f"{BASE}/leases", f"{BASE}/facets"):
        refused = get(hub, path, token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["required"] == ["metrics:read"]
