"""Legal hold on recordings: placed with a reason and released, audited, site-scoped, and a held recording is never deleted."""

from __future__ import annotations

from typing import Any

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import audit_of, completed_recording, enroll, rows, stored_path, uploading_recording
from tests.hub.api.test_recordings_library import user_token

RECORDINGS = "/api/v1/recordings"
REASON = "Subpoena 2026-114: keep until the case closes"

_sites_exist = sites_exist("north", "south")


def hold_url(recording_id: str) -> str:
    return f"{RECORDINGS}/{recording_id}/legal-hold"


def holds(hub: HubProcess, recording_id: str) -> list[dict[str, Any]]:
    return [a for a in audit_of(hub, recording_id) if a["action"].startswith("recording.legal_hold.")]


def test_a_hold_is_placed_with_its_reason_and_released_audited_each_time(hub: HubProcess) -> None:
    take = uploading_recording(hub, status="failed")
    with hub.admin() as admin:
        placed = admin.put(hold_url(take.recording_id), json={"reason": f"  {REASON} "})
        assert placed.status_code == 200, placed.text
        held = placed.json()["data"]
        assert held["legal_hold"] is True and held["legal_hold_reason"] == REASON  # surrounding spaces dropped
        assert held["legal_hold_by"]["name"] == "admin" and held["legal_hold_at"] is not None
        again = admin.put(hold_url(take.recording_id), json={"reason": REASON}).json()["data"]
        assert again["legal_hold_at"] == held["legal_hold_at"]  # the same reason again changes nothing
        reworded = admin.put(hold_url(take.recording_id), json={"reason": "Case 2026-114, widened"}).json()["data"]
        assert reworded["legal_hold_reason"] == "Case 2026-114, widened"
        assert admin.get(f"{RECORDINGS}/{take.recording_id}").json()["data"]["legal_hold"] is True
        released = admin.delete(hold_url(take.recording_id))
        assert released.status_code == 200, released.text
        free = released.json()["data"]
        assert free["legal_hold"] is False and free["legal_hold_reason"] is None and free["legal_hold_by"] is None
        assert admin.delete(hold_url(take.recording_id)).json()["data"]["legal_hold"] is False  # not held: nothing to do
    entries = sorted(holds(hub, take.recording_id), key=lambda a: a["at"])
    assert [a["action"] for a in entries] == [
        "recording.legal_hold.set",
        "recording.legal_hold.set",
        "recording.legal_hold.release",
    ]
    assert entries[0]["before"]["legal_hold"] is False and entries[0]["after"]["legal_hold_reason"] == REASON
    assert entries[1]["before"]["legal_hold_reason"] == REASON
    assert entries[2]["before"]["legal_hold"] is True and entries[2]["after"]["legal_hold"] is False
    assert all(a["permission"] == "recording:edit" for a in entries)


def test_bad_bodies_answer_400_naming_the_field(hub: HubProcess) -> None:
    take = uploading_recording(hub, status="failed")
    with hub.admin() as admin:
        for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": "line\nbreak"}, {"reason": 7}):
            answer = admin.put(hold_url(take.recording_id), json=body)
            assert answer.status_code == 400, body
            assert "reason" in answer.json()["error"]["fields"], body
        unknown = admin.put(hold_url(take.recording_id), json={"reason": REASON, "until": "never"})
        assert unknown.status_code == 400
        assert admin.put(hold_url(take.recording_id)).status_code == 400  # no body
        assert admin.put(hold_url("rec_missing"), json={"reason": REASON}).status_code == 404
        assert admin.get(f"{RECORDINGS}/{take.recording_id}").json()["data"]["legal_hold"] is False
    assert holds(hub, take.recording_id) == []


def test_a_held_recording_is_not_deleted_until_released(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    path = stored_path(hub, take)
    other = uploading_recording(hub, status="cancelled")
    with hub.admin() as admin:
        assert admin.put(hold_url(take.recording_id), json={"reason": REASON}).status_code == 200
        assert admin.put(hold_url(other.recording_id), json={"reason": REASON}).status_code == 200
        actions = admin.get(f"{RECORDINGS}/{take.recording_id}/actions").json()["data"]
        assert actions["delete"] == {"allowed": False, "reason": "the recording is under legal hold"}
        assert actions["legal_hold"] == {"allowed": True, "reason": None}
        refused = admin.delete(f"{RECORDINGS}/{take.recording_id}")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "legal_hold" and "legal hold" in refused.json()["error"]["message"]
        bulk = admin.post(f"{RECORDINGS}/bulk-delete", json={"ids": [other.recording_id]}).json()["data"]
        assert bulk[0]["ok"] is False and bulk[0]["error"]["code"] == "legal_hold"
        assert path.exists() and rows(hub, take)[0] is not None and rows(hub, other)[0] is not None
        assert admin.delete(hold_url(take.recording_id)).status_code == 200
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/actions").json()["data"]["delete"]["allowed"] is True
        assert admin.delete(f"{RECORDINGS}/{take.recording_id}").status_code == 204
    assert not path.exists() and rows(hub, take)[0] is None


def test_the_library_filters_and_counts_by_legal_hold(hub: HubProcess) -> None:
    node = enroll(hub, "north")
    held = uploading_recording(hub, node=node, status="completed")
    free = uploading_recording(hub, node=node, status="completed")
    with hub.admin() as admin:
        assert admin.put(hold_url(held.recording_id), json={"reason": REASON}).status_code == 200

        def ids(**params: Any) -> set[str]:
            answer = admin.get(RECORDINGS, params={"node_id": node[0], **params})
            assert answer.status_code == 200, answer.text
            return {r["id"] for r in answer.json()["data"]}

        assert ids(legal_hold="true") == {held.recording_id}
        assert ids(legal_hold="false") == {free.recording_id}
        assert admin.get(RECORDINGS, params={"legal_hold": "maybe"}).json()["error"]["fields"].keys() == {"legal_hold"}
        facets = admin.get(f"{RECORDINGS}/facets", params={"node_id": node[0], "fields": "legal_hold"}).json()["data"]
        assert {str(f["value"]).lower(): f["count"] for f in facets["legal_hold"]} == {"true": 1, "false": 1}


def test_site_scope_and_permission(hub: HubProcess) -> None:
    north = uploading_recording(hub, site="north", status="completed")
    south = uploading_recording(hub, site="south", status="completed")
    southerner = user_token(hub, ["admin"], sites=["south"])
    with hub.client(southerner) as client:
        assert client.put(hold_url(north.recording_id), json={"reason": REASON}).status_code == 404
        assert client.delete(hold_url(north.recording_id)).status_code == 404
        assert client.put(hold_url(south.recording_id), json={"reason": REASON}).status_code == 200
    viewer = user_token(hub, ["viewer"])
    with hub.client(viewer) as client:
        assert client.put(hold_url(north.recording_id), json={"reason": REASON}).status_code == 403
        assert client.delete(hold_url(south.recording_id)).status_code == 403
        assert client.get(f"{RECORDINGS}/{south.recording_id}/actions").json()["data"]["legal_hold"]["allowed"] is False
    operator = user_token(hub, ["operator"])  # recording:edit without recording:delete
    with hub.client(operator) as client:
        assert client.put(hold_url(north.recording_id), json={"reason": REASON}).status_code == 200
    with hub.admin() as admin:
        assert admin.get(f"{RECORDINGS}/{south.recording_id}").json()["data"]["legal_hold"] is True
        assert admin.get(f"{RECORDINGS}/{north.recording_id}").json()["data"]["legal_hold_by"]["type"] == "user"
