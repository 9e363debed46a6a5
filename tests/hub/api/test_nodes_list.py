"""The shared list machinery, exercised on `GET /api/v1/nodes`: pages, filters, search, facets, exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Node
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess

NODES = [
    ("north-1", "north", ["roof", "mic"], "online"),
    ("north-2", "north", ["mic"], "offline"),
    ("south-1", "south", ["roof"], "online"),
    ("south-2", "south", [], "pending"),
    ("east-1", "east", ["100%_loud"], "degraded"),
    ("east-2", "east", ["mic"], "online"),
    ("west-1", None, [], "pending"),
]


@pytest.fixture(scope="module")
def fleet(hub: HubProcess) -> Iterator[dict[str, str]]:
    """Seven nodes written into the hub's database; name -> id."""
    ids = {}
    with hub_database(hub):
        Node.delete().execute()
        for name, site, tags, status in NODES:
            node = Node.create(id=new_id("nod"), name=name, site=site, tags=tags, status=status, created_at=utcnow())
            ids[name] = node.id
    yield ids
    with hub_database(hub):
        Node.delete().execute()


def names(response_json: dict) -> list[str]:
    return [n["name"] for n in response_json["data"]]


def test_empty_list_has_the_list_shape(hub: HubProcess) -> None:
    with hub_database(hub):
        Node.delete().execute()
    with hub.admin() as client:
        response = client.get("/api/v1/nodes")
    assert response.status_code == 200
    assert response.json() == {"data": [], "meta": {"next_cursor": None}}


def test_pages_cover_every_node_once_in_a_stable_order(hub: HubProcess, fleet: dict[str, str]) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    with hub.admin() as client:
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            body = client.get("/api/v1/nodes", params=params).json()
            seen += [n["id"] for n in body["data"]]
            pages += 1
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                break
        again = client.get("/api/v1/nodes", params={"limit": 200}).json()
    assert pages == 3
    assert seen == [n["id"] for n in again["data"]] == sorted(fleet.values())


def test_a_page_exactly_full_has_no_next_cursor(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        body = client.get("/api/v1/nodes", params={"limit": 7}).json()
    assert len(body["data"]) == 7
    assert body["meta"]["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", ""])
def test_limit_out_of_range_is_400(hub: HubProcess, limit: str) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes", params={"limit": limit})
    assert response.status_code == 400
    assert "limit" in response.json()["error"]["fields"]


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "W10", "!!!!"])
def test_a_cursor_the_api_did_not_make_is_400(hub: HubProcess, cursor: str) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"cursor": "is not a cursor this API returned"}


def test_repeated_filter_matches_any_value(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        body = client.get("/api/v1/nodes", params=[("status", "pending"), ("status", "degraded")]).json()
    assert sorted(names(body)) == ["east-1", "south-2", "west-1"]


def test_filters_combine(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        body = client.get("/api/v1/nodes", params={"site": "north", "status": "online"}).json()
    assert names(body) == ["north-1"]


def test_tag_filter_matches_whole_tags_literally(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        assert sorted(names(client.get("/api/v1/nodes", params={"tag": "mic"}).json())) == ["east-2", "north-1", "north-2"]
        assert names(client.get("/api/v1/nodes", params={"tag": "100%_loud"}).json()) == ["east-1"]
        assert names(client.get("/api/v1/nodes", params={"tag": "%"}).json()) == []


def test_text_search_is_case_insensitive_and_literal(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        assert sorted(names(client.get("/api/v1/nodes", params={"q": "NORTH"}).json())) == ["north-1", "north-2"]
        assert names(client.get("/api/v1/nodes", params={"q": "%"}).json()) == []
        assert names(client.get("/api/v1/nodes", params={"q": "_"}).json()) == []


def test_unknown_filter_and_bad_values_are_named(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes", params={"colour": "red", "status": "sleeping", "from": "soon"})
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"colour", "status", "from"}


def test_time_range_filters_on_creation(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        assert len(client.get("/api/v1/nodes", params={"from": "2000-01-01T00:00:00Z"}).json()["data"]) == 7
        assert client.get("/api/v1/nodes", params={"to": "2000-01-01T00:00:00Z"}).json()["data"] == []


def test_facets_count_the_filtered_rows(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        body = client.get("/api/v1/nodes/facets", params={"fields": "status,tag"}).json()
        assert body["data"]["status"] == [
            {"value": "online", "count": 3},
            {"value": "pending", "count": 2},
            {"value": "degraded", "count": 1},
            {"value": "offline", "count": 1},
        ]
        assert {"value": "mic", "count": 3} in body["data"]["tag"]
        narrowed = client.get("/api/v1/nodes/facets", params={"fields": "site", "status": "online"}).json()
        # Equal counts are ordered by value.
        assert narrowed["data"]["site"] == [
            {"value": "east", "count": 1},
            {"value": "north", "count": 1},
            {"value": "south", "count": 1},
        ]
        assert client.get("/api/v1/nodes/facets", params={"fields": "password"}).status_code == 400


def test_csv_export_streams_every_matching_row(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes/export", params={"format": "csv", "site": "north"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["name"] for r in rows] == ["north-1", "north-2"]
    assert rows[0]["tags"] == "roof;mic"


def test_ndjson_export_of_a_selection(hub: HubProcess, fleet: dict[str, str]) -> None:
    wanted = [fleet["south-1"], fleet["west-1"]]
    with hub.admin() as client:
        response = client.post("/api/v1/nodes/export", params={"format": "ndjson"}, json={"ids": wanted})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [n["id"] for n in lines] == sorted(wanted)
    assert lines[0]["name"] == "south-1"


def test_export_with_no_match_is_just_a_header(hub: HubProcess, fleet: dict[str, str]) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes/export", params={"site": "nowhere"})
    assert response.text.splitlines() == ["id,name,site,tags,status,last_seen_at,version,time_quality,created_at"]


def test_unknown_export_format_is_400(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/nodes/export", params={"format": "xml"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"format": "must be csv or ndjson"}
