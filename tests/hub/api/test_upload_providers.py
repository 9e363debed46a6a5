"""Upload providers (settings, issue 20): the family's shape, write-only secrets, rotation, tests with and without
saving against real servers, every problem in one 400, versions, deletes refused while in use, audit without secrets."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

from hark_fleet.hub.db.models import UploadItem

from tests.conftest import hub_database
from tests.harness import HubProcess
from tests.offsite_servers import MotoS3, Sshd

PROVIDERS = "/api/v1/settings/upload-providers"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def s3_body(moto_s3: MotoS3, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": unique("bucket"),
        "kind": "s3",
        "config": moto_s3.provider_config(bucket, prefix="hark"),
        "secrets": moto_s3.provider_secrets(),
        **extra,
    }


def create(hub: HubProcess, body: dict[str, Any]) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(PROVIDERS, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def audit_events(hub: HubProcess, **params: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        events: list[dict[str, Any]] = admin.get("/api/v1/audit-events", params={**params, "limit": "200"}).json()["data"]
    return list(reversed(events))


def test_a_provider_is_created_listed_faceted_exported_and_never_shows_its_secret(
    hub: HubProcess, moto_s3: MotoS3, s3_bucket: str
) -> None:
    body = s3_body(moto_s3, s3_bucket, description="the archive", rate_limit_bps=10_000_000)
    provider = create(hub, body)
    assert provider["kind"] == "s3" and provider["secrets_set"] == ["secret_access_key"]
    assert provider["config"]["bucket"] == s3_bucket and provider["config"]["path_style"] is True
    assert provider["config"]["region"] == "us-east-1" and provider["config"]["sse"] is None  # defaults filled in
    assert (provider["version"], provider["last_test"], provider["max_concurrency"]) == (1, None, 2)
    secret = moto_s3.secret_key
    with hub.admin() as admin:
        detail = admin.get(f"{PROVIDERS}/{provider['id']}")
        assert detail.status_code == 200
        assert detail.json()["data"]["actions"]["delete"] == {"allowed": True, "reason": None}
        assert detail.json()["data"]["policies"] == []
        actions = admin.get(f"{PROVIDERS}/{provider['id']}/actions").json()["data"]
        assert set(actions) == {"update", "credentials", "test", "delete"}
        listed = admin.get(PROVIDERS, params={"kind": "s3", "q": provider["name"]})
        assert [p["id"] for p in listed.json()["data"]] == [provider["id"]]
        assert admin.get(PROVIDERS, params={"kind": "sftp", "q": provider["name"]}).json()["data"] == []
        assert admin.get(PROVIDERS, params={"enabled": "maybe"}).status_code == 400
        facets = admin.get(f"{PROVIDERS}/facets", params={"fields": "kind", "q": provider["name"]}).json()["data"]
        assert facets["kind"] == [{"value": "s3", "count": 1}]
        exported = admin.get(f"{PROVIDERS}/export", params={"format": "csv", "q": provider["name"]})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["id"] for r in rows] == [provider["id"]] and "config" not in rows[0]
        selection = admin.post(f"{PROVIDERS}/export", params={"format": "ndjson"}, json={"ids": [provider["id"]]})
        assert [json.loads(line)["id"] for line in selection.text.splitlines()] == [provider["id"]]
        texts = [detail.text, listed.text, exported.text, selection.text]
    assert all(secret not in text for text in texts)
    created = audit_events(hub, target_id=provider["id"])
    assert [e["action"] for e in created] == ["upload_provider.create"]
    assert secret not in json.dumps(created) and secret not in hub.log()


def test_credentials_are_replaced_write_only_and_audited_by_name(hub: HubProcess, moto_s3: MotoS3, s3_bucket: str) -> None:
    provider = create(hub, s3_body(moto_s3, s3_bucket, secrets={"secret_access_key": "the-wrong-secret-123"}))
    with hub.admin() as admin:
        failed = admin.post(f"{PROVIDERS}/{provider['id']}/test")
        assert failed.status_code == 200, failed.text
        assert (failed.json()["data"]["ok"], failed.json()["data"]["failed_step"]) == (False, "authenticate")
        last = admin.get(f"{PROVIDERS}/{provider['id']}").json()["data"]["last_test"]
        assert (last["ok"], last["step"]) == (False, "authenticate") and last["steps"][0]["step"] == "reach"

        empty = admin.put(f"{PROVIDERS}/{provider['id']}/credentials", json={"secret_access_key": ""})
        assert empty.status_code == 400 and set(empty.json()["error"]["fields"]) == {"secrets.secret_access_key"}
        stranger = admin.put(f"{PROVIDERS}/{provider['id']}/credentials", json={"password": "x"})
        assert stranger.status_code == 400
        rotated = admin.put(f"{PROVIDERS}/{provider['id']}/credentials", json=moto_s3.provider_secrets())
        assert rotated.status_code == 200, rotated.text
        data = rotated.json()["data"]
        assert data["secrets_set"] == ["secret_access_key"] and data["last_test"] is None
        assert data["version"] == provider["version"] + 1
        passed = admin.post(f"{PROVIDERS}/{provider['id']}/test").json()["data"]
        assert passed["ok"] and [s["step"] for s in passed["steps"]] == ["reach", "authenticate", "write", "read", "delete"]
        assert admin.get(f"{PROVIDERS}/{provider['id']}").json()["data"]["last_test"]["ok"] is True
    events = audit_events(hub, target_id=provider["id"])
    assert [e["action"] for e in events] == [
        "upload_provider.create",
        "upload_provider.test",
        "upload_provider.credentials",
        "upload_provider.test",
    ]
    rotation = events[2]
    assert rotation["before"]["secrets_set"] == rotation["after"]["secrets_set"] == ["secret_access_key"]
    dumped = json.dumps(events)
    assert "the-wrong-secret-123" not in dumped and moto_s3.secret_key not in dumped
    assert "the-wrong-secret-123" not in hub.log() and moto_s3.secret_key not in hub.log()


def test_an_unsaved_configuration_is_tested_without_being_saved(
    hub: HubProcess, moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    with hub.admin() as admin:
        before = len(admin.get(PROVIDERS, params={"limit": "200"}).json()["data"])
        config = moto_s3.provider_config(s3_bucket)
        good = admin.post(
            f"{PROVIDERS}/test",
            json={"kind": "s3", "config": moto_s3.provider_config(s3_bucket), "secrets": moto_s3.provider_secrets()},
        )
        assert good.status_code == 200, good.text
        assert good.json()["data"]["ok"] is True and good.json()["data"]["failed_step"] is None
        wrong = admin.post(
            f"{PROVIDERS}/test",
            json={"kind": "s3", "config": moto_s3.provider_config(s3_bucket), "secrets": {"secret_access_key": "nope-nope"}},
        )
        report = wrong.json()["data"]
        assert wrong.status_code == 200 and (report["ok"], report["failed_step"]) == (False, "authenticate")
        assert report["steps"][-1]["ok"] is False and "access denied" in report["steps"][-1]["message"]
        missing = admin.post(
            f"{PROVIDERS}/test", json={"kind": "local", "config": {"path": str(tmp_path / "not-mounted")}}
        ).json()["data"]
        assert missing["failed_step"] == "reach" and "not a directory" in missing["steps"][0]["message"]
        saved = admin.post(
            PROVIDERS, json={"name": unique("bucket"), "kind": "s3", "config": config, "secrets": moto_s3.provider_secrets()}
        )
        edited = {"kind": "s3", "config": {**config, "prefix": "edited"}, "provider_id": saved.json()["data"]["id"]}
        with_saved = admin.post(f"{PROVIDERS}/test", json=edited).json()["data"]
        assert with_saved["ok"] is True and "edited/.hark-test-" in with_saved["steps"][2]["message"]  # its saved secret
        other_kind = admin.post(f"{PROVIDERS}/test", json={**edited, "kind": "local", "config": {"path": str(tmp_path)}})
        assert other_kind.status_code == 400 and set(other_kind.json()["error"]["fields"]) == {"provider_id"}
        before += 1
        invalid = admin.post(f"{PROVIDERS}/test", json={"kind": "local", "config": {"path": "relative"}})
        assert invalid.status_code == 400 and set(invalid.json()["error"]["fields"]) == {"config.path"}
        assert len(admin.get(PROVIDERS, params={"limit": "200"}).json()["data"]) == before
    unsaved = [e for e in audit_events(hub, action="upload_provider.test") if e["after"].get("saved") is False]
    assert unsaved and all("secret" not in json.dumps(e["after"]) for e in unsaved)


def test_an_sftp_provider_pins_its_host_key_and_tests_against_sshd(hub: HubProcess, sshd: Sshd, tmp_path: Path) -> None:
    base = tmp_path / "sftp-archive"
    base.mkdir()
    body = {"name": unique("nas"), "kind": "sftp", "config": sshd.provider_config(str(base)), "secrets": sshd.provider_secrets()}
    body["config"]["known_host_key"] = sshd.known_host  # a known_hosts line is accepted and kept as the key alone
    provider = create(hub, body)
    assert provider["config"]["known_host_key"] == sshd.host_key and provider["secrets_set"] == ["private_key"]
    with hub.admin() as admin:
        report = admin.post(f"{PROVIDERS}/{provider['id']}/test").json()["data"]
        assert report["ok"], report
        other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        patched = admin.patch(
            f"{PROVIDERS}/{provider['id']}", json={"config": {"known_host_key": other}, "version": provider["version"]}
        )
        assert patched.status_code == 200, patched.text
        refused = admin.post(f"{PROVIDERS}/{provider['id']}/test").json()["data"]
        assert refused["failed_step"] == "reach" and "differs from the pinned one" in refused["steps"][0]["message"]
        stale = admin.patch(f"{PROVIDERS}/{provider['id']}", json={"enabled": False, "version": provider["version"]})
        assert stale.status_code == 409
    assert "BEGIN OPENSSH PRIVATE KEY" not in json.dumps(audit_events(hub, target_id=provider["id"]))
    assert "BEGIN OPENSSH PRIVATE KEY" not in hub.log()


def test_every_problem_of_a_provider_is_named_in_one_400(hub: HubProcess) -> None:
    with hub.admin() as admin:
        unknown = admin.post(PROVIDERS, json={"name": unique("x"), "kind": "ftp"})
        assert unknown.status_code == 400 and set(unknown.json()["error"]["fields"]) == {"kind"}
        nameless = admin.post(PROVIDERS, json={"kind": "local", "config": {"path": "rel"}})
        assert set(nameless.json()["error"]["fields"]) == {"name", "config.path"}
        s3 = admin.post(
            PROVIDERS,
            json={
                "name": " padded ",
                "kind": "s3",
                "config": {"endpoint_url": "ftp://x", "bucket": "Not_A_Bucket", "sse": "rot13", "colour": "red"},
                "secrets": {},
                "rate_limit_bps": 5,
                "max_concurrency": 99,
            },
        )
        assert s3.status_code == 400
        assert set(s3.json()["error"]["fields"]) == {
            "name",
            "config.endpoint_url",
            "config.bucket",
            "config.sse",
            "config.colour",
            "config.access_key_id",
            "secrets.secret_access_key",
            "rate_limit_bps",
            "max_concurrency",
        }
        sftp = admin.post(
            PROVIDERS,
            json={
                "name": unique("nas"),
                "kind": "sftp",
                "config": {
                    "host": "nas.local",
                    "port": 70000,
                    "username": "rec",
                    "known_host_key": "ssh-ed25519 xyz",
                    "base_path": "rel",
                },
            },
        )
        assert sftp.status_code == 400
        assert set(sftp.json()["error"]["fields"]) == {"config.port", "config.known_host_key", "config.base_path", "secrets"}
        bad_key = admin.post(
            PROVIDERS,
            json={
                "name": unique("nas"),
                "kind": "sftp",
                "config": {"host": "nas.local", "username": "rec", "known_host_key": "nothing", "base_path": "/srv"},
                "secrets": {"private_key": "-----BEGIN NOTHING-----"},
            },
        )
        assert set(bad_key.json()["error"]["fields"]) == {"config.known_host_key", "secrets.private_key"}
        local = admin.post(PROVIDERS, json={"name": unique("dir"), "kind": "local", "config": {"path": "mnt/archive"}})
        assert local.status_code == 400 and set(local.json()["error"]["fields"]) == {"config.path"}
        extra = admin.post(PROVIDERS, json={"name": unique("dir"), "kind": "local", "config": {"path": "/mnt"}, "oops": 1})
        assert extra.status_code == 400


def test_a_provider_keeps_its_kind_and_a_name_is_unique(hub: HubProcess, tmp_path: Path) -> None:
    provider = create(hub, {"name": unique("dir"), "kind": "local", "config": {"path": str(tmp_path)}})
    with hub.admin() as admin:
        kind = admin.patch(f"{PROVIDERS}/{provider['id']}", json={"kind": "s3"})
        assert kind.status_code == 400 and set(kind.json()["error"]["fields"]) == {"kind"}
        assert (
            admin.post(PROVIDERS, json={"name": provider["name"], "kind": "local", "config": {"path": "/x"}}).status_code == 409
        )
        no_secrets = admin.put(f"{PROVIDERS}/{provider['id']}/credentials", json={"password": "x"})
        assert no_secrets.status_code == 400
        assert admin.get(f"{PROVIDERS}/{provider['id']}").json()["data"]["actions"]["credentials"]["allowed"] is False
        same = admin.patch(f"{PROVIDERS}/{provider['id']}", json={"config": {"path": str(tmp_path)}})
        assert same.json()["data"]["version"] == provider["version"]  # nothing changed: no new version
        renamed = admin.patch(f"{PROVIDERS}/{provider['id']}", json={"description": "the NAS mount", "max_concurrency": 4})
        assert renamed.json()["data"]["version"] == provider["version"] + 1
    update = audit_events(hub, target_id=provider["id"])[-1]
    assert update["action"] == "upload_provider.update" and update["after"]["max_concurrency"] == 4


def test_a_directory_provider_cannot_write_into_the_hubs_own_data_directory(hub: HubProcess, tmp_path: Path) -> None:
    inside = {"name": unique("dir"), "kind": "local", "config": {"path": str(hub.data_dir / "recordings" / "archive")}}
    with hub.admin() as admin:
        for route in (PROVIDERS, f"{PROVIDERS}/test"):
            refused = admin.post(route, json=inside)
            assert refused.status_code == 400 and set(refused.json()["error"]["fields"]) == {"config.path"}, refused.text
        provider = create(hub, {"name": unique("dir"), "kind": "local", "config": {"path": str(tmp_path)}})
        moved = admin.patch(f"{PROVIDERS}/{provider['id']}", json={"config": {"path": str(hub.data_dir)}})
        assert moved.status_code == 400 and "data directory" in moved.json()["error"]["fields"]["config.path"]
        assert admin.get(f"{PROVIDERS}/{provider['id']}").json()["data"]["config"]["path"] == str(tmp_path)


def test_a_provider_in_use_is_not_deleted_and_says_why(hub: HubProcess, tmp_path: Path) -> None:
    provider = create(hub, {"name": unique("dir"), "kind": "local", "config": {"path": str(tmp_path)}})
    with hub.admin() as admin:
        policy = admin.post("/api/v1/settings/upload-policies", json={"name": unique("policy"), "provider_ids": [provider["id"]]})
        assert policy.status_code == 201, policy.text
        refused = admin.delete(f"{PROVIDERS}/{provider['id']}")
        assert refused.status_code == 409 and policy.json()["data"]["name"] in refused.json()["error"]["message"]
        detail = admin.get(f"{PROVIDERS}/{provider['id']}").json()["data"]
        assert detail["actions"]["delete"]["allowed"] is False and detail["policies"][0]["id"] == policy.json()["data"]["id"]
        assert admin.delete(f"/api/v1/settings/upload-policies/{policy.json()['data']['id']}").status_code == 204

    with hub_database(hub):
        for state in ("uploading", "queued", "synced"):
            UploadItem.create(id=unique("upi"), recording_id=unique("rec"), provider_id=provider["id"], node_id="n1", state=state)
    with hub.admin() as admin:
        busy = admin.delete(f"{PROVIDERS}/{provider['id']}")
        assert busy.status_code == 409 and "in progress" in busy.json()["error"]["message"]
    with hub_database(hub):
        UploadItem.update(state="failed").where(
            UploadItem.provider_id == provider["id"], UploadItem.state == "uploading"
        ).execute()
    with hub.admin() as admin:
        assert admin.delete(f"{PROVIDERS}/{provider['id']}").status_code == 204
        assert admin.get(f"{PROVIDERS}/{provider['id']}").status_code == 404
    with hub_database(hub):
        left = [i.state for i in UploadItem.select().where(UploadItem.provider_id == provider["id"])]
    assert left == ["synced"]  # the record of a copy stays; unsent items went with the provider
    assert audit_events(hub, target_id=provider["id"])[-1]["action"] == "upload_provider.delete"
