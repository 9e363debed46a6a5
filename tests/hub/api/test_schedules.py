"""Schedules as objects: create/read/change/delete with field-level 400s, the site's zone by default, versions,
list filters, facets and export, actions, audit, site scope, and bodies that never make a 500."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.harness import HubProcess
from tests.hub.api.schedules import (
    SCHEDULES,
    audit_actions,
    body,
    create,
    enroll,
    sites_with_places,
    soon,
    unique,
    user_token,
)

_sites = sites_with_places()


def test_a_schedule_is_created_in_its_sites_zone_and_read_back_with_its_next_occurrence(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    start = soon(5)
    schedule = create(hub, **body([node], start_local=start, description="weekday mornings", tags=["birds"]))
    assert schedule["id"].startswith("sch_")
    assert (schedule["site"], schedule["time_zone"], schedule["version"], schedule["enabled"]) == (
        "berlin",
        "Europe/Berlin",
        1,
        True,
    )
    assert schedule["target"] == {"node_ids": [node]} and schedule["on_conflict"] == "reject"
    assert schedule["profile_id"] == "default" and schedule["created_by"]["name"] == "admin"
    nxt = schedule["next_occurrence"]
    assert nxt["local_start"].startswith(start) and nxt["local_start"][19:] in ("+01:00", "+02:00")
    with hub.admin() as admin:
        detail = admin.get(f"{SCHEDULES}/{schedule['id']}").json()["data"]
        actions = admin.get(f"{SCHEDULES}/{schedule['id']}/actions").json()["data"]
    assert detail["node_ids"] == [node] and detail["actions"] == actions
    assert actions["run_now"] == {"allowed": True, "reason": None}
    assert actions["enable"] == {"allowed": False, "reason": "the schedule is enabled"}
    assert actions["skip_next"]["allowed"] and actions["disable"]["allowed"] and actions["delete"]["allowed"]
    assert audit_actions(hub, schedule["id"]) == ["schedule.create"]
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": schedule["id"]}).json()["data"]
    assert [e["site"] for e in events] == ["berlin"]  # a site-limited audit reader sees its sites' schedule changes


def test_a_given_zone_wins_and_targets_in_two_sites_need_one(hub: HubProcess) -> None:
    a, b = enroll(hub, "berlin"), enroll(hub, "newyork")
    with hub.admin() as admin:
        refused = admin.post(SCHEDULES, json=body([a, b]))
        assert refused.status_code == 400, refused.text
        assert set(refused.json()["error"]["fields"]) == {"time_zone"}
    schedule = create(hub, **body([a, b], time_zone="Australia/Lord_Howe"))
    assert (schedule["site"], schedule["time_zone"]) == (None, "Australia/Lord_Howe")


@pytest.mark.parametrize(
    ("over", "fields"),
    [
        ({"rrule": "FREQ=SOMETIMES"}, {"rrule"}),
        ({"rrule": "FREQ=DAILY;UNTIL=20271231T235959Z"}, {"rrule"}),
        ({"rrule": "DTSTART:20270101T000000\nRRULE:FREQ=DAILY"}, {"rrule"}),
        ({"time_zone": "Mars/Olympus_Mons"}, {"time_zone"}),
        ({"start_local": "2027-01-04T09:00:00+01:00"}, {"start_local"}),
        ({"start_local": "next tuesday"}, {"start_local"}),
        ({"duration_s": 0}, {"duration_s"}),
        ({"duration_s": 8 * 86400}, {"duration_s"}),
        ({"rrule": "FREQ=HOURLY", "duration_s": 7200}, {"duration_s"}),
        # COUNT counts from the first start, so such a rule is walked from 2020: too long a walk.
        (
            {"start_local": "2020-01-01T09:00:00", "rrule": "FREQ=MINUTELY;INTERVAL=5;COUNT=900000", "duration_s": 60},
            {"start_local"},
        ),
        ({"exdates": ["2027-01-05"]}, {"exdates"}),
        ({"valid_from": "2027-02-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"}, {"valid_until"}),
        ({"valid_from": "tomorrow"}, {"valid_from"}),
        ({"profile_id": "no-such-profile"}, {"profile_id"}),
        ({"channel_map_id": "cmt_missing"}, {"channel_map_id"}),
        ({"solar": {"event": "moonrise"}}, {"solar.event"}),
        ({"solar": {"event": "sunrise", "offset_minutes": 9999}}, {"solar.offset_minutes"}),
        ({"name": " padded "}, {"name"}),
        ({"metadata": {"": 1}}, {"metadata."}),
        ({"tags": ["no spaces"]}, {"tags"}),
        ({"target": {"node_ids": ["nod_missing"]}}, {"target.node_ids"}),
        ({"target": {"node_ids": []}}, {"target.node_ids"}),
        ({"target": {"selector": {"site": "atlantis", "tags": []}}}, {"target.selector.site"}),
        ({"target": {}}, {"target"}),
        ({"on_conflict": "maybe"}, {"on_conflict"}),
        ({"duration_s": "long"}, {"duration_s"}),
        ({"surprise": True}, {"surprise"}),
        (
            {"rrule": "FREQ=SOMETIMES", "time_zone": "Nowhere/Land", "duration_s": -1, "profile_id": "nope"},
            {"rrule", "time_zone", "duration_s", "profile_id"},
        ),
    ],
)
def test_an_invalid_schedule_names_each_problem_and_nothing_is_stored(
    hub: HubProcess, over: dict[str, Any], fields: set[str]
) -> None:
    node = enroll(hub, "berlin")
    sent = body([node], **over)
    with hub.admin() as admin:
        response = admin.post(SCHEDULES, json=sent)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and set(error["fields"]) == fields, error
        listed = admin.get(SCHEDULES, params={"q": sent["name"]}).json()["data"]
    assert listed == []


def test_a_utc_until_is_explained_in_local_time(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    with hub.admin() as admin:
        response = admin.post(SCHEDULES, json=body([node], rrule="FREQ=DAILY;UNTIL=20271231T235959Z"))
    assert "without Z" in response.json()["error"]["fields"]["rrule"]


def test_patch_changes_the_fields_given_at_the_version_read(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node]))
    url = f"{SCHEDULES}/{schedule['id']}"
    with hub.admin() as admin:
        changed = admin.patch(url, json={"version": 1, "name": "Evening", "duration_s": 1200, "enabled": False})
        assert changed.status_code == 200, changed.text
        after = changed.json()["data"]
        assert (after["name"], after["duration_s"], after["enabled"], after["version"]) == ("Evening", 1200, False, 2)
        assert after["next_occurrence"] is None  # disabled
        stale = admin.patch(url, json={"version": 1, "name": "Late"})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict", stale.text
        no_version = admin.patch(url, json={"name": "Late"})
        assert no_version.status_code == 400 and set(no_version.json()["error"]["fields"]) == {"version"}
        same = admin.patch(url, json={"version": 2, "name": "Evening"})
        assert same.status_code == 200 and same.json()["data"]["version"] == 2  # nothing changed: no new version
        bad = admin.patch(url, json={"version": 2, "rrule": "FREQ=NEVER", "time_zone": "Nowhere/Land"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"rrule", "time_zone"}
        actions = admin.get(f"{url}/actions").json()["data"]
        assert actions["enable"]["allowed"] and not actions["disable"]["allowed"]
        assert actions["skip_next"] == {"allowed": False, "reason": "the schedule is disabled"}
        assert admin.get(url).json()["data"]["name"] == "Evening"
    assert audit_actions(hub, schedule["id"]) == ["schedule.create", "schedule.update"]


def test_delete_removes_it_and_is_audited(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node]))
    url = f"{SCHEDULES}/{schedule['id']}"
    with hub.admin() as admin:
        assert admin.delete(url).status_code == 204
        assert admin.get(url).status_code == 404
        assert admin.delete(url).status_code == 404
    assert audit_actions(hub, schedule["id"]) == ["schedule.create", "schedule.delete"]


def test_a_selector_targets_the_sites_tagged_nodes_including_ones_added_later(hub: HubProcess) -> None:
    tag = unique("roof")
    first = enroll(hub, "newyork", [tag])
    enroll(hub, "newyork")  # untagged: not targeted
    schedule = create(hub, **body(target={"selector": {"site": "newyork", "tags": [tag]}}))
    assert (schedule["site"], schedule["time_zone"]) == ("newyork", "America/New_York")
    later = enroll(hub, "newyork", [tag])
    with hub.admin() as admin:
        detail = admin.get(f"{SCHEDULES}/{schedule['id']}").json()["data"]
    assert detail["node_ids"] == sorted([first, later])


def test_list_filters_facets_and_export(hub: HubProcess) -> None:
    node = enroll(hub, "newyork")
    name = unique("Exported")
    schedule = create(hub, **body([node], name=name, on_conflict="allow", enabled=False))
    with hub.admin() as admin:
        listed = admin.get(SCHEDULES, params={"site": "newyork", "enabled": "false", "on_conflict": "allow"}).json()["data"]
        assert schedule["id"] in [s["id"] for s in listed]
        assert all(s["site"] == "newyork" and not s["enabled"] for s in listed)
        assert admin.get(SCHEDULES, params={"q": name}).json()["data"][0]["id"] == schedule["id"]
        assert admin.get(SCHEDULES, params={"enabled": "maybe"}).status_code == 400
        assert admin.get(SCHEDULES, params={"time_zone": "Nowhere/Land"}).status_code == 400
        facets = admin.get(f"{SCHEDULES}/facets").json()["data"]
        assert set(facets) == {"site", "enabled", "time_zone", "profile_id", "on_conflict"}
        assert {"value": "newyork", "count": facets["site"][0]["count"]} in facets["site"] or any(
            f["value"] == "newyork" for f in facets["site"]
        )
        exported = admin.get(f"{SCHEDULES}/export", params={"format": "csv", "q": name})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in rows] == [schedule["id"]]
        assert rows[0]["time_zone"] == "America/New_York" and rows[0]["enabled"] == "false"
        selected = admin.post(f"{SCHEDULES}/export", params={"format": "ndjson"}, json={"ids": [schedule["id"]]})
        assert selected.status_code == 200 and selected.text.count("\n") == 1


def test_a_site_limited_operator_sees_and_targets_only_its_sites(hub: HubProcess) -> None:
    here, there = enroll(hub, "berlin"), enroll(hub, "newyork")
    theirs = create(hub, **body([there]))
    token = user_token(hub, ["operator"], ["berlin"])
    with hub.client(token) as operator:
        mine = operator.post(SCHEDULES, json=body([here]))
        assert mine.status_code == 201, mine.text
        listed = {s["id"] for s in operator.get(SCHEDULES, params={"limit": 200}).json()["data"]}
        assert mine.json()["data"]["id"] in listed and theirs["id"] not in listed
        assert operator.get(f"{SCHEDULES}/{theirs['id']}").status_code == 404
        assert operator.patch(f"{SCHEDULES}/{theirs['id']}", json={"version": 1, "name": "x"}).status_code == 404
        assert operator.delete(f"{SCHEDULES}/{theirs['id']}").status_code == 404
        other_node = operator.post(SCHEDULES, json=body([there]))
        assert other_node.status_code == 400 and set(other_node.json()["error"]["fields"]) == {"target.node_ids"}
        everywhere = operator.post(SCHEDULES, json=body(target={"selector": {"site": None, "tags": ["x"]}}))
        assert everywhere.status_code == 400 and set(everywhere.json()["error"]["fields"]) == {"target.selector.site"}
        elsewhere = operator.post(SCHEDULES, json=body(target={"selector": {"site": "newyork", "tags": []}}))
        assert elsewhere.status_code == 400 and set(elsewhere.json()["error"]["fields"]) == {"target.selector.site"}
        moved = operator.patch(f"{SCHEDULES}/{mine.json()['data']['id']}", json={"version": 1, "target": {"node_ids": [there]}})
        assert moved.status_code == 400, moved.text


def test_a_viewer_reads_but_does_not_write(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node]))
    token = user_token(hub, ["viewer"])
    with hub.client(token) as viewer:
        assert viewer.get(f"{SCHEDULES}/{schedule['id']}").status_code == 200
        actions = viewer.get(f"{SCHEDULES}/{schedule['id']}/actions").json()["data"]
        assert actions["delete"]["allowed"] is False and "schedule:manage" in actions["delete"]["reason"]
        assert viewer.post(SCHEDULES, json=body([node])).status_code == 403
        assert viewer.post(f"{SCHEDULES}/{schedule['id']}/skip-next").status_code == 403


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"null",
        b'"text"',
        b"{",
        b'{"name": 5}',
        b'{"target": {"node_ids": "nod_x"}}',
        b'{"target": {"selector": []}}',
        b'{"solar": "sunrise"}',
        b'{"exdates": [1, 2]}',
        b'{"duration_s": 1e400}',
        b'{"name": "x", "target": {"node_ids": ["a"]}, "start_local": "9999-12-31T23:59:59", "duration_s": 1}',
        b'{"name": "x", "target": {"node_ids": ["a"]}, "start_local": "0001-01-01T00:00:00", "duration_s": 1}',
    ],
)
def test_bad_bodies_are_400_never_500(hub: HubProcess, raw: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    with hub.admin() as admin:
        created = admin.post(SCHEDULES, content=raw, headers=headers)
        assert created.status_code == 400, created.text
        preview = admin.post(f"{SCHEDULES}/preview", content=raw, headers=headers)
        assert preview.status_code in (200, 400), preview.text
