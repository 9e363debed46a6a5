"""The upload queue: recordings queued when their upload to the hub completes (and, for direct policies, when capture
ends on the node), idempotent per provider, read with filters, facets, export and the overview within the caller's
sites, retried when failed, queued by hand and in bulk; a problem while queueing never fails the node's upload."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, UploadPolicy
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess, wait_for
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import completed_recording, rows, sine_wav, upload, uploading_recording
from tests.hub.api.uploads import (
    QUEUE,
    audit_actions,
    create_policy,
    disable_other_policies,
    item_row,
    provider,
    unique,
    user,
)

_sites_exist = sites_exist("north", "south")


def items_of(hub: HubProcess, recording_id: str, token: str | None = None) -> list[dict[str, Any]]:
    client = hub.client(token) if token else hub.admin()
    with client:
        response = client.get(QUEUE, params={"recording_id": recording_id})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_a_completed_upload_queues_the_recording_for_each_provider_of_each_matching_policy(hub: HubProcess) -> None:
    disable_other_policies(hub)
    first, second, elsewhere = provider(hub), provider(hub), provider(hub)
    policy = create_policy(hub, [first, second], criteria={"sites": ["north"], "tags": ["birds"]})
    create_policy(hub, [elsewhere], criteria={"sites": ["south"]})
    take, data = completed_recording(hub, site="north", metadata={"tags": ["birds", "dawn"]}, name="Dawn chorus")
    items = sorted(items_of(hub, take.recording_id), key=lambda i: i["provider_id"])
    assert sorted(i["provider_id"] for i in items) == sorted([first, second])
    recording, _ = rows(hub, take)
    assert recording is not None and recording.started_at is not None
    day = recording.started_at
    for item in items:
        assert item["state"] == "pending" and item["policy_id"] == policy["id"] and item["route"] == "via_hub"
        assert (item["site"], item["node_id"], item["recording_name"]) == ("north", take.node_id, "Dawn chorus")
        assert item["provider_kind"] == "local" and item["bytes_total"] == len(data) and item["bytes_sent"] == 0
        assert item["remote_key"] == f"north/{take.node_id}/{day:%Y/%m/%d}/{take.recording_id}.wav"
        assert item["progress"] == 0.0 and item["actions"]["retry"]["allowed"] is False
        with hub.admin() as admin:
            assert admin.get(f"{QUEUE}/{item['id']}").json()["data"] == item
            assert admin.get(f"{QUEUE}/{item['id']}/actions").json()["data"] == item["actions"]
    untagged, _ = completed_recording(hub, site="north")
    assert items_of(hub, untagged.recording_id) == []  # the policy wants the tag "birds"


def test_queueing_is_idempotent_per_recording_and_provider(hub: HubProcess) -> None:
    disable_other_policies(hub)
    shared = provider(hub)
    create_policy(hub, [shared], priority=5, key_template="high/{recording_id}.{ext}")
    create_policy(hub, [shared], priority=1, key_template="low/{recording_id}.{ext}")
    take, _ = completed_recording(hub, site="north")
    items = items_of(hub, take.recording_id)
    assert len(items) == 1 and items[0]["remote_key"] == f"high/{take.recording_id}.wav"  # the higher priority's key
    url = f"/api/v1/recordings/{take.recording_id}/upload-queue"
    with hub.admin() as admin:
        again = admin.post(url, json={})
        assert again.status_code == 201, again.text
        assert again.json()["data"]["created"] == 0 and [i["id"] for i in again.json()["data"]["items"]] == [items[0]["id"]]
        by_hand = admin.post(url, json={"provider_ids": [shared]}).json()["data"]
        assert by_hand["created"] == 0 and by_hand["items"][0]["id"] == items[0]["id"]
    assert [i["id"] for i in items_of(hub, take.recording_id)] == [items[0]["id"]]
    assert "upload.enqueue" not in audit_actions(hub, take.recording_id)  # nothing new was queued by hand


def test_queueing_by_hand_names_providers_or_uses_the_policies_and_refuses_what_cannot_be_uploaded(hub: HubProcess) -> None:
    disable_other_policies(hub)
    take, _ = completed_recording(hub, site="north")
    target = provider(hub)
    url = f"/api/v1/recordings/{take.recording_id}/upload-queue"
    with hub.admin() as admin:
        no_policy = admin.post(url)
        assert no_policy.status_code == 409 and no_policy.json()["error"]["code"] == "no_policy"
        unknown = admin.post(url, json={"provider_ids": ["upp_nope"]})
        assert unknown.status_code == 400 and "upp_nope" in unknown.json()["error"]["fields"]["provider_ids"]
        assert admin.post(url, json={"provider_ids": []}).status_code == 400
        assert admin.post(url, json={"colour": "red"}).status_code == 400
        assert admin.post("/api/v1/recordings/rec_nope/upload-queue", json={"provider_ids": [target]}).status_code == 404
        made = admin.post(url, json={"provider_ids": [target]})
        assert made.status_code == 201, made.text
        item = made.json()["data"]["items"][0]
        assert made.json()["data"]["created"] == 1 and item["policy_id"] is None and item["provider_id"] == target
        assert item["remote_key"].endswith(f"/{take.recording_id}.wav") and item["route"] == "via_hub"
    running = uploading_recording(hub, site="north")
    with hub.admin() as admin:
        early = admin.post(f"/api/v1/recordings/{running.recording_id}/upload-queue", json={"provider_ids": [target]})
        assert early.status_code == 409 and "uploading" in early.json()["error"]["message"]
    assert "upload.enqueue" in audit_actions(hub, take.recording_id)
    evicted, _ = completed_recording(hub, site="north")
    with hub_database(hub):
        Recording.update(hub_evicted_at=utcnow(), hub_evicted_reason="kept 30 days").where(
            Recording.id == evicted.recording_id
        ).execute()
    with hub.admin() as admin:
        gone = admin.post(f"/api/v1/recordings/{evicted.recording_id}/upload-queue", json={"provider_ids": [target]})
        assert gone.status_code == 409 and gone.json()["error"]["code"] == "evicted"


def test_a_site_limited_reader_sees_only_its_sites_items(hub: HubProcess) -> None:
    disable_other_policies(hub)
    target = provider(hub)
    create_policy(hub, [target])
    north, _ = completed_recording(hub, site="north")
    south, _ = completed_recording(hub, site="south")
    south_item = items_of(hub, south.recording_id)[0]
    reader = user(hub, ["viewer"], ["north"])
    with hub.client(reader) as client:
        seen = {i["recording_id"] for i in client.get(QUEUE, params={"provider_id": target}).json()["data"]}
        assert seen == {north.recording_id}
        assert client.get(f"{QUEUE}/{south_item['id']}").status_code == 404
        assert client.get(f"{QUEUE}/{south_item['id']}/actions").status_code == 404
        facets = client.get(f"{QUEUE}/facets", params={"fields": "site"}).json()["data"]
        assert {f["value"] for f in facets["site"]} == {"north"}
        exported = client.get(f"{QUEUE}/export", params={"format": "ndjson", "provider_id": target})
        assert [json.loads(line)["recording_id"] for line in exported.text.splitlines()] == [north.recording_id]
        overview = client.get(f"{QUEUE}/overview").json()["data"]
        mine = next(p for p in overview["providers"] if p["provider_id"] == target)
        assert mine["states"]["pending"]["count"] == 1
        denied = client.post(f"/api/v1/recordings/{north.recording_id}/upload-queue", json={"provider_ids": [target]})
        assert denied.status_code == 403 and denied.json()["error"]["required"] == ["recording:control"]
    operator = user(hub, ["operator"], ["north"])
    with hub.client(operator) as client:
        hidden = client.post(f"/api/v1/recordings/{south.recording_id}/upload-queue", json={"provider_ids": [target]})
        assert hidden.status_code == 404
    with hub.admin() as admin:
        everywhere = admin.get(f"{QUEUE}/overview").json()["data"]
        theirs = next(p for p in everywhere["providers"] if p["provider_id"] == target)
        assert theirs["states"]["pending"]["count"] == 2 and theirs["provider_kind"] == "local"
        assert everywhere["states"]["pending"]["count"] >= 2
        assert everywhere["backlog"]["count"] >= 2


def test_filters_are_checked_and_facets_count_states(hub: HubProcess) -> None:
    target = provider(hub)
    take, _ = completed_recording(hub, site="north")
    item_row(hub, take.recording_id, target, "north", "failed", last_error="disk full", node_id=take.node_id)
    with hub.admin() as admin:
        bad = admin.get(QUEUE, params={"state": "lost", "route": "sideways", "colour": "red"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"state", "route", "colour"}
        failed = admin.get(QUEUE, params={"state": "failed", "provider_id": target}).json()["data"]
        assert [i["last_error"] for i in failed] == ["disk full"]
        assert [i["id"] for i in admin.get(QUEUE, params={"q": "disk full", "provider_id": target}).json()["data"]] == [
            failed[0]["id"]
        ]
        facets = admin.get(f"{QUEUE}/facets", params={"provider_id": target}).json()["data"]
        assert facets["state"] == [{"value": "failed", "count": 1}] and set(facets) >= {"provider_id", "route", "site"}
        csv_text = admin.post(f"{QUEUE}/export", params={"format": "csv"}, json={"ids": [failed[0]["id"]]}).text
        assert csv_text.splitlines()[0].startswith("id,recording_id,recording_name,provider_id")
        assert len(csv_text.splitlines()) == 2


def test_retry_sends_a_failed_upload_back_to_pending_and_refuses_other_states(hub: HubProcess) -> None:
    target = provider(hub)
    take, _ = completed_recording(hub, site="north")
    later = utcnow()
    failed = item_row(
        hub, take.recording_id, target, "north", "failed", attempts=12, last_error="503 Slow Down", node_id=take.node_id
    )
    other = provider(hub)
    synced = item_row(hub, take.recording_id, other, "north", "synced", node_id=take.node_id, synced_at=later)
    with hub.admin() as admin:
        shown = admin.get(f"{QUEUE}/{failed}").json()["data"]
        assert shown["actions"]["retry"] == {"allowed": True, "reason": None}
        retried = admin.post(f"{QUEUE}/{failed}/retry")
        assert retried.status_code == 200, retried.text
        item = retried.json()["data"]
        assert (item["state"], item["next_attempt_at"], item["attempts"]) == ("pending", None, 0)
        assert item["last_error"] == "503 Slow Down"  # kept to show what went wrong last
        again = admin.post(f"{QUEUE}/{failed}/retry")
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_failed"
        refused = admin.post(f"{QUEUE}/{synced}/retry")
        assert refused.status_code == 409 and "synced" in refused.json()["error"]["message"]
        assert admin.post(f"{QUEUE}/upi_nope/retry").status_code == 404
    assert audit_actions(hub, failed) == ["upload.retry"]
    with hub.admin() as admin:
        entry = admin.get("/api/v1/audit-events", params={"target_id": failed}).json()["data"][0]
    assert entry["site"] == "north" and entry["before"]["state"] == "failed" and entry["after"]["state"] == "pending"
    south_reader = user(hub, ["operator"], ["south"])
    with hub.client(south_reader) as client:
        assert client.post(f"{QUEUE}/{failed}/retry").status_code == 404


def test_bulk_queueing_by_ids_or_by_a_library_filter_answers_per_recording_and_is_capped(hub: HubProcess) -> None:
    disable_other_policies(hub)
    target = provider(hub)
    marker = unique("bulk")
    done, _ = completed_recording(hub, site="south", name=f"{marker} one")
    done_too, _ = completed_recording(hub, site="south", name=f"{marker} two")
    running = uploading_recording(hub, site="south", name=f"{marker} three")
    with hub.admin() as admin:
        by_ids = admin.post(
            "/api/v1/bulk-upload-queue",
            json={"ids": [done.recording_id, running.recording_id, "rec_nope"], "provider_ids": [target]},
        )
        assert by_ids.status_code == 200, by_ids.text
        results = {r["id"]: r for r in by_ids.json()["data"]}
        assert results[done.recording_id]["ok"] is True and results[done.recording_id]["created"] == 1
        assert results[running.recording_id] == {
            "id": running.recording_id,
            "ok": False,
            "error": {"code": "conflict", "message": results[running.recording_id]["error"]["message"]},
        }
        assert results["rec_nope"]["error"]["code"] == "not_found"
        by_filter = admin.post(
            "/api/v1/bulk-upload-queue", json={"filter": {"q": marker, "status": "completed"}, "provider_ids": [target]}
        ).json()["data"]
        assert {r["id"]: r["created"] for r in by_filter} == {done.recording_id: 0, done_too.recording_id: 1}
        both = admin.post("/api/v1/bulk-upload-queue", json={"ids": [done.recording_id], "filter": {"q": marker}})
        assert both.status_code == 400
        too_many = admin.post("/api/v1/bulk-upload-queue", json={"ids": [f"rec_{n}" for n in range(501)]})
        assert too_many.status_code == 400 and "ids" in too_many.json()["error"]["fields"]
        bad_filter = admin.post("/api/v1/bulk-upload-queue", json={"filter": {"status": "melted"}})
        assert bad_filter.status_code == 400 and "status" in bad_filter.json()["error"]["fields"]
    north_operator = user(hub, ["operator"], ["north"])
    with hub.client(north_operator) as client:
        scoped = client.post("/api/v1/bulk-upload-queue", json={"filter": {"q": marker}, "provider_ids": [target]})
        assert scoped.json()["data"] == []  # south's recordings are outside the grant


def test_a_problem_while_queueing_never_fails_the_nodes_upload(hub: HubProcess) -> None:
    disable_other_policies(hub)
    broken = new_id("upl")
    with hub_database(hub):  # a row no API would write: criteria that are not an object
        UploadPolicy.create(
            id=broken,
            name=unique("broken"),
            criteria=["not", "an", "object"],
            provider_ids=[provider(hub)],
            key_template="{recording_id}",
        )
    try:
        take = uploading_recording(hub, site="north")
        final = upload(hub, take, sine_wav(1.0))
        assert final.status_code == 200 and final.headers["Upload-Complete"] == "true"
        recording, job = rows(hub, take)
        assert recording is not None and job is not None and (recording.status, job.state) == ("completed", "completed")
        assert items_of(hub, take.recording_id) == []
        assert "could not queue recording" in hub.log()
    finally:
        with hub_database(hub):
            UploadPolicy.delete().where(UploadPolicy.id == broken).execute()


def test_capture_ending_on_the_node_queues_direct_policies_and_the_hub_copy_queues_the_others(hub: HubProcess) -> None:
    disable_other_policies(hub)
    bucket, via_hub = provider(hub, "s3"), provider(hub)
    direct = create_policy(hub, [bucket], route="direct")
    create_policy(hub, [via_hub])
    take = uploading_recording(hub, site="north", status="recording")
    with hub.client(take.credential) as node:
        moved = node.post(
            f"/api/v1/recording-jobs/{take.job_id}/heartbeat", json={"lease_epoch": take.epoch, "state": "uploading"}
        )
    assert moved.status_code == 200, moved.text
    items = items_of(hub, take.recording_id)
    assert [(i["provider_id"], i["route"], i["policy_id"]) for i in items] == [(bucket, "direct", direct["id"])]
    upload(hub, take, sine_wav(1.0))
    after = {i["provider_id"]: i for i in items_of(hub, take.recording_id)}
    assert set(after) == {bucket, via_hub} and after[bucket]["id"] == items[0]["id"]
    assert after[via_hub]["route"] == "via_hub"


def test_a_queued_recording_reaches_a_directory_provider_verified(hub: HubProcess, tmp_path: Path) -> None:
    disable_other_policies(hub)
    target = provider(hub, "local", enabled=True, path=tmp_path)
    create_policy(hub, [target], key_template="{site}/{recording_id}.{ext}")
    take, data = completed_recording(hub, site="north")

    def synced() -> dict[str, Any] | None:
        found = items_of(hub, take.recording_id)
        return found[0] if found and found[0]["state"] == "synced" else None

    item = wait_for(synced, 60, "the upload to reach the directory")
    digest = hashlib.sha256(data).hexdigest()
    assert item["checksum_sha256"] == digest and item["progress"] == 1.0 and item["synced_at"] is not None
    assert (tmp_path / "north" / f"{take.recording_id}.wav").read_bytes() == data
