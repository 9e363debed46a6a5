"""`GET /api/v1/nodes` reads its page without model objects and may answer again from what it read: both invisible.

The page is built from the rows as the driver returns them (times sliced, JSON columns passed through as stored):
it must show exactly what `node_to_api` shows. On SQLite an answer is given again only while the database is
unchanged, so a change made through the API or by another process shows in the very next answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Node
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.nodes import node_to_api

from tests.conftest import hub_database
from tests.harness import HubProcess

ROUND_SECOND = datetime(2026, 3, 1, 12, 30, 45)  # no microseconds: stored without a fraction


@pytest.fixture
def varied_nodes(hub: HubProcess) -> Iterator[list[str]]:
    """Nodes whose columns take the forms a page has to convert: empty, filled, non-ASCII, null times, whole seconds."""
    rows = [
        {"name": "plain", "site": None, "tags": [], "status": "pending"},
        {
            "name": "Größe — 北",
            "site": "nörth",
            "tags": ["dach", "ü"],
            "status": "online",
            "version": "1.2.3",
            "hardware_id": f"hw-{new_id('x')}",
            "hardware": {"model": "Pi 4 — ü", "serial": "0001"},
            "interfaces": [{"id": "hw:0", "name": "USB", "channels": 8, "rates": [48000], "label": "Dach"}],
            "capacity": {"channels": 8, "max_rate": 96000},
            "metrics": {"ts": "2026-03-01T12:30:45.123Z", "cpu_pct": 12.5, "load": [0.1, 0.25, 1e-05], "audio": None},
            "time_quality": "ntp",
            "clock_offset_ms": -0.25,
            "reported_heartbeat_interval_s": 30,
            "last_seen_at": utcnow(),
            "connected_at": ROUND_SECOND,
        },
        {"name": "round", "site": "south", "tags": ["x"], "status": "offline", "last_seen_at": ROUND_SECOND},
    ]
    ids = []
    with hub_database(hub):
        Node.delete().execute()
        for row in rows:
            node = Node.create(id=new_id("nod"), created_at=utcnow(), **row)
            ids.append(node.id)
    yield ids
    with hub_database(hub):
        Node.delete().execute()


def expected(hub: HubProcess, ids: list[str]) -> list[dict]:
    with hub_database(hub):
        return [json.loads(json.dumps(node_to_api(Node.get_by_id(i)))) for i in sorted(ids)]


def test_the_page_shows_what_node_to_api_shows_field_for_field(hub: HubProcess, varied_nodes: list[str]) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes", params={"limit": 50})
    assert response.status_code == 200
    items = response.json()["data"]
    want = expected(hub, varied_nodes)
    assert items == want
    assert [list(item) for item in items] == [list(node) for node in want]  # the same fields in the same order


def test_a_change_through_the_api_shows_in_the_next_answer(hub: HubProcess, varied_nodes: list[str]) -> None:
    with hub.admin() as client:
        first = client.get("/api/v1/nodes").json()["data"]
        again = client.get("/api/v1/nodes").json()["data"]
        assert again == first
        node_id = sorted(varied_nodes)[0]
        assert client.patch(f"/api/v1/nodes/{node_id}", json={"name": "renamed"}).status_code == 200
        after = client.get("/api/v1/nodes").json()["data"]
    assert after[0]["name"] == "renamed"
    assert after == expected(hub, varied_nodes)


def test_a_change_by_another_process_shows_in_the_next_answer(hub: HubProcess, varied_nodes: list[str]) -> None:
    with hub.admin() as client:
        client.get("/api/v1/nodes")
        client.get("/api/v1/nodes")
        with hub_database(hub):  # this test process: another connection to the hub's database
            Node.update(status="degraded").where(Node.id == varied_nodes[0]).execute()
            Node.create(id=new_id("nod"), name="late", tags=[], status="pending", created_at=utcnow())
        after = client.get("/api/v1/nodes").json()["data"]
    by_name = {n["name"]: n for n in after}
    assert by_name["plain"]["status"] == "degraded"
    assert "late" in by_name


def test_if_none_match_gets_304_until_the_page_changes(hub: HubProcess, varied_nodes: list[str]) -> None:
    with hub.admin() as client:
        first = client.get("/api/v1/nodes")
        etag = first.headers["etag"]
        unchanged = client.get("/api/v1/nodes", headers={"If-None-Match": etag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert client.patch(f"/api/v1/nodes/{varied_nodes[0]}", json={"tags": ["new"]}).status_code == 200
        changed = client.get("/api/v1/nodes", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert {n["id"]: n for n in changed.json()["data"]}[varied_nodes[0]]["tags"] == ["new"]


def test_pages_and_filters_are_answered_each_for_itself(hub: HubProcess, varied_nodes: list[str]) -> None:
    with hub.admin() as client:
        whole = client.get("/api/v1/nodes").json()
        first = client.get("/api/v1/nodes", params={"limit": 1}).json()
        second = client.get("/api/v1/nodes", params={"limit": 1, "cursor": first["meta"]["next_cursor"]}).json()
        south = client.get("/api/v1/nodes", params={"site": "south"}).json()
    assert [n["id"] for n in whole["data"]] == sorted(varied_nodes)
    assert whole["meta"]["next_cursor"] is None
    assert [n["id"] for n in first["data"] + second["data"]] == sorted(varied_nodes)[:2]
    assert [n["name"] for n in south["data"]] == ["round"]
