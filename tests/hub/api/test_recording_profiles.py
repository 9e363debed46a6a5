"""Recording profiles: the built-in default, create/read/update/delete with field-level 400s and
versions, list filters, facets and export, permissions and audit."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist

PROFILES = "/api/v1/settings/recording-profiles"
PASSWORD = "profile-test-password"


_sites_exist = sites_exist("north")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def create(hub: HubProcess, **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(PROFILES, json={"name": unique("profile"), **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return [e["action"] for e in reversed(events)]


def test_the_built_in_default_exists_can_be_changed_but_not_renamed_or_deleted(hub: HubProcess) -> None:
    with hub.admin() as admin:
        default = admin.get(f"{PROFILES}/default").json()["data"]
        assert {k: default[k] for k in ("name", "builtin", "format", "sample_rate", "bit_depth", "channels")} == {
            "name": "default",
            "builtin": True,
            "format": "wav",
            "sample_rate": 48000,
            "bit_depth": 24,
            "channels": None,
        }
        assert (default["preroll_s"], default["segment_s"], default["max_duration_s"]) == (0.0, 10.0, 43200.0)
        assert default["actions"]["delete"] == {"allowed": False, "reason": "the built-in profile cannot be deleted"}
        assert admin.get(PROFILES, params={"builtin": "true"}).json()["data"][0]["id"] == "default"
        refused = admin.delete(f"{PROFILES}/default")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
        renamed = admin.patch(f"{PROFILES}/default", json={"name": "mine"})
        assert renamed.status_code == 400 and set(renamed.json()["error"]["fields"]) == {"name"}
        taken = admin.post(PROFILES, json={"name": "default"})
        assert taken.status_code == 409
        version = default["version"]
        longer = admin.patch(f"{PROFILES}/default", json={"segment_s": 20, "version": version})
        assert longer.status_code == 200, longer.text
        assert longer.json()["data"]["segment_s"] == 20.0 and longer.json()["data"]["version"] == version + 1
        back = admin.patch(f"{PROFILES}/default", json={"segment_s": 10})
        assert back.json()["data"]["segment_s"] == 10.0
    assert audit_actions(hub, "default")[-2:] == ["recording_profile.update", "recording_profile.update"]


def test_a_profile_is_created_read_updated_deleted_and_audited(hub: HubProcess) -> None:
    template = None
    with hub.admin() as admin:
        template = admin.post(
            "/api/v1/settings/channel-map-templates",
            json={"name": unique("map"), "channels": [{"input": 0, "name": "L"}, {"input": 1, "name": "R"}]},
        ).json()["data"]
    profile = create(
        hub,
        description="field stereo",
        format="flac",
        sample_rate=96000,
        bit_depth=24,
        channel_map_template_id=template["id"],
        preroll_s=5,
        segment_s=30,
        max_duration_s=3600,
    )
    assert profile["builtin"] is False and profile["version"] == 1 and profile["id"].startswith("rpf_")
    assert (profile["format"], profile["sample_rate"], profile["channels"], profile["preroll_s"]) == ("flac", 96000, None, 5.0)
    path = f"{PROFILES}/{profile['id']}"
    with hub.admin() as admin:
        detail = admin.get(path).json()["data"]
        assert detail["actions"] == {"update": {"allowed": True, "reason": None}, "delete": {"allowed": True, "reason": None}}
        assert admin.get(f"{path}/actions").json()["data"] == detail["actions"]
        patched = admin.patch(path, json={"channels": 2, "version": 1})
        assert patched.status_code == 200 and patched.json()["data"]["version"] == 2
        stale = admin.patch(path, json={"description": "late", "version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        same = admin.patch(path, json={"channels": 2})
        assert same.json()["data"]["version"] == 2, "a change that changes nothing makes no new version"
        wrong_count = admin.patch(path, json={"channels": 4})
        assert wrong_count.status_code == 400 and set(wrong_count.json()["error"]["fields"]) == {"channels"}
        assert admin.delete(path).status_code == 204
        assert admin.get(path).status_code == 404
        assert admin.patch(path, json={"description": "x"}).status_code == 404
    assert audit_actions(hub, profile["id"]) == [
        "recording_profile.create",
        "recording_profile.update",
        "recording_profile.delete",
    ]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"format": "mp3"}, {"format"}),
        ({"sample_rate": 44000}, {"sample_rate"}),
        ({"bit_depth": 8}, {"bit_depth"}),
        ({"format": "flac", "bit_depth": 32}, {"bit_depth"}),
        ({"channels": 0}, {"channels"}),
        ({"channels": 65}, {"channels"}),
        ({"segment_s": 0.5}, {"segment_s"}),
        ({"segment_s": 601}, {"segment_s"}),
        ({"preroll_s": -1}, {"preroll_s"}),
        ({"preroll_s": 31}, {"preroll_s"}),
        ({"max_duration_s": 0}, {"max_duration_s"}),
        ({"max_duration_s": 86401}, {"max_duration_s"}),
        ({"channel_map_template_id": "cmt_missing"}, {"channel_map_template_id"}),
        ({"name": ""}, {"name"}),
        ({"description": "x" * 501}, {"description"}),
        ({"format": "ogg", "sample_rate": 1, "bit_depth": 12}, {"format", "sample_rate", "bit_depth"}),
        ({"sample_rate": "48000"}, {"sample_rate"}),
        ({"bit_depth": True}, {"bit_depth"}),
        ({"colour": "red"}, {"colour"}),
        ({"format": "wav", "sample_rate": 16000, "bit_depth": 32, "channels": 64, "max_duration_s": 86400}, set()),
    ],
)
def test_an_invalid_profile_names_each_problem_and_nothing_is_stored(
    hub: HubProcess, body: dict[str, Any], fields: set[str]
) -> None:
    name = unique("bad")
    with hub.admin() as admin:
        response = admin.post(PROFILES, json={"name": name, **body})
        if not fields:
            assert response.status_code == 201, response.text
            return
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and set(error["fields"]) == fields, error
        assert admin.get(PROFILES, params={"name": body.get("name", name)}).json()["data"] == []


def test_profiles_list_filter_facet_and_export(hub: HubProcess) -> None:
    marker = unique("zephyr")
    made = [create(hub, name=f"{marker}-{i}", format="flac" if i else "wav", bit_depth=16) for i in range(3)]
    with hub.admin() as admin:
        page = admin.get(PROFILES, params={"q": marker, "limit": 2}).json()
        assert [p["id"] for p in page["data"]] == [p["id"] for p in made[:2]]
        rest = admin.get(PROFILES, params={"q": marker, "cursor": page["meta"]["next_cursor"]}).json()
        assert [p["id"] for p in rest["data"]] == [made[2]["id"]] and rest["meta"]["next_cursor"] is None
        flac = admin.get(PROFILES, params={"q": marker, "audio_format": "flac"}).json()["data"]
        assert [p["id"] for p in flac] == [p["id"] for p in made[1:]]
        facets = admin.get(f"{PROFILES}/facets", params={"q": marker, "fields": "audio_format"}).json()["data"]
        assert facets == {"audio_format": [{"value": "flac", "count": 2}, {"value": "wav", "count": 1}]}
        bad = admin.get(PROFILES, params={"sample_rate": "1", "builtin": "maybe"})
        assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"sample_rate", "builtin"}
        exported = admin.get(f"{PROFILES}/export", params={"q": marker, "format": "csv"})
        selected = admin.post(f"{PROFILES}/export?format=ndjson", json={"ids": [made[0]["id"]]})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["name"] for r in rows] == [p["name"] for p in made] and rows[0]["builtin"] == "false"
    assert [json.loads(line)["id"] for line in selected.text.splitlines()] == [made[0]["id"]]


def test_a_viewer_reads_profiles_but_cannot_change_them(hub: HubProcess) -> None:
    profile = create(hub)
    username = unique("viewer")
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": ["viewer"]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    with hub.client(hub.login(username, PASSWORD)) as viewer:
        assert viewer.get(PROFILES).status_code == 200
        assert viewer.get(f"{PROFILES}/{profile['id']}").status_code == 200
        denied = viewer.patch(f"{PROFILES}/{profile['id']}", json={"description": "x"})
        assert denied.status_code == 403 and denied.json()["error"]["required"] == ["settings:manage"]
        assert viewer.post(PROFILES, json={"name": unique("v")}).status_code == 403
        assert viewer.delete(f"{PROFILES}/{profile['id']}").status_code == 403


def test_a_site_limited_admin_reads_profiles_but_cannot_change_what_every_site_records_with(hub: HubProcess) -> None:
    profile = create(hub)
    username = unique("north-admin")
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": ["admin"], "sites": ["north"]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
        default = next(p for p in admin.get(PROFILES).json()["data"] if p["name"] == "default")
    with hub.client(hub.login(username, PASSWORD)) as north:
        assert north.get(PROFILES).status_code == 200
        assert north.get(f"{PROFILES}/{profile['id']}").status_code == 200
        for denied in (
            north.patch(f"{PROFILES}/{default['id']}", json={"sample_rate": 44100}),
            north.post(PROFILES, json={"name": unique("north")}),
            north.delete(f"{PROFILES}/{profile['id']}"),
        ):
            assert denied.status_code == 403, denied.text
            assert denied.json()["error"]["required"] == ["settings:manage"]
    with hub.admin() as admin:
        assert admin.get(f"{PROFILES}/{default['id']}").json()["data"]["sample_rate"] == default["sample_rate"]
        assert admin.get(f"{PROFILES}/{profile['id']}").status_code == 200
