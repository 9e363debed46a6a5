"""My notifications and a channel's delivery log: lists, facets, exports and details over the outbox, within the caller's sites.

The notifier writes these rows; here they are seeded straight into the running hub's database.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Notification, NotificationChannel, NotificationDelivery
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess

PASSWORD = "notifications-password-1"
LATER = timedelta(days=1)  # queued rows wait this long, so a running notifier leaves them alone


@dataclass
class Seeded:
    run: str  # a word in every title of this seeding, for `q`
    north_channel: str
    south_channel: str
    hub_channel: str
    gone_channel: str  # deleted: its notifications keep its id, without a name
    north: list[str]  # notification ids, oldest first
    south: list[str]
    hub_wide: list[str]
    gone: list[str]
    deliveries: list[str]  # the north channel's attempts, oldest first
    test_delivery: str


def channel(name: str, site: str | None) -> str:
    row = NotificationChannel.create(
        id=new_id("nch"), name=name, kind="webhook", site=site, enabled=False, config={"url": "http://127.0.0.1:9/"}
    )
    return row.id


def notification(channel_id: str, site: str | None, title: str, **fields: object) -> str:
    values: dict = {
        "kind": "health.opened",
        "severity": "warning",
        "opened": True,
        "thread_key": f"health:{uuid.uuid4().hex[:8]}",
        "item_count": 1,
        "message": {},
        "state": "delivered",
        "attempts": 1,
        **fields,
    }
    if values["state"] in ("queued", "retrying"):
        values.setdefault("next_attempt_at", utcnow() + LATER)
    return Notification.create(id=new_id("ntf"), channel_id=channel_id, site=site, title=title, **values).id


def delivery(channel_id: str, notification_id: str | None, attempt: int, outcome: str, **fields: object) -> str:
    values: dict = {"latency_ms": 12.5, "response_code": 200, "response_message": "HTTP 200", **fields}
    return NotificationDelivery.create(
        id=new_id("ndl"), channel_id=channel_id, notification_id=notification_id, attempt=attempt, outcome=outcome, **values
    ).id


def seed(hub: HubProcess) -> Seeded:
    for site in ("north", "south"):
        hub.ensure_site(site)
    run = uuid.uuid4().hex[:8]
    with hub_database(hub):
        north_channel = channel(f"north-{run}", "north")
        south_channel = channel(f"south-{run}", "south")
        hub_channel = channel(f"hub-{run}", None)
        gone_channel = new_id("nch")
        since = utcnow() - timedelta(minutes=5)
        message = {
            "kind": "node.offline",
            "title": f"2 boxes of north went offline {run}",
            "severity": "critical",
            "opened": True,
            "site": "north",
            "since": since.isoformat() + "+00:00",
            "thread_key": f"storm:{run}",
            "items": [
                {"title": "Stage left offline", "node_id": "nod_a", "node_name": "Stage left", "channel": None, "url": "u1"},
                {"title": "Stage right offline", "node_id": "nod_b", "node_name": "Stage right", "channel": None, "url": "u2"},
            ],
            "url": "http://hub/#/nodes",
            "text": "",
        }
        north = [
            notification(north_channel, "north", f"silence on stage {run}", severity="critical"),
            notification(
                north_channel,
                "north",
                message["title"],
                kind="node.offline",
                severity="critical",
                item_count=2,
                message=message,
                thread_key=f"storm:{run}",
                state="failed",
                attempts=2,
                last_error="HTTP 400: bad payload",
            ),
            notification(
                north_channel, "north", f"silence over {run}", opened=False, state="queued", attempts=0, deferred_reason="quiet"
            ),
        ]
        south = [notification(south_channel, "south", f"disk low {run}", kind="health.opened", severity="info")]
        hub_wide = [notification(hub_channel, None, f"notify failed {run}", kind="health.opened", state="retrying")]
        gone = [notification(gone_channel, "north", f"to a deleted channel {run}")]
        deliveries = [
            delivery(north_channel, north[0], 1, "delivered"),
            delivery(north_channel, north[1], 1, "retry", response_code=503, response_message="HTTP 503"),
            delivery(north_channel, north[1], 2, "failed", response_code=400, response_message="HTTP 400: bad payload"),
        ]
        test_delivery = delivery(north_channel, None, 1, "delivered", test=True)
        delivery(south_channel, south[0], 1, "delivered")
    return Seeded(
        run, north_channel, south_channel, hub_channel, gone_channel, north, south, hub_wide, gone, deliveries, test_delivery
    )


@pytest.fixture(scope="module")
def seeded(hub: HubProcess) -> Seeded:
    return seed(hub)


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = f"nt-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": roles, **({"sites": sites} if sites else {})}
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


@pytest.fixture(scope="module")
def north_viewer(hub: HubProcess, seeded: Seeded) -> str:
    return user_token(hub, ["viewer"], ["north"])


@pytest.fixture(scope="module")
def viewer(hub: HubProcess, seeded: Seeded) -> str:
    return user_token(hub, ["viewer"])


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# -- the list -------------------------------------------------------------------------------------


def test_the_list_is_newest_first_with_channel_names_and_null_for_a_deleted_channel(
    hub: HubProcess, seeded: Seeded, viewer: str
) -> None:
    with hub.client(viewer) as client:
        response = client.get("/api/v1/notifications", params={"q": seeded.run, "limit": 200})
    items = response.json()["data"]
    every = seeded.north + seeded.south + seeded.hub_wide + seeded.gone
    assert [i["id"] for i in items] == sorted(every, reverse=True)
    by_id = {i["id"]: i for i in items}
    assert by_id[seeded.north[0]]["channel_name"] == f"north-{seeded.run}"
    assert by_id[seeded.hub_wide[0]]["channel_name"] == f"hub-{seeded.run}"
    assert by_id[seeded.gone[0]]["channel_name"] is None and by_id[seeded.gone[0]]["channel_id"] == seeded.gone_channel
    storm = by_id[seeded.north[1]]
    assert storm["item_count"] == 2 and storm["state"] == "failed" and storm["last_error"] == "HTTP 400: bad payload"
    assert set(storm) == {
        "id", "channel_id", "channel_name", "site", "kind", "severity", "opened", "thread_key", "title", "item_count",
        "state", "attempts", "next_attempt_at", "first_attempt_at", "delivered_at", "last_error", "deferred_reason",
        "created_at",
    }  # fmt: skip
    assert by_id[seeded.north[2]]["deferred_reason"] == "quiet" and by_id[seeded.north[2]]["next_attempt_at"].endswith("Z")


def test_pages_follow_the_cursor_to_the_end(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    seen: list[str] = []
    params: dict = {"q": seeded.run, "limit": 2}
    with hub.client(viewer) as client:
        while True:
            body = client.get("/api/v1/notifications", params=params).json()
            seen += [i["id"] for i in body["data"]]
            if body["meta"]["next_cursor"] is None:
                break
            params["cursor"] = body["meta"]["next_cursor"]
    assert seen == sorted(seeded.north + seeded.south + seeded.hub_wide + seeded.gone, reverse=True)


def test_filters_narrow_the_list(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    q = seeded.run
    with hub.client(viewer) as client:

        def listed(**params: object) -> set[str]:
            return set(ids_of(client.get("/api/v1/notifications", params={"q": q, "limit": 200, **params})))

        assert listed(channel_id=seeded.north_channel) == set(seeded.north)
        assert listed(state="failed") == {seeded.north[1]}
        assert listed(state=["queued", "retrying"]) == {seeded.north[2], seeded.hub_wide[0]}
        assert listed(severity="critical") == set(seeded.north[:2])
        assert listed(opened="false") == {seeded.north[2]}
        assert listed(kind="node.offline") == {seeded.north[1]}
        assert listed(site="south") == set(seeded.south)
        assert listed(q=f"silence over {q}") == {seeded.north[2]}
        assert listed(**{"from": iso(utcnow() + timedelta(hours=1))}) == set()
        assert listed(to=iso(utcnow() + timedelta(hours=1))) == set(seeded.north + seeded.south + seeded.hub_wide + seeded.gone)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"severity": "loud"}, "severity"),
        ({"opened": "yes"}, "opened"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"from": "yesterday"}, "from"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_filters_are_a_400_naming_them(hub: HubProcess, seeded: Seeded, params: dict, field: str) -> None:
    with hub.admin() as admin:
        for path in ("/api/v1/notifications", "/api/v1/notifications/facets", "/api/v1/notifications/export"):
            response = admin.get(path, params=params)
            assert response.status_code == 400, (path, response.text)
            assert field in response.json()["error"]["fields"], (path, response.text)


# -- site scope -----------------------------------------------------------------------------------


def test_a_site_limited_reader_sees_only_its_sites_and_never_hub_wide_notifications(
    hub: HubProcess, seeded: Seeded, north_viewer: str
) -> None:
    with hub.client(north_viewer) as client:
        listed = ids_of(client.get("/api/v1/notifications", params={"q": seeded.run, "limit": 200}))
        assert listed == sorted(seeded.north + seeded.gone, reverse=True)
        facets = client.get("/api/v1/notifications/facets", params={"q": seeded.run}).json()["data"]
        assert facets["site"] == [{"value": "north", "count": 4}]
        exported = client.get("/api/v1/notifications/export", params={"q": seeded.run, "format": "ndjson"})
        assert {json.loads(line)["id"] for line in exported.text.splitlines()} == set(seeded.north + seeded.gone)
        for hidden in seeded.south + seeded.hub_wide:
            response = client.get(f"/api/v1/notifications/{hidden}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert client.get(f"/api/v1/notifications/{seeded.north[0]}").status_code == 200


def test_the_overview_counts_the_outbox_within_the_callers_sites(hub: HubProcess, north_viewer: str, viewer: str) -> None:
    def figures(token: str) -> dict:
        with hub.client(token) as client:
            response = client.get("/api/v1/notifications/overview")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    before = {"all": figures(viewer), "north": figures(north_viewer)}
    with hub_database(hub):
        north = channel(f"north-overview-{uuid.uuid4().hex[:6]}", "north")
        south = channel(f"south-overview-{uuid.uuid4().hex[:6]}", "south")
        oldest = utcnow() - timedelta(days=3)
        notification(north, "north", "waiting", state="queued", created_at=oldest)
        notification(north, "north", "trying again", state="retrying")
        notification(north, "north", "sent", state="delivered", updated_at=utcnow())
        notification(south, "south", "sent south", state="delivered", updated_at=utcnow())
        notification(south, "south", "failed south", state="failed", updated_at=utcnow())
        notification(south, None, "hub-wide waiting", state="queued")
    after = {"all": figures(viewer), "north": figures(north_viewer)}
    counted = ("queued", "retrying", "delivered_24h", "failed_24h")
    grew = {who: {k: after[who][k] - before[who][k] for k in counted} for who in after}
    assert grew["all"] == {"queued": 2, "retrying": 1, "delivered_24h": 2, "failed_24h": 1}
    assert grew["north"] == {"queued": 1, "retrying": 1, "delivered_24h": 1, "failed_24h": 0}
    assert after["north"]["oldest_queued_at"] == iso(oldest)
    assert {"in_flight", "dropped_notices"} <= set(after["all"]) and "in_flight" not in after["north"]


# -- facets and export ----------------------------------------------------------------------------


def test_facets_count_the_matching_notifications(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    with hub.client(viewer) as client:
        facets = client.get("/api/v1/notifications/facets", params={"q": seeded.run}).json()["data"]
        assert set(facets) == {"state", "kind", "severity", "channel_id", "site", "opened"}
        assert {f["value"]: f["count"] for f in facets["state"]} == {"delivered": 3, "failed": 1, "queued": 1, "retrying": 1}
        assert {f["value"]: f["count"] for f in facets["opened"]} == {True: 5, False: 1}
        assert {f["value"]: f["count"] for f in facets["site"]} == {"north": 4, "south": 1, None: 1}
        chosen = client.get("/api/v1/notifications/facets", params={"q": seeded.run, "fields": "severity,opened"})
        assert set(chosen.json()["data"]) == {"severity", "opened"}
        unknown = client.get("/api/v1/notifications/facets", params={"fields": "title"})
        assert unknown.status_code == 400 and "fields" in unknown.json()["error"]["fields"]


def test_export_streams_csv_and_ndjson_and_a_posted_selection(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    with hub.client(viewer) as client:
        response = client.get("/api/v1/notifications/export", params={"q": seeded.run, "channel_id": seeded.north_channel})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert 'filename="notifications.csv"' in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["id"] for r in rows] == sorted(seeded.north, reverse=True)
        assert rows[0]["channel_name"] == f"north-{seeded.run}" and rows[0]["opened"] == "false"
        assert list(rows[0]) == [
            "id", "channel_id", "channel_name", "site", "kind", "severity", "opened", "title", "item_count", "state",
            "attempts", "first_attempt_at", "delivered_at", "last_error", "deferred_reason", "created_at",
        ]  # fmt: skip
        posted = client.post(
            "/api/v1/notifications/export",
            params={"format": "ndjson"},
            json={"ids": [seeded.north[0], seeded.gone[0], seeded.south[0]], "filters": {"site": "north"}},
        )
        assert posted.status_code == 200 and posted.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in posted.text.splitlines()]
        assert [(x["id"], x["channel_name"]) for x in lines] == sorted(
            [(seeded.north[0], f"north-{seeded.run}"), (seeded.gone[0], None)], reverse=True
        )
        bad = client.post("/api/v1/notifications/export", json={"filters": {"colour": "red"}})
        assert bad.status_code == 400 and "colour" in bad.json()["error"]["fields"]
        assert client.get("/api/v1/notifications/export", params={"format": "xml"}).status_code == 400


# -- one notification -----------------------------------------------------------------------------


def test_the_detail_has_its_channel_items_and_attempts_oldest_first(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    with hub.client(viewer) as client:
        detail = client.get(f"/api/v1/notifications/{seeded.north[1]}").json()["data"]
        assert detail["channel_name"] == f"north-{seeded.run}" and detail["channel_kind"] == "webhook"
        assert [i["node_name"] for i in detail["items"]] == ["Stage left", "Stage right"]
        assert detail["url"] == "http://hub/#/nodes" and detail["since"].endswith("Z")
        assert [(d["attempt"], d["outcome"], d["response_code"]) for d in detail["deliveries"]] == [
            (1, "retry", 503),
            (2, "failed", 400),
        ]
        assert detail["deliveries"][0]["notification_id"] == seeded.north[1]
        gone = client.get(f"/api/v1/notifications/{seeded.gone[0]}").json()["data"]
        assert gone["channel_name"] is None and gone["channel_kind"] is None
        assert gone["items"] == [] and gone["deliveries"] == []
        missing = client.get("/api/v1/notifications/ntf_nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# -- a channel's delivery log ---------------------------------------------------------------------


def test_a_channels_deliveries_are_newest_first_in_pages_and_filtered(hub: HubProcess, seeded: Seeded, viewer: str) -> None:
    path = f"/api/v1/notification-channels/{seeded.north_channel}/deliveries"
    with hub.client(viewer) as client:
        every = [*seeded.deliveries, seeded.test_delivery]
        assert ids_of(client.get(path)) == sorted(every, reverse=True)
        first = client.get(path, params={"limit": 3}).json()
        assert [d["id"] for d in first["data"]] == sorted(every, reverse=True)[:3]
        rest = client.get(path, params={"limit": 3, "cursor": first["meta"]["next_cursor"]}).json()
        assert [d["id"] for d in rest["data"]] == sorted(every)[:1] and rest["meta"]["next_cursor"] is None
        assert ids_of(client.get(path, params={"outcome": "failed"})) == [seeded.deliveries[2]]
        assert ids_of(client.get(path, params={"test": "true"})) == [seeded.test_delivery]
        assert ids_of(client.get(path, params={"test": "false", "outcome": ["delivered", "retry"]})) == sorted(
            seeded.deliveries[:2], reverse=True
        )
        one = client.get(path, params={"outcome": "failed"}).json()["data"][0]
        assert one == {
            "id": seeded.deliveries[2],
            "channel_id": seeded.north_channel,
            "notification_id": seeded.north[1],
            "attempt": 2,
            "test": False,
            "at": one["at"],
            "outcome": "failed",
            "latency_ms": 12.5,
            "response_code": 400,
            "response_message": "HTTP 400: bad payload",
        }
        for params, field in (({"outcome": "lost"}, "outcome"), ({"test": "yes"}, "test"), ({"channel_id": "x"}, "channel_id")):
            bad = client.get(path, params=params)
            assert bad.status_code == 400 and field in bad.json()["error"]["fields"], bad.text


def test_a_channel_outside_the_callers_sites_has_no_delivery_log(hub: HubProcess, seeded: Seeded, north_viewer: str) -> None:
    with hub.client(north_viewer) as client:
        assert client.get(f"/api/v1/notification-channels/{seeded.north_channel}/deliveries").status_code == 200
        for hidden in (seeded.south_channel, seeded.hub_channel, "nch_nothing"):
            response = client.get(f"/api/v1/notification-channels/{hidden}/deliveries")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_reading_needs_notify_read(hub: HubProcess, seeded: Seeded) -> None:
    token = user_token(hub, ["viewer"])
    with hub.client() as anonymous:
        assert anonymous.get("/api/v1/notifications").status_code == 401
    with hub.admin() as admin:  # a key without notify:read
        key = admin.post("/api/v1/auth/keys", json={"name": f"nt-{seeded.run}", "kind": "service", "scopes": ["node:read"]})
    with hub.client(key.json()["data"]["secret"]) as client:
        refused = client.get("/api/v1/notifications")
        assert refused.status_code == 403 and refused.json()["error"]["required"] == ["notify:read"]
        refused = client.get(f"/api/v1/notification-channels/{seeded.north_channel}/deliveries")
        assert refused.status_code == 403
    with hub.client(token) as viewer:
        assert viewer.get("/api/v1/notifications").status_code == 200
