"""Schedules in time: occurrences in local and UTC time across daylight saving, solar anchors (and polar days
without one), conflicts between schedules on a node, skip-next and unskip, run-now, the preview and the week view."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jsonschema
import yaml
from referencing import Registry, Resource

from tests.harness import HubProcess, wait_for
from tests.hub.api.schedules import (
    SCHEDULES,
    audit_actions,
    body,
    create,
    enroll,
    enroll_with_credential,
    job_commands,
    last_sunday,
    sites_with_places,
    soon,
    unique,
)

_sites = sites_with_places()


def occurrences(hub: HubProcess, schedule_id: str, **params: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"{SCHEDULES}/{schedule_id}/occurrences", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def day_window(first: date, days: int) -> dict[str, str]:
    return {"from": f"{first.isoformat()}T00:00:00Z", "to": f"{(first + timedelta(days=days)).isoformat()}T00:00:00Z"}


# -- local time, daylight saving, solar anchors ---------------------------------------------------------------


def test_occurrences_keep_the_local_time_across_daylight_saving_in_berlin(hub: HubProcess) -> None:
    year = datetime.now(UTC).year + 1
    spring, autumn = last_sunday(year, 3), last_sunday(year, 10)
    node = enroll(hub, "berlin")
    start = spring - timedelta(days=2)
    schedule = create(hub, **body([node], start_local=f"{start.isoformat()}T02:30:00", rrule="FREQ=DAILY", duration_s=3600))
    spring_days = occurrences(hub, schedule["id"], **day_window(start, 4))["data"]
    assert [(o["local_start"], o["start_utc"], o["state"]) for o in spring_days] == [
        (f"{start.isoformat()}T02:30:00+01:00", f"{start.isoformat()}T01:30:00.000Z", "planned"),
        (
            f"{(start + timedelta(days=1)).isoformat()}T02:30:00+01:00",
            f"{(start + timedelta(days=1)).isoformat()}T01:30:00.000Z",
            "planned",
        ),
        (f"{spring.isoformat()}T03:00:00+02:00", f"{spring.isoformat()}T01:00:00.000Z", "planned"),
        (
            f"{(spring + timedelta(days=1)).isoformat()}T02:30:00+02:00",
            f"{(spring + timedelta(days=1)).isoformat()}T00:30:00.000Z",
            "planned",
        ),
    ]
    assert "does not exist" in spring_days[2]["note"] and spring_days[0]["note"] is None
    assert all(o["id"] is None and o["recordings"] == [] and o["run_now"] is False for o in spring_days)
    assert spring_days[2]["end_utc"] == f"{spring.isoformat()}T02:00:00.000Z"  # an hour of elapsed time
    autumn_day = occurrences(hub, schedule["id"], **day_window(autumn, 1))["data"]
    assert [(o["local_start"], o["start_utc"]) for o in autumn_day] == [
        (f"{autumn.isoformat()}T02:30:00+02:00", f"{autumn.isoformat()}T00:30:00.000Z")  # the first of the two 02:30s
    ]
    assert "occurs twice" in autumn_day[0]["note"]


def test_exdates_leave_out_their_days(hub: HubProcess) -> None:
    node = enroll(hub, "newyork")
    first = date.fromisoformat(soon(4)[:10])
    skipped = (first + timedelta(days=1)).isoformat()
    schedule = create(hub, **body([node], start_local=f"{first.isoformat()}T09:00:00", exdates=[f"{skipped}T09:00"]))
    assert schedule["exdates"] == [f"{skipped}T09:00:00"]
    days = [o["local_start"][:10] for o in occurrences(hub, schedule["id"], **day_window(first, 3))["data"]]
    assert days == [first.isoformat(), (first + timedelta(days=2)).isoformat()]


def test_a_solar_anchor_starts_relative_to_sunrise_at_the_site(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(
        hub, **body([node], start_local=soon(3), rrule=None, solar={"event": "sunrise", "offset_minutes": -30}, duration_s=7200)
    )
    assert schedule["solar"] == {"event": "sunrise", "offset_minutes": -30}
    nxt = schedule["next_occurrence"]
    local = datetime.fromisoformat(nxt["local_start"])
    assert local.date().isoformat() == soon(3)[:10] and 4 <= local.hour <= 8  # Berlin sunrise less half an hour
    listed = occurrences(hub, schedule["id"], **day_window(local.date(), 2))
    assert len(listed["data"]) == 2 and listed["absent"] == []
    assert listed["data"][0]["note"].startswith("sunrise ") and listed["data"][0]["note"].endswith("- 30 min")


def test_a_polar_night_gives_no_sunrise_and_says_why(hub: HubProcess) -> None:
    year = datetime.now(UTC).year + 1
    node = enroll(hub, "svalbard")
    schedule = create(
        hub, **body([node], start_local=f"{year}-12-10T00:00:00", rrule=None, solar={"event": "sunrise"}, duration_s=3600)
    )
    assert schedule["time_zone"] == "Arctic/Longyearbyen"
    listed = occurrences(hub, schedule["id"], **day_window(date(year, 12, 15), 3))
    assert listed["data"] == []
    assert [a["day"] for a in listed["absent"]] == [f"{year}-12-{d}" for d in (15, 16, 17)]
    assert all("polar night" in a["reason"] for a in listed["absent"])
    with hub.admin() as admin:
        preview = admin.post(
            f"{SCHEDULES}/preview",
            json=body([node], start_local=f"{year}-12-10T00:00:00", rrule=None, solar={"event": "sunrise"}, duration_s=3600),
        ).json()["data"]
    assert preview["fields"] == {} and any("polar night" in a["reason"] for a in preview["absent"])


def test_occurrence_parameters_are_checked(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node]))
    url = f"{SCHEDULES}/{schedule['id']}/occurrences"
    with hub.admin() as admin:
        for params, field in (
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"from": "yesterday"}, "from"),
            ({"from": "2027-01-02T00:00:00Z", "to": "2027-01-01T00:00:00Z"}, "to"),
            ({"from": "2027-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"}, "to"),
        ):
            response = admin.get(url, params=params)
            assert response.status_code == 400 and field in response.json()["error"]["fields"], (params, response.text)
        assert admin.get(f"{SCHEDULES}/sch_missing/occurrences").status_code == 404
    limited = occurrences(hub, schedule["id"], limit=2)
    assert len(limited["data"]) == 2 and limited["meta"]["limit"] == 2


# -- conflicts -----------------------------------------------------------------------------------------------


def test_overlapping_takes_on_a_shared_node_are_a_conflict_unless_the_request_says_how(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    first = create(hub, **body([node], name=unique("Morning"), start_local=soon(3), duration_s=1800))
    clashing = body([node], start_local=soon(3).replace("09:00", "09:15"), duration_s=1800)
    with hub.admin() as admin:
        refused = admin.post(SCHEDULES, json=clashing)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "schedule_conflict" and first["name"] in error["message"]
        [conflict] = error["conflicts"]
        assert (conflict["schedule_id"], conflict["name"], conflict["node_ids"]) == (first["id"], first["name"], [node])
        assert len(conflict["clashes"]) == 5
        clash = conflict["clashes"][0]
        assert clash["this"]["start_utc"] < clash["other"]["end_utc"] and clash["other"]["start_utc"] < clash["this"]["end_utc"]
        assert admin.get(SCHEDULES, params={"q": clashing["name"]}).json()["data"] == []
        for resolution in ("skip", "allow"):
            accepted = admin.post(SCHEDULES, json={**clashing, "name": unique("Resolved"), "on_conflict": resolution})
            assert accepted.status_code == 201, accepted.text
        later = admin.post(SCHEDULES, json=body([node], start_local=soon(3).replace("09:00", "10:00"), duration_s=1800))
        assert later.status_code == 201, later.text
        moved = admin.patch(
            f"{SCHEDULES}/{later.json()['data']['id']}", json={"version": 1, "start_local": soon(3).replace("09:00", "09:20")}
        )
        assert moved.status_code == 409 and moved.json()["error"]["code"] == "schedule_conflict", moved.text


def test_a_selector_clashes_with_the_nodes_it_picks_and_a_disabled_schedule_with_none(hub: HubProcess) -> None:
    tag = unique("mast")
    node = enroll(hub, "newyork", [tag])
    first = create(hub, **body([node], start_local=soon(3)))
    selector = body(target={"selector": {"site": "newyork", "tags": [tag]}}, start_local=soon(3))
    with hub.admin() as admin:
        refused = admin.post(SCHEDULES, json=selector)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["conflicts"][0]["node_ids"] == [node]
        assert admin.patch(f"{SCHEDULES}/{first['id']}", json={"version": 1, "enabled": False}).status_code == 200
        assert admin.post(SCHEDULES, json=selector).status_code == 201
        enabling = admin.patch(f"{SCHEDULES}/{first['id']}", json={"version": 2, "enabled": True})
        assert enabling.status_code == 409 and enabling.json()["error"]["code"] == "schedule_conflict"


# -- skip-next, unskip, run-now -------------------------------------------------------------------------------


def test_skip_next_skips_the_next_occurrence_until_unskipped(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node], start_local=soon(2)))
    url = f"{SCHEDULES}/{schedule['id']}"
    first_start = schedule["next_occurrence"]["start_utc"]
    with hub.admin() as admin:
        skipped = admin.post(f"{url}/skip-next")
        assert skipped.status_code == 200, skipped.text
        occurrence = skipped.json()["data"]
        assert (occurrence["state"], occurrence["start_utc"]) == ("skipped", first_start)
        assert occurrence["id"] and occurrence["reason"] == "skipped by admin"
        detail = admin.get(url).json()["data"]
        assert detail["next_occurrence"]["start_utc"] > first_start
        listed = admin.get(f"{url}/occurrences").json()["data"]
        assert [o["state"] for o in listed[:2]] == ["skipped", "planned"] and listed[0]["id"] == occurrence["id"]
        undone = admin.post(f"{url}/occurrences/{occurrence['id']}/unskip")
        assert undone.status_code == 200 and undone.json()["data"]["state"] == "planned", undone.text
        assert admin.get(url).json()["data"]["next_occurrence"]["start_utc"] == first_start
        again = admin.post(f"{url}/occurrences/{occurrence['id']}/unskip")
        assert again.status_code == 409 and "not skipped" in again.json()["error"]["message"]
        assert admin.post(f"{url}/occurrences/occ_missing/unskip").status_code == 404
        assert admin.patch(url, json={"version": 1, "enabled": False}).status_code == 200
        disabled = admin.post(f"{url}/skip-next")
        assert disabled.status_code == 409 and "disabled" in disabled.json()["error"]["message"]
    assert audit_actions(hub, schedule["id"]) == ["schedule.create", "schedule.skip", "schedule.unskip", "schedule.update"]


def test_run_now_dispatches_an_occurrence_at_once(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    schedule = create(hub, **body([node], start_local=soon(5), duration_s=900))
    url = f"{SCHEDULES}/{schedule['id']}"
    with hub.admin() as admin:
        bad = admin.post(f"{url}/run-now", json={"duration_s": 0})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"duration_s"}
        response = admin.post(f"{url}/run-now", json={"duration_s": 60})
        assert response.status_code == 202, response.text
        occurrence = response.json()["data"]["occurrence"]
        assert occurrence["run_now"] is True and occurrence["state"] == "dispatched"
        start, end = (datetime.fromisoformat(occurrence[k].replace("Z", "+00:00")) for k in ("start_utc", "end_utc"))
        assert end - start == timedelta(seconds=60)
        listed = admin.get(f"{url}/occurrences").json()["data"]
        mine = [o for o in listed if o["id"] == occurrence["id"]]
        assert len(mine) == 1 and mine[0]["state"] == "dispatched" and mine[0]["run_now"]
        assert [r["node_id"] for r in mine[0]["recordings"]] == [node]
        assert mine[0]["recordings"][0]["status"] == "queued"
        without_body = admin.post(f"{url}/run-now")
        assert without_body.status_code == 202, without_body.text
    assert "schedule.run_now" in audit_actions(hub, schedule["id"])


def test_run_now_with_no_node_to_record_on_is_a_conflict(hub: HubProcess) -> None:
    schedule = create(hub, **body(target={"selector": {"site": "newyork", "tags": [unique("nobody")]}}))
    with hub.admin() as admin:
        response = admin.post(f"{SCHEDULES}/{schedule['id']}/run-now")
        detail = admin.get(f"{SCHEDULES}/{schedule['id']}").json()["data"]
    assert response.status_code == 409 and "no node" in response.json()["error"]["message"]
    assert detail["actions"]["run_now"] == {"allowed": False, "reason": "the schedule targets no node now"}


# -- preview and the week view -------------------------------------------------------------------------------


def test_preview_shows_the_next_occurrences_or_the_problems(hub: HubProcess) -> None:
    node = enroll(hub, "berlin")
    with hub.admin() as admin:
        good = admin.post(f"{SCHEDULES}/preview", json=body([node], rrule="FREQ=WEEKLY;BYDAY=MO,WE,FR"))
        assert good.status_code == 200, good.text
        data = good.json()["data"]
        assert data["fields"] == {} and data["time_zone"] == "Europe/Berlin" and data["node_ids"] == [node]
        assert len(data["occurrences"]) == 10
        assert {datetime.fromisoformat(o["local_start"]).strftime("%a") for o in data["occurrences"]} <= {"Mon", "Wed", "Fri"}
        bad = admin.post(f"{SCHEDULES}/preview", json=body([node], rrule="FREQ=SOMETIMES", surprise=1)).json()["data"]
        assert set(bad["fields"]) == {"rrule", "surprise"} and bad["occurrences"] == []
        empty = admin.post(f"{SCHEDULES}/preview", json={}).json()["data"]
        assert {"name", "target", "start_local", "duration_s"} <= set(empty["fields"])
        later = admin.post(
            f"{SCHEDULES}/preview", json=body([node], valid_from=f"{datetime.now(UTC).year + 1}-06-01T00:00:00Z")
        ).json()["data"]
        assert later["occurrences"][0]["start_utc"] >= f"{datetime.now(UTC).year + 1}-06-01"


def test_upcoming_lists_the_takes_of_a_node_or_site_in_time_order(hub: HubProcess) -> None:
    node = enroll(hub, "newyork")
    daily = create(hub, **body([node], start_local=soon(2)))
    evening = create(hub, **body([node], start_local=soon(2).replace("09:00", "19:00")))
    with hub.admin() as admin:
        response = admin.get(f"{SCHEDULES}/upcoming", params={"node_id": node})
        assert response.status_code == 200, response.text
        items = response.json()["data"]
        assert {i["schedule_id"] for i in items} == {daily["id"], evening["id"]}
        assert [i["start_utc"] for i in items] == sorted(i["start_utc"] for i in items)
        assert all(i["node_ids"] == [node] and i["state"] in ("planned", "dispatched") for i in items)  # the lead window
        assert {i["schedule_name"] for i in items} == {daily["name"], evening["name"]}
        by_site = admin.get(f"{SCHEDULES}/upcoming", params={"site": "newyork"}).json()["data"]
        assert {daily["id"], evening["id"]} <= {i["schedule_id"] for i in by_site}
        assert all(
            i["schedule_id"] not in (daily["id"], evening["id"])
            for i in admin.get(f"{SCHEDULES}/upcoming", params={"site": "berlin"}).json()["data"]
        )
        too_long = admin.get(f"{SCHEDULES}/upcoming", params={"from": "2027-01-01T00:00:00Z", "to": "2027-01-10T00:00:00Z"})
        assert too_long.status_code == 400 and "to" in too_long.json()["error"]["fields"]
        unknown = admin.get(f"{SCHEDULES}/upcoming", params={"node_id": "nod_missing"})
        assert unknown.status_code == 400 and "node_id" in unknown.json()["error"]["fields"]


# -- answers as documented ------------------------------------------------------------------------------------


def test_the_answers_match_the_served_openapi_document(hub: HubProcess) -> None:
    doc = yaml.safe_load(httpx.get(f"{hub.url}/api/v1/openapi.yaml").text)
    registry: Registry = Registry().with_resource("urn:openapi", Resource.opaque(doc))

    def check(path: str, method: str, response: httpx.Response) -> None:
        answer = doc["paths"][path][method]["responses"][str(response.status_code)]
        if "$ref" in answer:
            answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
        schema = _rebase(answer["content"]["application/json"]["schema"])
        jsonschema.Draft202012Validator(schema, registry=registry).validate(response.json())

    node = enroll(hub, "berlin")
    one = f"{SCHEDULES}/{{id}}"
    with hub.admin() as admin:
        created = admin.post(SCHEDULES, json=body([node], solar={"event": "sunset", "offset_minutes": 15}, rrule=None))
        check(SCHEDULES, "post", created)
        sid = created.json()["data"]["id"]
        check(SCHEDULES, "get", admin.get(SCHEDULES))
        check(one, "get", admin.get(f"{SCHEDULES}/{sid}"))
        check(f"{one}/actions", "get", admin.get(f"{SCHEDULES}/{sid}/actions"))
        check(f"{SCHEDULES}/facets", "get", admin.get(f"{SCHEDULES}/facets"))
        check(f"{one}/occurrences", "get", admin.get(f"{SCHEDULES}/{sid}/occurrences"))
        skipped = admin.post(f"{SCHEDULES}/{sid}/skip-next")
        check(f"{one}/skip-next", "post", skipped)
        unskip = f"{one}/occurrences/{{iid}}/unskip"
        check(unskip, "post", admin.post(f"{SCHEDULES}/{sid}/occurrences/{skipped.json()['data']['id']}/unskip"))
        check(f"{one}/run-now", "post", admin.post(f"{SCHEDULES}/{sid}/run-now", json={"duration_s": 30}))
        check(f"{one}/occurrences", "get", admin.get(f"{SCHEDULES}/{sid}/occurrences"))
        check(f"{SCHEDULES}/upcoming", "get", admin.get(f"{SCHEDULES}/upcoming", params={"node_id": node}))
        check(f"{SCHEDULES}/preview", "post", admin.post(f"{SCHEDULES}/preview", json=body([node])))
        check(f"{SCHEDULES}/preview", "post", admin.post(f"{SCHEDULES}/preview", json={"rrule": "FREQ=NO"}))
        conflict = admin.post(SCHEDULES, json=body([node], solar={"event": "sunset", "offset_minutes": 20}, rrule=None))
        assert conflict.status_code == 409, conflict.text
        check(SCHEDULES, "post", conflict)
        check(one, "patch", admin.patch(f"{SCHEDULES}/{sid}", json={"version": 1, "enabled": False}))
        check(one, "patch", admin.patch(f"{SCHEDULES}/{sid}", json={"version": 1, "enabled": True}))


def _rebase(value: Any) -> Any:
    """Point the document's local `$ref`s at the registered document."""
    if isinstance(value, dict):
        return {k: ("urn:openapi" + v if k == "$ref" and v.startswith("#") else _rebase(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v) for v in value]
    return value


def test_an_occurrence_inside_the_lead_window_is_dispatched_withdrawn_when_skipped_and_back_when_unskipped(
    hub: HubProcess,
) -> None:
    node, credential = enroll_with_credential(hub, "berlin")
    start = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(hours=3)).replace(tzinfo=None, microsecond=0)
    schedule = create(hub, **body([node], start_local=start.isoformat(), rrule=None, duration_s=120))
    url = f"{SCHEDULES}/{schedule['id']}"

    def only(state: str) -> dict[str, Any] | None:
        listed = occurrences(hub, schedule["id"])["data"]
        return listed[0] if len(listed) == 1 and listed[0]["state"] == state else None

    dispatched = wait_for(lambda: only("dispatched"), 30, "the dispatcher to dispatch the occurrence")
    assert [r["node_id"] for r in dispatched["recordings"]] == [node] and dispatched["recordings"][0]["status"] == "queued"
    with hub.admin() as admin, job_commands(hub, node, credential) as told:
        skipped = admin.post(f"{url}/skip-next").json()["data"]
        wait_for(lambda: {"scheduled": True}.items() <= (told[-1] if told else {}).items(), 10, "the node to be told to sync")
        assert skipped["id"] == dispatched["id"] and skipped["state"] == "skipped"
        recording = admin.get(f"/api/v1/recordings/{dispatched['recordings'][0]['id']}").json()["data"]
        assert recording["status"] == "cancelled"  # withdrawn at once: the node is told to drop it
        assert admin.post(f"{url}/occurrences/{skipped['id']}/unskip").status_code == 200
    back = wait_for(lambda: only("dispatched"), 30, "the occurrence to be dispatched again")
    assert back["id"] == dispatched["id"] and back["recordings"][0]["status"] == "queued"
