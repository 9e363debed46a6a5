"""Share links through the API (issue 23): made for completed recordings only, validated, site-scoped, audited,
listed with facets and exports, revoked but kept; the token and the password are never stored in clear."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hark_fleet.hub.auth.tokens import secret_hash
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ShareLink

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.hub.api.sites import sites_exist
from tests.hub.api.test_recording_upload import audit_of, completed_recording, uploading_recording
from tests.hub.api.test_recordings_library import user_token

RECORDINGS = "/api/v1/recordings"
LINKS = "/api/v1/share-links"
PASSWORD = "open sesame 42"

_sites_exist = sites_exist("north", "south")


def soon(days: float = 2.0) -> str:
    return iso(utcnow() + timedelta(days=days)) or ""


def make(hub: HubProcess, recording_id: str, token: str | None = None, **body: Any) -> Any:
    with hub.client(token) if token else hub.admin() as client:
        return client.post(f"{RECORDINGS}/{recording_id}/share-links", json={"expires_at": soon(), **body})


def stored_row(hub: HubProcess, link_id: str) -> ShareLink:
    with hub_database(hub):
        return ShareLink.get_by_id(link_id)


def test_a_link_is_made_shown_once_and_stored_hashed(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.5, name="Dawn chorus")
    answer = make(hub, take.recording_id, password=PASSWORD, max_uses=3, allow_download=True, label="for Ana")
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    token, link = data["token"], data["share_link"]
    assert data["url"].endswith(f"/s/{token}") and data["url"].startswith("http")
    assert len(token) >= 43
    assert link["recording_id"] == take.recording_id and link["recording_name"] == "Dawn chorus"
    assert (link["site"], link["label"], link["max_uses"], link["uses"]) == ("north", "for Ana", 3, 0)
    assert link["has_password"] is True and link["allow_download"] is True and link["state"] == "active"
    assert link["token_prefix"] == token[:8] and link["created_by"]["name"] == "admin"
    assert link["actions"]["revoke"] == {"allowed": True, "reason": None}
    assert "token" not in link and "password" not in json.dumps(link).lower().replace("has_password", "")
    row = stored_row(hub, link["id"])
    assert row.token_sha256 == secret_hash(token) and token not in json.dumps(row.__data__, default=str)
    assert row.password_hash is not None and row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    with hub.admin() as admin:
        detail = admin.get(f"{LINKS}/{link['id']}").json()["data"]
        assert detail == link
        listed = admin.get(f"{RECORDINGS}/{take.recording_id}/share-links").json()
        assert [x["id"] for x in listed["data"]] == [link["id"]] and listed["meta"]["next_cursor"] is None
    created = [a for a in audit_of(hub, take.recording_id) if a["action"] == "share_link.create"]
    assert len(created) == 1 and created[0]["permission"] == "recording:share" and created[0]["site"] == "north"
    text = json.dumps(created[0])
    assert token not in text and PASSWORD not in text and "$argon2" not in text


def test_bad_bodies_are_400_naming_the_field_and_make_nothing(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    cases = [
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": iso(utcnow() - timedelta(minutes=1))}, "expires_at"),
        ({"expires_at": soon(31)}, "expires_at"),  # share_link_max_days is 30 by default
        ({"password": "short"}, "password"),
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 100_001}, "max_uses"),
        ({"label": "x" * 201}, "label"),
        ({"label": "two\nlines"}, "label"),
        ({"allow_download": "yes"}, "allow_download"),
        ({"colour": "red"}, "colour"),
    ]
    for override, field in cases:
        answer = make(hub, take.recording_id, **override)
        assert answer.status_code == 400, (override, answer.text)
        assert field in answer.json()["error"]["fields"], (override, answer.text)
    with hub.admin() as admin:
        missing = admin.post(f"{RECORDINGS}/{take.recording_id}/share-links", json={"label": "no expiry"})
        assert missing.status_code == 400 and "expires_at" in missing.json()["error"]["fields"]
        assert admin.get(f"{RECORDINGS}/{take.recording_id}/share-links").json()["data"] == []
    assert make(hub, "rec_missing").status_code == 404


def test_only_a_completed_recording_with_its_file_can_be_shared(hub: HubProcess) -> None:
    for status in ("uploading", "failed", "cancelled"):
        take = uploading_recording(hub, status=status)
        answer = make(hub, take.recording_id)
        assert answer.status_code == 409, (status, answer.text)
        assert answer.json()["error"]["code"] == "not_shareable"


def test_permission_and_site_scope(hub: HubProcess) -> None:
    north, _ = completed_recording(hub, seconds=0.5, site="north")
    south, _ = completed_recording(hub, seconds=0.5, site="south")
    viewer = user_token(hub, ["viewer"])
    refused = make(hub, north.recording_id, viewer)
    assert refused.status_code == 403 and refused.json()["error"]["required"] == ["recording:share"]
    operator = user_token(hub, ["operator"], sites=["north"])
    assert make(hub, north.recording_id, operator).status_code == 201
    assert make(hub, south.recording_id, operator).status_code == 404
    south_link = make(hub, south.recording_id).json()["data"]["share_link"]
    with hub.client(operator) as client:
        assert client.get(f"{LINKS}/{south_link['id']}").status_code == 404
        assert client.delete(f"{LINKS}/{south_link['id']}").status_code == 404
        assert client.get(f"{RECORDINGS}/{south.recording_id}/share-links").status_code == 404
        sites = {x["site"] for x in client.get(LINKS, params={"limit": 200}).json()["data"]}
        assert sites == {"north"}
        facet_sites = {f["value"] for f in client.get(f"{LINKS}/facets").json()["data"]["site"]}
        assert facet_sites == {"north"}
    with hub.client(viewer) as client:
        assert client.get(LINKS).status_code == 403
    assert stored_row(hub, south_link["id"]).revoked_at is None


def test_revoking_keeps_the_link_audited_and_is_idempotent(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    link = make(hub, take.recording_id).json()["data"]["share_link"]
    with hub.admin() as admin:
        assert admin.delete(f"{LINKS}/{link['id']}").status_code == 204
        assert admin.delete(f"{LINKS}/{link['id']}").status_code == 204
        after = admin.get(f"{LINKS}/{link['id']}").json()["data"]
        assert admin.delete(f"{LINKS}/shl_missing").status_code == 404
    assert after["state"] == "revoked" and after["revoked_by"]["name"] == "admin" and after["revoked_at"] is not None
    assert after["actions"]["revoke"]["allowed"] is False
    revokes = [a for a in audit_of(hub, take.recording_id) if a["action"] == "share_link.revoke"]
    assert len(revokes) == 1
    assert revokes[0]["before"]["state"] == "active" and revokes[0]["after"]["state"] == "revoked"


def test_list_filters_facets_and_export(hub: HubProcess) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    ids = [
        make(hub, take.recording_id, label=f"list-{n}", allow_download=n == 0).json()["data"]["share_link"]["id"]
        for n in range(3)
    ]
    with hub.admin() as admin:
        assert admin.delete(f"{LINKS}/{ids[2]}").status_code == 204
        args = {"recording_id": take.recording_id}
        active = admin.get(LINKS, params={**args, "state": "active"}).json()["data"]
        assert [x["id"] for x in active] == [ids[1], ids[0]]  # newest first
        revoked = admin.get(LINKS, params={**args, "state": "revoked"}).json()["data"]
        assert [x["id"] for x in revoked] == [ids[2]]
        assert [x["id"] for x in admin.get(LINKS, params={**args, "q": "LIST-1"}).json()["data"]] == [ids[1]]
        downloads = admin.get(LINKS, params={**args, "allow_download": "true"}).json()["data"]
        assert [x["id"] for x in downloads] == [ids[0]]
        page = admin.get(LINKS, params={**args, "limit": 2}).json()
        rest = admin.get(LINKS, params={**args, "limit": 2, "cursor": page["meta"]["next_cursor"]}).json()
        assert [x["id"] for x in page["data"] + rest["data"]] == ids[::-1] and rest["meta"]["next_cursor"] is None
        facets = admin.get(f"{LINKS}/facets", params=args).json()["data"]
        assert {f["value"]: f["count"] for f in facets["state"]} == {"active": 2, "revoked": 1}
        assert admin.get(f"{LINKS}/facets", params={**args, "fields": "state"}).json()["data"].keys() == {"state"}
        bad = admin.get(LINKS, params={"state": "gone"})
        assert bad.status_code == 400 and "state" in bad.json()["error"]["fields"]
        assert admin.get(f"{LINKS}/facets", params={"fields": "colour"}).status_code == 400
        csv = admin.get(f"{LINKS}/export", params={**args, "format": "csv"})
        assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("id,recording_id,recording_name")
        assert len(csv.text.splitlines()) == 4
        ndjson = admin.post(f"{LINKS}/export", params={"format": "ndjson"}, json={"ids": ids[:2]})
        assert sorted(json.loads(line)["id"] for line in ndjson.text.splitlines()) == sorted(ids[:2])
