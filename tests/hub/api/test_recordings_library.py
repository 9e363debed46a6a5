"""The recordings library: search and facets, detail and context, metadata, deletion, downloads, seekable playback, waveforms."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from hark_fleet.hub.clock import iso, utcnow

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import (
    LEVEL,
    audit_of,
    completed_recording,
    enroll,
    rows,
    stored_path,
    uploading_recording,
)

PASSWORD = "library-test-password"
RECORDINGS = "/api/v1/recordings"


_sites_exist = sites_exist("north", "south", "west")


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = f"lib-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
        if sites is not None:
            body["sites"] = sites
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


@pytest.fixture(scope="module")
def stored(hub: HubProcess) -> tuple[Any, bytes]:
    """One completed WAV recording, shared by the read-only tests."""
    return completed_recording(hub, seconds=2.0, metadata={"project": "Dawn Chorus", "mic": {"model": "MKH 8040"}})


# -- playback and download ---------------------------------------------------------------------


def test_range_requests_return_the_uploaded_bytes(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    size = len(data)
    url = f"{RECORDINGS}/{take.recording_id}/stream"
    with hub.admin() as admin:
        whole = admin.get(url)
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-length"] == str(size)
        assert whole.headers["content-disposition"].startswith("inline;")
        cases = {
            "bytes=0-99": (0, 99),  # the first bytes: the header a player reads
            "bytes=1000-1999": (1000, 1999),  # a seek into the middle
            "bytes=-100": (size - 100, size - 1),  # the last 100
            f"bytes={size - 10}-": (size - 10, size - 1),  # from an offset to the end
            f"bytes={size - 10}-{size + 500}": (size - 10, size - 1),  # past the end is clipped
        }
        for header, (first, last) in cases.items():
            part = admin.get(url, headers={"Range": header})
            assert part.status_code == 206, header
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
            assert part.content == data[first : last + 1], header
        for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            refused = admin.get(url, headers={"Range": header})
            assert refused.status_code == 416, header
            assert refused.headers["content-range"] == f"bytes */{size}"
            assert refused.json()["error"]["code"] == "range_not_satisfiable"
        assert admin.get(url, headers={"Range": "bytes=0-1,5-9"}).status_code == 200  # several ranges: the whole file
        etag = whole.headers["etag"]
        assert admin.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
        assert admin.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}).status_code == 200


def test_the_stream_decodes_as_the_sine_that_was_recorded(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, _ = stored
    with hub.admin() as admin:
        body = admin.get(f"{RECORDINGS}/{take.recording_id}/stream").content
    audio, rate = soundfile.read(io.BytesIO(body))
    assert rate == 48000 and audio.shape == (96000, 2)
    assert abs(np.max(np.abs(audio)) - LEVEL) < 1e-3


def test_playback_and_download_work_without_an_authorization_header(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    token = hub.login()
    with hub.admin() as admin:
        playback = admin.post(f"{RECORDINGS}/{take.recording_id}/playback")
        download = admin.post(f"{RECORDINGS}/{take.recording_id}/download")
    assert playback.status_code == 200 and download.status_code == 200
    play = playback.json()["data"]
    assert play["url"] == f"{RECORDINGS}/{take.recording_id}/stream"
    assert play["content_type"] == "audio/wav" and play["size_bytes"] == len(data) and play["duration_s"] == 2.0
    assert play["waveform_url"] == f"{RECORDINGS}/{take.recording_id}/waveform"
    assert download.json()["data"]["url"] == f"{RECORDINGS}/{take.recording_id}/file"
    # An <audio> element: the token in the query string...
    with httpx.Client(base_url=hub.url) as browser:
        assert browser.get(play["url"], params={"token": token}, headers={"Range": "bytes=0-3"}).content == b"RIFF"
        assert browser.get(play["url"]).status_code == 401
        file = browser.get(download.json()["data"]["url"], params={"token": token})
    assert file.status_code == 200 and file.content == data
    assert file.headers["content-disposition"].startswith("attachment;")
    assert f'filename="take {take.recording_id[-6:]}.wav"' in file.headers["content-disposition"]  # named for the recording
    # ...or the console's session cookie.
    login = httpx.post(
        f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": "correct-horse-battery-staple", "cookie": True}
    )
    with httpx.Client(base_url=hub.url, cookies=login.cookies) as console:
        assert console.get(play["url"], headers={"Range": "bytes=0-3"}).content == b"RIFF"
    actions = [a["action"] for a in audit_of(hub, take.recording_id)]
    assert "recording.download" in actions


def test_a_recording_without_a_file_cannot_be_played(hub: HubProcess) -> None:
    take = uploading_recording(hub)
    with hub.admin() as admin:
        for path in ("playback", "download"):
            answer = admin.post(f"{RECORDINGS}/{take.recording_id}/{path}")
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "no_file"
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/stream").status_code == 409
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/waveform").status_code == 409


def test_the_waveform_has_min_and_max_per_bucket_and_is_cached(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, _ = stored
    with hub.admin() as admin:
        answer = admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": 100})
        assert answer.status_code == 200, answer.text
        wave = answer.json()["data"]
        assert (wave["buckets"], wave["frames"], wave["sample_rate"], wave["duration_s"]) == (100, 96000, 48000, 2.0)
        assert [c["index"] for c in wave["channels"]] == [0, 1]
        for channel in wave["channels"]:
            assert len(channel["min"]) == len(channel["max"]) == 100
            assert all(abs(v - LEVEL) < 1e-3 for v in channel["max"])  # 960 frames per bucket: a whole cycle or more
            assert all(abs(v + LEVEL) < 1e-3 for v in channel["min"])
        assert stored_path(hub, take).with_name(f"{take.recording_id}.wav.waveform-100.json").is_file()
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": 100}).json()["data"] == wave
        many = admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": 10000}).json()["data"]
        assert len(many["channels"][0]["max"]) == 10000
        for bad in ("0", "10001", "x"):
            assert admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": bad}).status_code == 400


def test_a_flac_recording_streams_as_audio_flac(hub: HubProcess) -> None:
    take, data = completed_recording(hub, fmt="flac", seconds=1.0)
    with hub.admin() as admin:
        answer = admin.get(f"{RECORDINGS}/{take.recording_id}/stream", headers={"Range": "bytes=0-3"})
        wave = admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": 10}).json()["data"]
    assert answer.status_code == 206 and answer.headers["content-type"] == "audio/flac" and answer.content == b"fLaC"
    assert wave["frames"] == 48000 and abs(wave["channels"][0]["max"][5] - LEVEL) < 1e-3


# -- reads --------------------------------------------------------------------------------------


def test_list_filters_search_time_range_facets_and_export(hub: HubProcess) -> None:
    node = enroll(hub, "west")
    base = utcnow() - timedelta(days=30)
    early = uploading_recording(hub, node=node, site="west", started_at=base, metadata={"habitat": "Estuary"})
    late = uploading_recording(hub, node=node, site="west", started_at=base + timedelta(hours=2), interrupted=True)
    flac, _ = completed_recording(hub, node=node, site="west", fmt="flac", seconds=0.5, name="Nightjar survey")
    with hub.admin() as admin:

        def ids(**params: Any) -> list[str]:
            answer = admin.get(RECORDINGS, params={"node_id": node[0], **params})
            assert answer.status_code == 200, answer.text
            return [r["id"] for r in answer.json()["data"]]

        assert ids() == [flac.recording_id, late.recording_id, early.recording_id]  # newest first
        assert ids(status="uploading") == [late.recording_id, early.recording_id]
        assert ids(status=["completed", "failed"]) == [flac.recording_id]
        assert ids(format="flac") == [flac.recording_id]
        assert ids(interrupted="true") == [late.recording_id]
        assert ids(q="estuary") == [early.recording_id]  # metadata text, any case
        assert ids(q="NIGHTJAR") == [flac.recording_id]  # the name
        window = {"from": iso(base - timedelta(minutes=1)), "to": iso(base + timedelta(hours=1))}
        assert ids(**window) == [early.recording_id]
        assert ids(limit=2) == [flac.recording_id, late.recording_id]
        page = admin.get(RECORDINGS, params={"node_id": node[0], "limit": 2}).json()
        rest = admin.get(RECORDINGS, params={"node_id": node[0], "limit": 2, "cursor": page["meta"]["next_cursor"]}).json()
        assert [r["id"] for r in rest["data"]] == [early.recording_id] and rest["meta"]["next_cursor"] is None
        shown = admin.get(RECORDINGS, params={"node_id": node[0], "format": "flac"}).json()["data"][0]
        assert shown["job_id"] == flac.job_id and shown["status"] == "completed"
        bad = admin.get(RECORDINGS, params={"status": "done", "format": "mp3", "interrupted": "maybe", "colour": "x"})
        assert bad.status_code == 400
        assert set(bad.json()["error"]["fields"]) == {"status", "format", "interrupted", "colour"}

        facets = admin.get(f"{RECORDINGS}/facets", params={"node_id": node[0]}).json()["data"]
        assert {f["value"]: f["count"] for f in facets["status"]} == {"uploading": 2, "completed": 1}
        assert {f["value"]: f["count"] for f in facets["format"]} == {"wav": 2, "flac": 1}
        only = admin.get(f"{RECORDINGS}/facets", params={"node_id": node[0], "fields": "format"}).json()["data"]
        assert set(only) == {"format"}

        exported = admin.get(f"{RECORDINGS}/export", params={"node_id": node[0], "format": "csv"})
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in table] == [flac.recording_id, late.recording_id, early.recording_id]
        assert table[0]["job_id"] == flac.job_id and table[0]["format"] == "flac"
        selection = admin.post(
            f"{RECORDINGS}/export",
            params={"format": "ndjson"},
            json={"ids": [early.recording_id, flac.recording_id], "filters": {"format": "wav"}},
        )
        lines = [json.loads(line) for line in selection.text.splitlines()]
        assert [r["id"] for r in lines] == [early.recording_id]
        audio = admin.get(f"{RECORDINGS}/export", params={"node_id": node[0], "format": "ndjson", "audio_format": "flac"})
        assert [json.loads(line)["id"] for line in audio.text.splitlines()] == [flac.recording_id]


def test_detail_actions_follow_state_and_permissions(hub: HubProcess, stored: tuple[Any, bytes]) -> None:
    take, data = stored
    running = uploading_recording(hub, status="recording")
    viewer = user_token(hub, ["viewer"])
    with hub.admin() as admin:
        detail = admin.get(f"{RECORDINGS}/{take.recording_id}").json()["data"]
        assert detail["id"] == take.recording_id and detail["size_bytes"] == len(data) and detail["job_id"] == take.job_id
        assert all(state["allowed"] for name, state in detail["actions"].items() if name != "stop")
        assert detail["actions"]["stop"]["allowed"] is False
        live = admin.get(f"{RECORDINGS}/{running.recording_id}/actions").json()["data"]
        assert live["stop"] == {"allowed": True, "reason": None}
        assert live["delete"]["allowed"] is False and "recording" in live["delete"]["reason"]
        assert live["playback"]["allowed"] is False
    with hub.client(viewer) as client:
        seen = client.get(f"{RECORDINGS}/{take.recording_id}/actions").json()["data"]
        assert seen["playback"] == {"allowed": False, "reason": "needs recording:playback on this recording's site"}
        assert seen["delete"]["allowed"] is False
        assert client.get(f"{RECORDINGS}/{take.recording_id}/stream").status_code == 403
    with hub.admin() as admin:
        assert admin.get(f"{RECORDINGS}/rec_missing").status_code == 404


def test_context_gathers_node_job_profile_integrity_and_health_meanwhile(hub: HubProcess) -> None:
    node_id, credential = enroll(hub, "north")
    now = utcnow()

    def report(kind: str, state: str) -> None:
        body = {
            "msg_id": uuid.uuid4().hex,
            "ts": iso(utcnow()),
            "kind": kind,
            "state": state,
            "severity": "warning",
            "details": {},
        }
        with hub.client(credential) as client:
            assert client.post(f"/api/v1/nodes/{node_id}/health-events", json=body).status_code == 200

    report("disk.low", "open")
    report("clock.unsynced", "open")
    report("clock.unsynced", "resolved")
    take = uploading_recording(hub, node=(node_id, credential), started_at=now - timedelta(seconds=30), seconds=60)
    past = uploading_recording(hub, node=(node_id, credential), started_at=now - timedelta(days=2), seconds=60)
    with hub.admin() as admin:
        context = admin.get(f"{RECORDINGS}/{take.recording_id}/context").json()["data"]
        earlier = admin.get(f"{RECORDINGS}/{past.recording_id}/context").json()["data"]
    assert context["recording"]["id"] == take.recording_id
    assert context["node"]["id"] == node_id and context["job"]["id"] == take.job_id
    assert context["profile"]["sample_rate"] == 48000 and context["integrity"]["gaps"] == []
    assert sorted(e["kind"] for e in context["health_events"]) == ["clock.unsynced", "disk.low"]
    # The node's events all began after the take of two days ago ended.
    assert earlier["health_events"] == []


# -- metadata ----------------------------------------------------------------------------------------


def test_metadata_merges_deletes_with_null_and_keeps_limits(hub: HubProcess) -> None:
    take = uploading_recording(hub, metadata={"project": "dawn", "mic": {"model": "MKH 8040", "pair": "ORTF"}})
    url = f"{RECORDINGS}/{take.recording_id}/metadata"
    with hub.admin() as admin:
        changed = admin.patch(url, json={"mic": {"pair": None, "height_m": 2.5}, "project": None, "reviewed": True})
        assert changed.status_code == 200, changed.text
        assert changed.json()["data"]["metadata"] == {"mic": {"model": "MKH 8040", "height_m": 2.5}, "reviewed": True}
        too_big = admin.patch(url, json={"notes": "x" * 20000})
        assert too_big.status_code == 400 and "metadata" in too_big.json()["error"]["fields"]
        too_many = admin.patch(url, json={f"k{i}": i for i in range(101)})
        assert too_many.status_code == 400
        assert admin.patch(url, json={"k" * 101: 1}).status_code == 400
        assert admin.patch(url, json=["not", "an", "object"]).status_code == 400
        assert admin.patch(url, content=b"").status_code == 400
        kept = admin.get(f"{RECORDINGS}/{take.recording_id}").json()["data"]["metadata"]
        assert kept == {"mic": {"model": "MKH 8040", "height_m": 2.5}, "reviewed": True}
    audit = [a for a in audit_of(hub, take.recording_id) if a["action"] == "recording.metadata.update"]
    assert len(audit) == 1 and audit[0]["before"]["metadata"]["project"] == "dawn"


def test_bulk_metadata_answers_per_id(hub: HubProcess) -> None:
    one = uploading_recording(hub)
    two = uploading_recording(hub, metadata={"old": 1})
    with hub.admin() as admin:
        answer = admin.post(
            f"{RECORDINGS}/bulk-metadata",
            json={"ids": [one.recording_id, two.recording_id, "rec_missing"], "metadata": {"batch": "b7", "old": None}},
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["data"]
        assert [(r["id"], r["ok"]) for r in results] == [
            (one.recording_id, True),
            (two.recording_id, True),
            ("rec_missing", False),
        ]
        assert results[1]["recording"]["metadata"] == {"batch": "b7"}
        assert results[2]["error"]["code"] == "not_found"
        assert admin.post(f"{RECORDINGS}/bulk-metadata", json={"ids": [], "metadata": {}}).status_code == 400


# -- deletion ------------------------------------------------------------------------------------------


def test_only_finished_recordings_are_deleted_with_their_files(hub: HubProcess) -> None:
    take, _ = completed_recording(hub)
    path = stored_path(hub, take)
    busy = uploading_recording(hub)
    with hub.admin() as admin:
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": 8}).status_code == 200
        refused = admin.delete(f"{RECORDINGS}/{busy.recording_id}")
        assert refused.status_code == 409 and "uploading" in refused.json()["error"]["message"]
        assert admin.delete(f"{RECORDINGS}/{take.recording_id}").status_code == 204
        assert admin.get(f"{RECORDINGS}/{take.recording_id}").status_code == 404
        assert admin.delete(f"{RECORDINGS}/{take.recording_id}").status_code == 404
    assert not path.exists() and not list(path.parent.glob(f"{take.recording_id}*"))
    recording, job = rows(hub, take)
    assert recording is None and job is None
    deleted = [a for a in audit_of(hub, take.recording_id) if a["action"] == "recording.delete"]
    assert len(deleted) == 1 and deleted[0]["before"]["status"] == "completed" and deleted[0]["actor"]["name"] == "admin"
    operator = user_token(hub, ["operator"])
    with hub.client(operator) as client:  # operators edit and download but do not delete
        assert client.delete(f"{RECORDINGS}/{busy.recording_id}").status_code == 403


def test_bulk_delete_answers_per_id(hub: HubProcess) -> None:
    done, _ = completed_recording(hub, seconds=0.5)
    failed = uploading_recording(hub, status="failed")
    busy = uploading_recording(hub)
    with hub.admin() as admin:
        answer = admin.post(
            f"{RECORDINGS}/bulk-delete", json={"ids": [done.recording_id, failed.recording_id, busy.recording_id]}
        )
        assert answer.status_code == 200, answer.text
        assert [(r["id"], r["ok"]) for r in answer.json()["data"]] == [
            (done.recording_id, True),
            (failed.recording_id, True),
            (busy.recording_id, False),
        ]
        assert answer.json()["data"][2]["error"]["code"] == "conflict"
        remaining = {
            r["id"]
            for r in admin.get(RECORDINGS, params={"node_id": [done.node_id, failed.node_id, busy.node_id]}).json()["data"]
        }
    assert remaining == {busy.recording_id}


# -- site scope ---------------------------------------------------------------------------------------


def test_a_site_limited_user_sees_only_their_sites(hub: HubProcess) -> None:
    north, _ = completed_recording(hub, site="north", seconds=0.5)
    south, _ = completed_recording(hub, site="south", seconds=0.5)
    token = user_token(hub, ["admin"], sites=["south"])
    with hub.client(token) as client:
        listed = {r["id"] for r in client.get(RECORDINGS, params={"node_id": [north.node_id, south.node_id]}).json()["data"]}
        assert listed == {south.recording_id}
        for method, suffix in (
            ("GET", ""),
            ("GET", "/actions"),
            ("GET", "/context"),
            ("GET", "/stream"),
            ("GET", "/file"),
            ("GET", "/waveform"),
            ("POST", "/playback"),
            ("POST", "/download"),
            ("DELETE", ""),
        ):
            assert client.request(method, f"{RECORDINGS}/{north.recording_id}{suffix}").status_code == 404, (method, suffix)
        assert client.patch(f"{RECORDINGS}/{north.recording_id}/metadata", json={"a": 1}).status_code == 404
        assert client.get(f"{RECORDINGS}/{south.recording_id}/stream").status_code == 200
        bulk = client.post(f"{RECORDINGS}/bulk-delete", json={"ids": [north.recording_id]}).json()["data"]
        assert bulk[0]["error"]["code"] == "not_found"
        exported = client.get(f"{RECORDINGS}/export", params={"format": "ndjson", "node_id": north.node_id})
        assert exported.text == ""
    with hub.admin() as admin:
        assert admin.get(f"{RECORDINGS}/{north.recording_id}").status_code == 200
