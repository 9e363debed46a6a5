"""Retention policies (settings family), their preview, retention runs, and each recording's copies over the API.

Recordings are uploaded for real (the hub verifies and stores them); provider copies are upload items written into
the hub's database as the upload runner leaves them (`synced` with the checksum verified at the provider).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, UploadItem, UploadProvider
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess, wait_for
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_channel_maps import stream_events
from tests.hub.api.test_recording_upload import Take, completed_recording, enroll, stored_path
from tests.hub.api.test_recordings_library import user_token

POLICIES = "/api/v1/settings/retention-policies"
RUNS = "/api/v1/retention-runs"
RECORDINGS = "/api/v1/recordings"

_sites_exist = sites_exist("north", "south")


def provider(hub: HubProcess, name: str | None = None) -> str:
    """An upload provider row (a local directory), as the providers' API leaves it."""
    provider_id = new_id("upr")
    with hub_database(hub):
        UploadProvider.create(
            id=provider_id, name=name or f"archive-{uuid.uuid4().hex[:6]}", kind="local", config={"path": "/srv/archive"}
        )
    return provider_id


def synced(hub: HubProcess, take: Take, provider_id: str, checksum: str | None = None, state: str = "synced") -> None:
    """The recording's upload item at `provider_id`: synced with `checksum` (the recording's own by default)."""
    with hub_database(hub):
        recording = Recording.get_by_id(take.recording_id)
        UploadItem.create(
            id=new_id("upi"),
            recording_id=recording.id,
            provider_id=provider_id,
            site=recording.site,
            node_id=recording.node_id,
            state=state,
            checksum_sha256=(checksum or recording.sha256) if state == "synced" else None,
            remote_key=f"north/{recording.node_id}/{recording.id}.wav",
            verified_by="read-back" if state == "synced" else None,
            synced_at=utcnow() if state == "synced" else None,
            bytes_total=recording.size_bytes,
        )


def aged(hub: HubProcess, take: Take, days: float) -> None:
    """Make the recording have ended `days` ago."""
    with hub_database(hub):
        ended = utcnow() - timedelta(days=days)
        changes = {"ended_at": ended, "started_at": ended - timedelta(seconds=2)}
        Recording.update(**changes).where(Recording.id == take.recording_id).execute()


def tagged_take(hub: HubProcess, node: tuple[str, str], tag: str, days: float, **kwargs: Any) -> Take:
    """A stored recording carrying `tag`, ended `days` ago."""
    take, _ = completed_recording(hub, node=node, seconds=0.3, metadata={"tags": [tag]}, **kwargs)
    aged(hub, take, days)
    return take


def make_policy(hub: HubProcess, **fields: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        answer = admin.post(POLICIES, json={"name": f"policy-{uuid.uuid4().hex[:6]}", **fields})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def audit(hub: HubProcess, target_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]


def finished_run(hub: HubProcess, run_id: str) -> dict[str, Any]:
    with hub.admin() as admin:

        def done() -> dict[str, Any] | None:
            run: dict[str, Any] = admin.get(f"{RUNS}/{run_id}").json()["data"]
            return run if run["finished_at"] else None

        return wait_for(done, 30, "the retention run to finish")


# -- the settings family --------------------------------------------------------------------


def test_a_policy_is_created_read_changed_with_its_version_and_deleted_audited(hub: HubProcess) -> None:
    archive = provider(hub)
    created = make_policy(hub, keep_on_hub_days=30, required_providers=[archive], sites=["north"], min_free_bytes_hub=10**6)
    assert created["keep_on_hub_days"] == 30 and created["required_providers"] == [archive] and created["version"] == 1
    assert created["keep_on_node_until_hub_has_it"] is True and created["enabled"] is True and created["tags"] == []
    url = f"{POLICIES}/{created['id']}"
    with hub.admin() as admin:
        detail = admin.get(url).json()["data"]
        assert detail["actions"]["delete"] == {"allowed": True, "reason": None}
        assert admin.get(f"{url}/actions").json()["data"]["update"]["allowed"] is True
        changed = admin.patch(url, json={"keep_on_hub_days": None, "version": 1})
        assert changed.status_code == 200, changed.text
        assert changed.json()["data"]["keep_on_hub_days"] is None and changed.json()["data"]["version"] == 2
        stale = admin.patch(url, json={"priority": 5, "version": 1})
        assert stale.status_code == 409
        listed = admin.get(POLICIES, params={"required_provider": archive}).json()["data"]
        assert [p["id"] for p in listed] == [created["id"]]
        facets = admin.get(f"{POLICIES}/facets", params={"fields": "site"}).json()["data"]
        assert {"value": "north", "count": 1} in facets["site"]
        exported = admin.get(f"{POLICIES}/export", params={"format": "ndjson", "required_provider": archive})
        assert exported.status_code == 200 and created["id"] in exported.text
        assert admin.delete(url).status_code == 204
        assert admin.get(url).status_code == 404
    actions = sorted((a["at"], a["action"]) for a in audit(hub, created["id"]))
    assert [a for _, a in actions] == ["retention_policy.create", "retention_policy.update", "retention_policy.delete"]


def test_bad_fields_answer_one_400_naming_each_and_nothing_is_made(hub: HubProcess) -> None:
    with hub.admin() as admin:
        before = len(admin.get(POLICIES, params={"limit": 200}).json()["data"])
        answer = admin.post(
            POLICIES,
            json={
                "name": " padded ",
                "required_providers": ["upr_nowhere"],
                "sites": ["atlantis"],
                "keep_on_hub_days": -1,
                "min_free_bytes_hub": -5,
                "priority": 5000,
            },
        )
        assert answer.status_code == 400, answer.text
        fields = answer.json()["error"]["fields"]
        assert set(fields) == {"name", "required_providers", "sites", "keep_on_hub_days", "min_free_bytes_hub", "priority"}
        assert "upr_nowhere" in fields["required_providers"]
        assert admin.post(POLICIES, json={"name": "x", "keep_forever": True}).status_code == 400  # unknown field
        assert admin.post(POLICIES, json={"name": "x", "min_free_bytes_hub": 1.5}).status_code == 400
        assert len(admin.get(POLICIES, params={"limit": 200}).json()["data"]) == before
        policy = make_policy(hub)
        bad = admin.patch(f"{POLICIES}/{policy['id']}", json={"required_providers": ["upr_nowhere"]})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"required_providers"}
        assert admin.get(f"{POLICIES}/{policy['id']}/preview", params={"limit": "0"}).status_code == 400
        assert admin.get(f"{POLICIES}/{policy['id']}/preview", params={"bogus": "1"}).status_code == 400


def test_policies_are_hub_wide_settings(hub: HubProcess) -> None:
    policy = make_policy(hub)
    northern_admin = user_token(hub, ["admin"], sites=["north"])
    with hub.client(northern_admin) as client:
        assert client.get(f"{POLICIES}/{policy['id']}").status_code == 200  # reads follow the scope
        assert client.post(POLICIES, json={"name": "site-limited"}).status_code == 403
        assert client.patch(f"{POLICIES}/{policy['id']}", json={"priority": 1}).status_code == 403
        assert client.post(RUNS).status_code == 403
    viewer = user_token(hub, ["viewer"])
    with hub.client(viewer) as client:
        assert client.get(POLICIES).status_code == 200
        assert client.get(RUNS).status_code == 200
        assert client.post(POLICIES, json={"name": "viewer's"}).status_code == 403
        assert client.post(RUNS).status_code == 403


# -- preview, runs and copies --------------------------------------------------------------


def test_the_preview_says_what_would_go_and_what_is_held_and_why(hub: HubProcess) -> None:
    tag = f"pv-{uuid.uuid4().hex[:6]}"
    archive_name = f"archive-{uuid.uuid4().hex[:6]}"
    archive = provider(hub, name=archive_name)
    node = enroll(hub, "north")
    policy = make_policy(hub, tags=[tag], keep_on_hub_days=30, required_providers=[archive])
    confirmed = tagged_take(hub, node, tag, days=40)
    synced(hub, confirmed, archive)
    young = tagged_take(hub, node, tag, days=2)
    synced(hub, young, archive)
    unconfirmed = tagged_take(hub, node, tag, days=40)
    synced(hub, unconfirmed, archive, state="uploading")
    mismatch = tagged_take(hub, node, tag, days=40)
    synced(hub, mismatch, archive, checksum="0" * 64)
    held = tagged_take(hub, node, tag, days=40)
    synced(hub, held, archive)
    with hub.admin() as admin:
        assert admin.put(f"{RECORDINGS}/{held.recording_id}/legal-hold", json={"reason": "case 7"}).status_code == 200
        preview = admin.get(f"{POLICIES}/{policy['id']}/preview").json()["data"]
    hub_delete = {r["recording_id"]: r["reason"] for r in preview["hub"]["delete"]["items"]}
    hub_held = {r["recording_id"]: r["reason"] for r in preview["hub"]["held"]["items"]}
    assert set(hub_delete) == {confirmed.recording_id}
    assert hub_delete[confirmed.recording_id] == f"kept 30 days; confirmed on {archive_name}"  # providers by name
    assert hub_held[young.recording_id].startswith("kept 30 days:")
    assert hub_held[unconfirmed.recording_id] == f"not yet confirmed on provider {archive_name}"
    assert "checksum mismatch" in hub_held[mismatch.recording_id]
    assert hub_held[held.recording_id] == "legal hold"
    assert preview["hub"]["delete"]["count"] == 1 and preview["hub"]["held"]["count"] == 4
    node_delete = {r["recording_id"] for r in preview["node"]["delete"]["items"]}
    assert node_delete == {confirmed.recording_id, young.recording_id, unconfirmed.recording_id, mismatch.recording_id}
    assert {r["recording_id"]: r["reason"] for r in preview["node"]["held"]["items"]} == {held.recording_id: "legal hold"}
    with hub.admin() as admin:
        capped = admin.get(f"{POLICIES}/{policy['id']}/preview", params={"limit": 2}).json()["data"]
    assert len(capped["hub"]["held"]["items"]) == 2 and capped["hub"]["held"]["truncated"] is True
    assert capped["hub"]["held"]["count"] == 4


def test_a_run_evicts_only_confirmed_expired_copies_and_downloads_then_answer_410_naming_the_copies(hub: HubProcess) -> None:
    tag = f"run-{uuid.uuid4().hex[:6]}"
    archive = provider(hub, name=f"vault-{uuid.uuid4().hex[:4]}")
    node = enroll(hub, "north")
    make_policy(hub, tags=[tag], keep_on_hub_days=30, required_providers=[archive])
    confirmed = tagged_take(hub, node, tag, days=40)
    synced(hub, confirmed, archive)
    unconfirmed = tagged_take(hub, node, tag, days=40)
    gone, kept = stored_path(hub, confirmed), stored_path(hub, unconfirmed)
    with hub.admin() as admin:
        started = admin.post(RUNS)
        assert started.status_code == 202, started.text
        assert started.json()["data"]["trigger"] == "manual"
        run = finished_run(hub, started.json()["data"]["id"])
        assert confirmed.recording_id in [d[0] for d in run["details"]["deleted"]]
        assert unconfirmed.recording_id not in [d[0] for d in run["details"]["deleted"]]
        assert not gone.exists() and kept.exists()
        recording = admin.get(f"{RECORDINGS}/{confirmed.recording_id}")
        assert recording.status_code == 200  # the row stays: the library shows where the copies are
        refused = admin.get(f"{RECORDINGS}/{confirmed.recording_id}/file")
        assert refused.status_code == 410
        error = refused.json()["error"]
        assert error["code"] == "evicted" and any("vault-" in place for place in error["copies"])
        assert admin.post(f"{RECORDINGS}/{confirmed.recording_id}/download").status_code == 410
        assert admin.get(f"{RECORDINGS}/{unconfirmed.recording_id}/file").status_code == 200
        copies = admin.get(f"{RECORDINGS}/{confirmed.recording_id}/copies").json()["data"]
        assert copies["hub"]["state"] == "evicted" and copies["hub"]["evicted_reason"].startswith("kept 30 days")
        assert copies["providers"][0]["confirmed"] is True and copies["providers"][0]["provider_id"] == archive
        listed = admin.get(RUNS, params={"trigger": "manual"}).json()["data"]
        assert listed[0]["id"] == run["id"]
    assert [a["action"] for a in audit(hub, run["id"])] == ["retention.run"]
    northerner = user_token(hub, ["viewer"], sites=["north"])
    with hub.client(northerner) as client:  # which recordings a run touched is for hub-wide readers
        assert client.get(f"{RUNS}/{run['id']}").json()["data"]["details"] == {}
        assert all(r["details"] == {} for r in client.get(RUNS).json()["data"])
    evicted = [e for e in stream_events(hub, "recording.evicted") if e["recording_id"] == confirmed.recording_id]
    assert len(evicted) == 1 and evicted[0]["run_id"] == run["id"] and evicted[0]["place"] == "hub"


def test_the_copies_of_a_recording_with_states_checksums_and_decisions(hub: HubProcess) -> None:
    archive, other = provider(hub), provider(hub)
    take, _ = completed_recording(hub, site="south", seconds=0.3)
    synced(hub, take, archive)
    synced(hub, take, other, state="failed")
    with hub.admin() as admin:
        copies = admin.get(f"{RECORDINGS}/{take.recording_id}/copies")
        assert copies.status_code == 200, copies.text
        data = copies.json()["data"]
        assert data["hub"]["state"] == "confirmed" and data["hub"]["sha256"] == data["sha256"] and data["hub"]["key"]
        assert data["node"] == {"node_id": take.node_id, "state": "present", "reported": False, "at": None}
        states = {p["provider_id"]: (p["state"], p["confirmed"], p["checksum_sha256"]) for p in data["providers"]}
        assert states == {archive: ("synced", True, data["sha256"]), other: ("failed", False, None)}
        assert data["retention"]["hub"]["action"] == "keep" and data["retention"]["hub"]["reason"]
        assert data["retention"]["node"]["action"] in ("keep", "delete")
        assert admin.get(f"{RECORDINGS}/rec_missing/copies").status_code == 404
    northerner = user_token(hub, ["viewer"], sites=["north"])
    with hub.client(northerner) as client:
        assert client.get(f"{RECORDINGS}/{take.recording_id}/copies").status_code == 404  # another site's


def test_a_node_reports_its_cache_evictions_for_its_own_recordings_only(hub: HubProcess) -> None:
    mine, _ = completed_recording(hub, seconds=0.3)
    theirs, _ = completed_recording(hub, seconds=0.3)
    url = f"/api/v1/nodes/{mine.node_id}/cache-evictions"
    with hub.client(mine.credential) as node:
        answer = node.post(url, json={"recording_ids": [mine.recording_id, theirs.recording_id]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == {"evicted": [mine.recording_id], "unknown": [theirs.recording_id]}
        assert node.post(url, json={"recording_ids": [mine.recording_id]}).status_code == 200  # again: harmless
        assert node.post(url, json={"recording_ids": []}).status_code == 400
        assert node.post(url, json={"ids": [mine.recording_id]}).status_code == 400
        other_node = node.post(f"/api/v1/nodes/{theirs.node_id}/cache-evictions", json={"recording_ids": [theirs.recording_id]})
        assert other_node.status_code == 403 and other_node.json()["error"]["code"] == "node_mismatch"
    with hub.admin() as admin:
        assert admin.get(f"{RECORDINGS}/{mine.recording_id}/copies").json()["data"]["node"]["state"] == "evicted"
        assert admin.get(f"{RECORDINGS}/{theirs.recording_id}/copies").json()["data"]["node"]["state"] == "present"


def test_the_node_config_lists_its_recordings_under_legal_hold(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.3)
    config = f"/api/v1/nodes/{take.node_id}/config"
    with hub.client(take.credential) as node:
        assert node.get(config).json()["data"]["held_recordings"] == []
    with hub.admin() as admin:
        assert admin.put(f"{RECORDINGS}/{take.recording_id}/legal-hold", json={"reason": "case 9"}).status_code == 200
    with hub.client(take.credential) as node:
        assert node.get(config).json()["data"]["held_recordings"] == [take.recording_id]


def test_the_node_config_holds_the_retention_floor_of_its_site(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, site="south", seconds=0.3)
    config = f"/api/v1/nodes/{take.node_id}/config"
    south = make_policy(hub, sites=["south"], min_free_bytes_node=7 * 10**9)
    north = make_policy(hub, sites=["north"], min_free_bytes_node=9 * 10**9)
    with hub.client(take.credential) as node:
        assert node.get(config).json()["data"]["cache_policy"]["min_free_bytes"] == 7 * 10**9
    with hub.admin() as admin:
        assert admin.patch(f"{POLICIES}/{north['id']}", json={"sites": []}).status_code == 200  # now every site's
    with hub.client(take.credential) as node:
        assert node.get(config).json()["data"]["cache_policy"]["min_free_bytes"] == 9 * 10**9
    with hub.admin() as admin:
        for policy in (north, south):  # other tests' nodes hold no floor
            assert admin.delete(f"{POLICIES}/{policy['id']}").status_code == 204
