"""Listen sessions as lists, facets, exports and details: own sessions for listen:monitor, everyone's within the
sites of listen:manage, and disconnecting a listener (audited with who and why).

The listen runtime writes these rows; here most are seeded straight into the running hub's database (nodes the
runtime never streams from, so it leaves them alone). One test opens a real session on a real node.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ListenSession, Node
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess, NodeProcess, wait_for

PASSWORD = "listen-sessions-password-1"
ROUTE = "/api/v1/listen-sessions"
SHAPE = {
    "id", "node_id", "node_name", "site", "user", "actor", "client_address", "user_agent", "codec", "bitrate",
    "sample_rate", "channels", "programme", "stream_id", "state", "started_at", "connected_at", "disconnected_at",
    "ended_at", "end_reason", "ended_by", "bytes_sent", "frames_sent", "bytes_per_s", "stream_url",
}  # fmt: skip


@dataclass
class Caller:
    id: str  # the user's id (a key's own id for a service key)
    name: str
    token: str


@dataclass
class Seeded:
    run: str  # a word in every seeded node's name, for `q`
    north_node: str
    south_node: str
    ann: Caller  # listen:monitor (operator)
    bob: Caller  # listen:monitor (technician)
    north_admin: Caller  # listen:manage on north only
    key: Caller  # a service key with listen:monitor
    sessions: dict[str, str]  # label -> session id, in the order made (oldest first)

    def ids(self, *labels: str) -> list[str]:
        """The sessions of `labels` newest first, as the lists answer."""
        return sorted((self.sessions[label] for label in labels), reverse=True)


def make_user(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> Caller:
    username = f"lsn-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": roles, **({"sites": sites} if sites else {})}
    with hub.admin() as admin:
        created = admin.post("/api/v1/auth/users", json=body)
    assert created.status_code == 201, created.text
    return Caller(created.json()["data"]["id"], username, hub.login(username, PASSWORD))


def session(node_id: str, site: str, owner: Caller, kind: str, started_ago_s: float, **fields: object) -> str:
    state = fields.pop("state", "active")
    values: dict = {
        "codec": "opus",
        "bitrate": 64000,
        "sample_rate": 48000,
        "channels": [0, 1],
        "client_address": "10.0.0.7",
        "user_agent": "test",
        "stream_id": new_id("lst"),
        "bytes_sent": 8000,
        "frames_sent": 50,
        **fields,
    }
    started = utcnow() - timedelta(seconds=started_ago_s)
    if state == "terminated":
        values.setdefault("ended_at", started + timedelta(seconds=60))
        values.setdefault("end_reason", "ended")
    return ListenSession.create(
        id=new_id("lsn"),
        node_id=node_id,
        site=site,
        user_id=owner.id if kind == "user" else None,
        actor={"type": kind, "id": owner.id, "name": owner.name},
        state=state,
        started_at=started,
        connected_at=started + timedelta(seconds=1),
        **values,
    ).id


def node(name: str, site: str) -> Node:
    return Node.create(id=new_id("nod"), name=name, site=site, tags=[], status="online", created_at=utcnow())


@pytest.fixture(scope="module")
def seeded(hub: HubProcess) -> Seeded:
    for site in ("north", "south"):
        hub.ensure_site(site)
    run = uuid.uuid4().hex[:8]
    ann = make_user(hub, ["operator"])
    bob = make_user(hub, ["technician"])
    north_admin = make_user(hub, ["admin"], ["north"])
    with hub.admin() as admin:
        made = admin.post("/api/v1/auth/keys", json={"name": f"lsn-{run}", "kind": "service", "scopes": ["listen:monitor"]})
    assert made.status_code == 201, made.text
    key = Caller(made.json()["data"]["key"]["id"], f"lsn-{run}", made.json()["data"]["secret"])
    with hub_database(hub):
        north = Node.create(
            id=new_id("nod"), name=f"Stage left {run}", site="north", tags=[], status="online", created_at=utcnow()
        )
        south = Node.create(id=new_id("nod"), name=f"Booth {run}", site="south", tags=[], status="online", created_at=utcnow())
        sessions = {
            "ann_north_ended": session(north.id, "north", ann, "user", 7200, state="terminated"),
            "ann_south_live": session(south.id, "south", ann, "user", 600, codec="pcm16", bitrate=None),
            "bob_north_gone": session(
                north.id, "north", bob, "user", 300, state="disconnected", client_address="192.168.5.20", channels=[2]
            ),
            "bob_south_ended": session(south.id, "south", bob, "user", 200, state="terminated", end_reason="client_gone"),
            "key_north_live": session(north.id, "north", key, "key", 100, codec="pcm16", bitrate=None),
        }
    return Seeded(run, north.id, south.id, ann, bob, north_admin, key, sessions)


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# -- the list ---------------------------------------------------------------------------------------------------


def test_a_monitor_lists_only_its_own_sessions_newest_first_in_the_sessions_shape(hub: HubProcess, seeded: Seeded) -> None:
    with hub.client(seeded.ann.token) as client:
        response = client.get(ROUTE, params={"q": seeded.run})
    assert ids_of(response) == seeded.ids("ann_north_ended", "ann_south_live")
    live = response.json()["data"][0]
    assert set(live) == SHAPE
    assert live["node_name"] == f"Booth {seeded.run}" and live["site"] == "south"
    assert live["user"] == {"id": seeded.ann.id, "name": seeded.ann.name}
    assert live["actor"] == {"type": "user", "id": seeded.ann.id, "name": seeded.ann.name}
    assert live["codec"] == "pcm16" and live["state"] == "active" and live["started_at"].endswith("Z")
    assert live["stream_url"] == f"/api/v1/nodes/{seeded.south_node}/listen/stream?session={live['id']}"
    with hub.client(seeded.key.token) as client:  # a service key: its own, by the key
        assert ids_of(client.get(ROUTE, params={"q": seeded.run})) == seeded.ids("key_north_live")


def test_an_admin_lists_everyones_and_pages_follow_the_cursor(hub: HubProcess, seeded: Seeded) -> None:
    seen: list[str] = []
    params: dict = {"q": seeded.run, "limit": 2}
    with hub.admin() as admin:
        while True:
            body = admin.get(ROUTE, params=params).json()
            assert len(body["data"]) <= 2
            seen += [s["id"] for s in body["data"]]
            if body["meta"]["next_cursor"] is None:
                break
            params["cursor"] = body["meta"]["next_cursor"]
    assert seen == seeded.ids(*seeded.sessions)


def test_filters_narrow_the_list(hub: HubProcess, seeded: Seeded) -> None:
    with hub.admin() as admin:

        def listed(**params: object) -> list[str]:
            return ids_of(admin.get(ROUTE, params={"q": seeded.run, "limit": 200, **params}))

        assert listed(state="terminated") == seeded.ids("ann_north_ended", "bob_south_ended")
        assert listed(state=["active", "disconnected"]) == seeded.ids("ann_south_live", "bob_north_gone", "key_north_live")
        assert listed(node_id=seeded.south_node) == seeded.ids("ann_south_live", "bob_south_ended")
        assert listed(user_id=seeded.bob.id) == seeded.ids("bob_north_gone", "bob_south_ended")
        assert listed(codec="pcm16") == seeded.ids("ann_south_live", "key_north_live")
        assert listed(**{"from": iso(utcnow() - timedelta(seconds=400))}) == seeded.ids(
            "bob_north_gone", "bob_south_ended", "key_north_live"
        )
        assert listed(to=iso(utcnow() - timedelta(seconds=400))) == seeded.ids("ann_north_ended", "ann_south_live")
        assert listed(mine="true") == []  # the admin opened none of them
        assert listed(mine="false") == seeded.ids(*seeded.sessions)
        assert listed(q=f"stage left {seeded.run}") == seeded.ids("ann_north_ended", "bob_north_gone", "key_north_live")
    with hub.admin() as admin:  # q: the user's name and the client's address (other runs' rows may match those)
        assert set(seeded.ids("bob_north_gone", "bob_south_ended")) == set(
            ids_of(admin.get(ROUTE, params={"q": seeded.bob.name}))
        )
        assert seeded.sessions["bob_north_gone"] in ids_of(admin.get(ROUTE, params={"q": "192.168.5.20", "limit": 200}))
    with hub.client(seeded.ann.token) as client:
        assert ids_of(client.get(ROUTE, params={"q": seeded.run, "mine": "true"})) == seeded.ids(
            "ann_north_ended", "ann_south_live"
        )
        assert ids_of(client.get(ROUTE, params={"q": seeded.run, "mine": "false"})) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"codec": "mp3"}, "codec"),
        ({"mine": "yes"}, "mine"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"from": "yesterday"}, "from"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_filters_are_a_400_naming_them(hub: HubProcess, seeded: Seeded, params: dict, field: str) -> None:
    with hub.admin() as admin:
        for path in (ROUTE, f"{ROUTE}/active", f"{ROUTE}/facets", f"{ROUTE}/export"):
            response = admin.get(path, params=params)
            assert response.status_code == 400, (path, response.text)
            assert field in response.json()["error"]["fields"], (path, response.text)
        both = admin.get(ROUTE, params={"mine": "maybe", "codec": "mp3"})
        assert both.status_code == 400 and {"mine", "codec"} <= set(both.json()["error"]["fields"])
        assert admin.get(f"{ROUTE}/active", params={"state": "terminated"}).status_code == 400


# -- site scope and who may see what ---------------------------------------------------------------------------------


def test_a_site_limited_manager_sees_its_own_and_its_sites_sessions_only(hub: HubProcess, seeded: Seeded) -> None:
    north = seeded.ids("ann_north_ended", "bob_north_gone", "key_north_live")
    with hub.client(seeded.north_admin.token) as client:
        assert ids_of(client.get(ROUTE, params={"q": seeded.run})) == north
        assert ids_of(client.get(f"{ROUTE}/active", params={"q": seeded.run})) == seeded.ids("bob_north_gone", "key_north_live")
        facets = client.get(f"{ROUTE}/facets", params={"q": seeded.run}).json()["data"]
        assert facets["node_id"] == [{"value": seeded.north_node, "count": 3, "name": f"Stage left {seeded.run}"}]
        exported = client.get(f"{ROUTE}/export", params={"q": seeded.run, "format": "ndjson"})
        assert sorted((json.loads(line)["id"] for line in exported.text.splitlines()), reverse=True) == north
        for hidden in ("ann_south_live", "bob_south_ended"):
            response = client.get(f"{ROUTE}/{seeded.sessions[hidden]}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        detail = client.get(f"{ROUTE}/{seeded.sessions['bob_north_gone']}").json()["data"]
        assert detail["actions"] == {"disconnect": {"allowed": True, "reason": None}}


def test_a_monitor_cannot_see_anothers_session_nor_the_active_list(hub: HubProcess, seeded: Seeded) -> None:
    with hub.client(seeded.bob.token) as client:
        for other in ("ann_south_live", "key_north_live"):
            response = client.get(f"{ROUTE}/{seeded.sessions[other]}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        refused = client.get(f"{ROUTE}/active")
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["listen:manage"]
        own = client.get(f"{ROUTE}/{seeded.sessions['bob_north_gone']}").json()["data"]
        assert own["actions"] == {"disconnect": {"allowed": True, "reason": None}} and own["channels"] == [2]
        ended = client.get(f"{ROUTE}/{seeded.sessions['bob_south_ended']}").json()["data"]
        assert ended["actions"]["disconnect"]["allowed"] is False and ended["actions"]["disconnect"]["reason"]
        assert client.get(f"{ROUTE}/lsn_nothing").status_code == 404
    with hub.client(make_user(hub, ["viewer"]).token) as viewer:  # no listen:monitor
        refused = viewer.get(ROUTE)
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["listen:monitor"]
    with hub.client() as anonymous:
        assert anonymous.get(ROUTE).status_code == 401


# -- the active list, facets and export ----------------------------------------------------------------------------------


def test_the_active_list_has_the_open_sessions_of_every_site_for_an_admin(hub: HubProcess, seeded: Seeded) -> None:
    with hub.admin() as admin:
        active = ids_of(admin.get(f"{ROUTE}/active", params={"q": seeded.run}))
        assert active == seeded.ids("ann_south_live", "bob_north_gone", "key_north_live")
        gone = ids_of(admin.get(f"{ROUTE}/active", params={"q": seeded.run, "state": "disconnected"}))
        assert gone == seeded.ids("bob_north_gone")


def test_facets_count_the_matching_sessions_with_node_and_user_names(hub: HubProcess, seeded: Seeded) -> None:
    with hub.admin() as admin:
        facets = admin.get(f"{ROUTE}/facets", params={"q": seeded.run}).json()["data"]
        assert set(facets) == {"state", "codec", "node_id", "user_id"}
        assert {f["value"]: f["count"] for f in facets["state"]} == {"terminated": 2, "active": 2, "disconnected": 1}
        assert {f["value"]: f["count"] for f in facets["codec"]} == {"opus": 3, "pcm16": 2}
        assert {(f["value"], f["name"], f["count"]) for f in facets["user_id"]} == {
            (seeded.ann.id, seeded.ann.name, 2),
            (seeded.bob.id, seeded.bob.name, 2),
            (None, None, 1),
        }
        chosen = admin.get(f"{ROUTE}/facets", params={"q": seeded.run, "fields": "codec", "state": "active"}).json()["data"]
        assert chosen == {"codec": [{"value": "pcm16", "count": 2}]}
        unknown = admin.get(f"{ROUTE}/facets", params={"fields": "client_address"})
        assert unknown.status_code == 400 and "fields" in unknown.json()["error"]["fields"]


def test_export_streams_csv_and_ndjson_and_a_posted_selection(hub: HubProcess, seeded: Seeded) -> None:
    with hub.admin() as admin:
        response = admin.get(f"{ROUTE}/export", params={"q": seeded.run, "node_id": seeded.north_node})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert 'filename="listen-sessions.csv"' in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["id"] for r in rows] == seeded.ids("ann_north_ended", "bob_north_gone", "key_north_live")
        assert list(rows[0])[:6] == ["id", "node_id", "node_name", "site", "user_id", "user_name"]
        by_id = {r["id"]: r for r in rows}
        gone = by_id[seeded.sessions["bob_north_gone"]]
        assert gone["user_name"] == seeded.bob.name and gone["channels"] == "[2]" and gone["bytes_sent"] == "8000"
        assert by_id[seeded.sessions["key_north_live"]]["user_id"] == ""
    with hub.client(seeded.ann.token) as client:  # a selection holding another's session exports only the caller's
        posted = client.post(
            f"{ROUTE}/export",
            params={"format": "ndjson"},
            json={"ids": [seeded.sessions["ann_south_live"], seeded.sessions["bob_north_gone"]], "filters": {"mine": "true"}},
        )
        assert posted.status_code == 200 and posted.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line)["id"] for line in posted.text.splitlines()] == [seeded.sessions["ann_south_live"]]
        bad = client.post(f"{ROUTE}/export", json={"filters": {"colour": "red"}})
        assert bad.status_code == 400 and "colour" in bad.json()["error"]["fields"]
        assert client.get(f"{ROUTE}/export", params={"format": "xml"}).status_code == 400


# -- disconnecting -----------------------------------------------------------------------------------------------------


def test_a_disconnect_ends_the_session_with_who_and_why_and_is_audited(hub: HubProcess, seeded: Seeded) -> None:
    with hub_database(hub):  # nodes of their own, so the other tests' `q` never meets these
        target = session(node("Disconnect north", "north").id, "north", seeded.bob, "user", 50)
        other = session(node("Disconnect south", "south").id, "south", seeded.bob, "user", 40)
    path = f"{ROUTE}/{target}/disconnect"
    with hub.client(seeded.ann.token) as ann:  # another monitor: not hers to see, nor to end
        refused = ann.post(path, json={"reason": "mine now"})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    with hub.client(seeded.north_admin.token) as manager:
        for body in ({}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": "ok", "colour": "red"}):
            bad = manager.post(path, json=body)
            assert bad.status_code == 400, (body, bad.text)
        assert manager.post(f"{ROUTE}/{other}/disconnect", json={"reason": "south"}).status_code == 404  # not its site
        done = manager.post(path, json={"reason": "rehearsal is over"})
        assert done.status_code == 200, done.text
        after = done.json()["data"]
        assert after["state"] == "terminated" and after["end_reason"] == "disconnected" and after["ended_at"]
        assert after["ended_by"]["id"] == seeded.north_admin.id and after["ended_by"]["reason"] == "rehearsal is over"
        assert after["actions"]["disconnect"]["allowed"] is False
        again = manager.post(path, json={"reason": "twice"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "session_ended"
    with hub.client(seeded.bob.token) as bob:  # the listener sees why it ended
        assert bob.get(f"{ROUTE}/{target}").json()["data"]["ended_by"]["reason"] == "rehearsal is over"
        assert bob.post(f"{ROUTE}/{other}/disconnect", json={"reason": "done"}).status_code == 200  # one's own
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"action": "listen_session.disconnect", "limit": 200}).json()["data"]
    event = next(e for e in events if e["target"]["id"] == target)
    assert event["actor"]["name"] == seeded.north_admin.name and event["outcome"] == "success"
    assert event["reason"] == "rehearsal is over" and event["after"]["state"] == "terminated"


# -- a real session on a real node --------------------------------------------------------------------------------------


@pytest.fixture
def north_node(hub: HubProcess, tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `hark-node` of site north with a synthetic source, online."""
    hub.ensure_site("north")
    with hub.admin() as admin:
        enrolled = admin.post("/api/v1/nodes/enroll", json={"name": f"listen-{uuid.uuid4().hex[:6]}", "site": "north"})
    assert enrolled.status_code == 201, enrolled.text
    data = enrolled.json()["data"]
    env = {"HARK_NODE_AUDIO_SOURCE": "synthetic:sine?freq=1000&dbfs=-20&channels=2"}
    node = NodeProcess(tmp_path / "node", hub.url, data["node"]["id"], data["credential"], env_extra=env)
    node.start()
    try:

        def online() -> bool:
            with hub.admin() as admin:
                return admin.get(f"/api/v1/nodes/{node.node_id}").json()["data"]["status"] == "online"

        wait_for(online, 30, "the node online", 0.2)
        yield node
    finally:
        node.stop()


def test_a_real_session_is_seen_and_disconnected_only_by_its_owner_or_a_manager(
    hub: HubProcess, seeded: Seeded, north_node: NodeProcess
) -> None:
    with hub.client(seeded.ann.token) as ann:
        opened = ann.post(f"/api/v1/nodes/{north_node.node_id}/listen", json={"codec": "opus"})
        assert opened.status_code == 201, opened.text
        sid = opened.json()["data"]["id"]
        mine = ann.get(f"{ROUTE}/{sid}").json()["data"]
        assert mine["state"] == "active" and mine["actions"]["disconnect"]["allowed"] is True
        assert ids_of(ann.get(ROUTE, params={"node_id": north_node.node_id})) == [sid]
    with hub.client(seeded.bob.token) as bob:  # another monitor: neither sees nor ends it
        assert bob.get(f"{ROUTE}/{sid}").status_code == 404
        refused = bob.post(f"{ROUTE}/{sid}/disconnect", json={"reason": "me instead"})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
        assert ids_of(bob.get(ROUTE, params={"node_id": north_node.node_id})) == []
    with hub.client(seeded.north_admin.token) as manager:  # listen:manage on north: sees it in the active list
        assert sid in ids_of(manager.get(f"{ROUTE}/active", params={"node_id": north_node.node_id}))
        assert manager.get(f"{ROUTE}/{sid}").json()["data"]["actions"]["disconnect"] == {"allowed": True, "reason": None}
    with hub.admin() as admin:
        done = admin.post(f"{ROUTE}/{sid}/disconnect", json={"reason": "the stage mic is private"})
        assert done.status_code == 200, done.text
        me = admin.get("/api/v1/auth/me").json()["data"]["user"]
        events = admin.get("/api/v1/audit-events", params={"action": "listen_session.disconnect", "target_id": sid}).json()[
            "data"
        ]
    ended = done.json()["data"]
    assert ended["state"] == "terminated" and ended["end_reason"] == "disconnected" and ended["ended_at"], ended
    assert ended["ended_by"]["id"] == me["id"] and ended["ended_by"]["reason"] == "the stage mic is private"
    assert [(e["actor"]["id"], e["reason"], e["outcome"]) for e in events] == [(me["id"], "the stage mic is private", "success")]
    with hub.client(seeded.ann.token) as ann:  # its owner sees how and why it ended
        after = ann.get(f"{ROUTE}/{sid}").json()["data"]
        assert after["state"] == "terminated" and after["ended_by"]["reason"] == "the stage mic is private"
        assert after["actions"]["disconnect"]["allowed"] is False
        assert ids_of(ann.get(f"/api/v1/nodes/{north_node.node_id}/listen")) == []
