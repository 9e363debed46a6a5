"""The direct route's agent API against a real hub and a signature-checking moto S3 server (issue 20).

The test plays the node: it claims its item, hashes parts, PUTs them to the presigned URLs with plain
HTTP and completes. Fencing (another node's credential), stale leases, bad input, resuming after a
restart, a copy S3 holds that is not what the node hashed, and a file that is not the recording's.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hark_fleet.hub.db.models import Recording, UploadItem, UploadProvider
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.secret_box import SecretBox

from tests.conftest import hub_database
from tests.direct_s3 import PresignableMotoS3 as MotoS3
from tests.direct_s3 import presignable_s3_fixture  # noqa: F401 - the fixture presignable_s3
from tests.harness import HubProcess, wait_for

MIB = 1024 * 1024
PART = 8 * MIB  # the hub's part size for files up to 80 GB


@dataclass
class Node:
    id: str
    credential: str


@dataclass
class Setup:
    node: Node
    other: Node
    item_id: str
    recording_id: str
    key: str
    bucket: str
    data: bytes


def enroll(hub: HubProcess) -> Node:
    hub.ensure_site("north")
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"direct-{uuid.uuid4().hex[:6]}", "site": "north"})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return Node(data["node"]["id"], data["credential"])


def queued_item(
    hub: HubProcess, presignable_s3: MotoS3, node: Node, data: bytes, bucket: str, **recording: Any
) -> tuple[str, str, str]:
    """An S3 provider, a recording whose capture ended on `node` (the hub has no copy) and its queued direct item."""
    provider_id, recording_id, item_id = new_id("upv"), new_id("rec"), new_id("upi")
    key = f"north/{node.id}/{recording_id}.wav"
    box = SecretBox.open_dir(hub.data_dir)
    with hub_database(hub):
        UploadProvider.create(
            id=provider_id,
            name=f"s3-{provider_id}",
            kind="s3",
            config=presignable_s3.provider_config(bucket),
            sealed_secrets=box.seal(presignable_s3.provider_secrets(), f"upload_provider:{provider_id}"),
            secret_names=["secret_access_key"],
        )
        fields: dict[str, Any] = {
            "status": "uploading",
            "integrity": {
                "file": {"name": f"{recording_id}.wav", "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
            },
            **recording,
        }
        Recording.create(
            id=recording_id, node_id=node.id, site="north", name="take", format="wav", sample_rate=48000, bit_depth=24, **fields
        )
        UploadItem.create(
            id=item_id,
            recording_id=recording_id,
            provider_id=provider_id,
            site="north",
            node_id=node.id,
            route="direct",
            state="queued",
            remote_key=key,
            bytes_total=len(data),
        )
    return item_id, recording_id, key


@pytest.fixture
def setup(hub: HubProcess, presignable_s3: MotoS3) -> Setup:
    s3_bucket = presignable_s3.create_bucket()
    node, other = enroll(hub), enroll(hub)
    data = os.urandom(PART + 3 * MIB + 17)  # two parts
    item_id, recording_id, key = queued_item(hub, presignable_s3, node, data, s3_bucket)
    return Setup(node, other, item_id, recording_id, key, s3_bucket, data)


def post(hub: HubProcess, node: Node, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    with hub.client(node.credential) as client:
        return client.post(f"/api/v1{path}", json=body if body is not None else {})


def claim(hub: HubProcess, node: Node, active: list[str] | None = None) -> httpx.Response:
    return post(hub, node, f"/nodes/{node.id}/direct-uploads/claim", {"active": active or []})


def parts_of(data: bytes, part_size: int) -> list[dict[str, Any]]:
    chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]
    return [{"n": n, "sha256": hashlib.sha256(c).hexdigest(), "size": len(c), "bytes": c} for n, c in enumerate(chunks, 1)]


def sign(hub: HubProcess, s: Setup, epoch: int, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"lease_epoch": epoch, "parts": [{k: p[k] for k in ("n", "sha256", "size")} for p in parts]}
    response = post(hub, s.node, f"/direct-uploads/{s.item_id}/parts", body)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["parts"])


def put(url: dict[str, Any], body: bytes) -> None:
    """PUT one part as the node does: plain HTTP, the signed headers, no credential of the hub's."""
    answer = httpx.put(url["url"], content=body, headers=url["headers"], timeout=60)
    assert answer.status_code == 200, answer.text


def item(hub: HubProcess, item_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/upload-queue/{item_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def object_bytes(presignable_s3: MotoS3, bucket: str, key: str) -> bytes:
    return bytes(presignable_s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_node_sends_its_recording_straight_to_s3_and_the_item_is_synced_with_part_checksums(
    hub: HubProcess, presignable_s3: MotoS3, setup: Setup
) -> None:
    s = setup
    claimed = claim(hub, s.node)
    assert claimed.status_code == 200, claimed.text
    upload = claimed.json()["data"]["upload"]
    assert claimed.json()["data"]["item"]["state"] == "uploading"
    assert upload["size"] == len(s.data) and upload["sha256"] == hashlib.sha256(s.data).hexdigest()
    assert upload["part_size"] == PART and upload["part_count"] == 2 and upload["parts_done"] == []
    parts = parts_of(s.data, upload["part_size"])
    urls = sign(hub, s, upload["lease_epoch"], parts)
    assert [u["n"] for u in urls] == [1, 2]
    for url, part in zip(urls, parts, strict=True):
        assert url["headers"]["x-amz-checksum-sha256"]  # the digest is part of the signature
        assert "x-amz-checksum-sha256" in url["url"].lower().replace("%3b", ";")  # ...as a signed header
        put(url, part["bytes"])
    progress = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/progress", {"lease_epoch": upload["lease_epoch"], "bytes_sent": len(s.data)}
    )
    assert progress.status_code == 200, progress.text
    done = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": upload["lease_epoch"], "sha256": upload["sha256"]}
    )
    assert done.status_code == 200, done.text
    synced = item(hub, s.item_id)
    assert synced["state"] == "synced" and synced["verified_by"] == "s3-part-checksums", synced
    assert synced["checksum_sha256"] == hashlib.sha256(s.data).hexdigest() and synced["remote_key"] == s.key
    assert object_bytes(presignable_s3, s.bucket, s.key) == s.data
    again = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": upload["lease_epoch"], "sha256": upload["sha256"]}
    )
    assert again.status_code == 200 and again.json()["data"]["state"] == "synced", again.text  # the answer was lost: same


def test_another_nodes_credential_cannot_claim_sign_or_finish_a_nodes_upload(hub: HubProcess, setup: Setup) -> None:
    s = setup
    assert claim(hub, s.other).status_code == 204  # the item is not the other node's
    refused = post(hub, s.other, f"/nodes/{s.node.id}/direct-uploads/claim", {})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "node_mismatch", refused.text
    upload = claim(hub, s.node).json()["data"]["upload"]
    parts = parts_of(s.data, upload["part_size"])
    body_parts = [{k: p[k] for k in ("n", "sha256", "size")} for p in parts]
    for path, body in (
        ("parts", {"lease_epoch": upload["lease_epoch"], "parts": body_parts}),
        ("progress", {"lease_epoch": upload["lease_epoch"], "bytes_sent": 1}),
        ("complete", {"lease_epoch": upload["lease_epoch"], "sha256": upload["sha256"]}),
        ("failed", {"lease_epoch": upload["lease_epoch"], "error": "not mine"}),
    ):
        answer = post(hub, s.other, f"/direct-uploads/{s.item_id}/{path}", body)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "node_mismatch", (path, answer.text)
        missing = post(hub, s.node, f"/direct-uploads/upi_nosuchitem/{path}", body)
        assert missing.status_code == 404, (path, missing.text)
    assert item(hub, s.item_id)["state"] == "uploading"
    with hub.admin() as admin:  # a user holds no node:control
        user = admin.post(f"/api/v1/direct-uploads/{s.item_id}/failed", json={"lease_epoch": upload["lease_epoch"], "error": "x"})
    assert user.status_code == 403, user.text
    with hub.admin() as admin:
        denied = admin.get("/api/v1/audit-events", params={"action": "access.denied", "actor_id": s.other.id}).json()["data"]
    assert any("direct upload" in (e["reason"] or "") for e in denied), denied


def test_a_call_under_an_older_lease_is_refused_as_stale(hub: HubProcess, setup: Setup) -> None:
    s = setup
    first = claim(hub, s.node).json()["data"]["upload"]
    assert claim(hub, s.node, active=[s.item_id]).status_code == 204  # working on it: not taken back
    second = claim(hub, s.node).json()["data"]["upload"]  # a restarted node takes it back under a new lease
    assert second["lease_epoch"] == first["lease_epoch"] + 1
    parts = [{k: p[k] for k in ("n", "sha256", "size")} for p in parts_of(s.data, first["part_size"])]
    for path, body in (
        ("parts", {"lease_epoch": first["lease_epoch"], "parts": parts}),
        ("progress", {"lease_epoch": first["lease_epoch"], "bytes_sent": 1}),
        ("complete", {"lease_epoch": first["lease_epoch"], "sha256": first["sha256"]}),
        ("failed", {"lease_epoch": first["lease_epoch"], "error": "old"}),
    ):
        answer = post(hub, s.node, f"/direct-uploads/{s.item_id}/{path}", body)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "stale_lease", (path, answer.text)
    assert item(hub, s.item_id)["state"] == "uploading"


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(hub: HubProcess, setup: Setup) -> None:
    s = setup
    upload = claim(hub, s.node).json()["data"]["upload"]
    epoch = upload["lease_epoch"]
    good = parts_of(s.data, upload["part_size"])[0]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("parts", {"lease_epoch": epoch, "parts": [{"n": 3, "sha256": good["sha256"], "size": good["size"]}]}, "parts[0].n"),
        ("parts", {"lease_epoch": epoch, "parts": [{"n": 1, "sha256": "xyz", "size": good["size"]}]}, "parts[0].sha256"),
        ("parts", {"lease_epoch": epoch, "parts": [{"n": 1, "sha256": good["sha256"], "size": 5}]}, "parts[0].size"),
        ("parts", {"lease_epoch": epoch, "parts": []}, "parts"),
        ("progress", {"lease_epoch": epoch, "bytes_sent": len(s.data) + 1}, "bytes_sent"),
        ("complete", {"lease_epoch": epoch, "sha256": "not-a-digest"}, "sha256"),
    ]
    for path, body, field in cases:
        answer = post(hub, s.node, f"/direct-uploads/{s.item_id}/{path}", body)
        assert answer.status_code == 400, (path, answer.text)
        assert field in answer.json()["error"].get("fields", {}), (path, field, answer.text)
    for path, body in (("parts", {"parts": []}), ("complete", {"lease_epoch": epoch, "sha256": good["sha256"], "extra": 1})):
        assert post(hub, s.node, f"/direct-uploads/{s.item_id}/{path}", body).status_code == 400
    after = item(hub, s.item_id)
    assert after["state"] == "uploading" and after["bytes_sent"] == 0, after


def test_a_restarted_node_resumes_without_sending_the_parts_s3_already_holds(
    hub: HubProcess, presignable_s3: MotoS3, setup: Setup
) -> None:
    s = setup
    first = claim(hub, s.node).json()["data"]["upload"]
    parts = parts_of(s.data, first["part_size"])
    (url,) = sign(hub, s, first["lease_epoch"], parts[:1])
    put(url, parts[0]["bytes"])
    early = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": first["lease_epoch"], "sha256": first["sha256"]}
    )
    assert early.status_code == 409 and early.json()["error"]["code"] == "parts_missing", early.text
    assert early.json()["error"]["missing"] == [2]
    resumed = claim(hub, s.node).json()["data"]["upload"]  # the node restarted: nothing active
    assert resumed["upload_id"] == first["upload_id"]
    assert resumed["parts_done"] == [{"n": 1, "size": parts[0]["size"], "sha256": parts[0]["sha256"]}]
    assert item(hub, s.item_id)["bytes_sent"] == parts[0]["size"]
    (url,) = sign(hub, s, resumed["lease_epoch"], parts[1:])
    put(url, parts[1]["bytes"])
    done = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": resumed["lease_epoch"], "sha256": resumed["sha256"]}
    )
    assert done.status_code == 200 and done.json()["data"]["state"] == "synced", done.text
    assert object_bytes(presignable_s3, s.bucket, s.key) == s.data


def test_a_part_s3_holds_that_is_not_what_the_node_hashed_fails_verification_and_the_object_goes(
    hub: HubProcess, presignable_s3: MotoS3, setup: Setup
) -> None:
    s = setup
    upload = claim(hub, s.node).json()["data"]["upload"]
    parts = parts_of(s.data, upload["part_size"])
    urls = sign(hub, s, upload["lease_epoch"], parts)
    put(urls[0], parts[0]["bytes"])
    put(urls[1], b"\0" * parts[1]["size"])  # AWS refuses this at once (BadDigest); moto takes it on trust
    answer = post(
        hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": upload["lease_epoch"], "sha256": upload["sha256"]}
    )
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "verification_failed", answer.text
    failed = item(hub, s.item_id)
    assert failed["state"] == "failed" and "composite SHA-256" in failed["last_error"], failed
    assert failed["next_attempt_at"] is not None  # sent again from the start after the backoff
    listed = presignable_s3.client().list_objects_v2(Bucket=s.bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == [], listed


def test_a_file_that_is_not_the_recordings_fails_for_good(hub: HubProcess, presignable_s3: MotoS3, setup: Setup) -> None:
    s = setup
    upload = claim(hub, s.node).json()["data"]["upload"]
    other = hashlib.sha256(b"another file").hexdigest()
    answer = post(hub, s.node, f"/direct-uploads/{s.item_id}/complete", {"lease_epoch": upload["lease_epoch"], "sha256": other})
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "checksum_mismatch", answer.text
    failed = item(hub, s.item_id)
    assert failed["state"] == "failed" and failed["next_attempt_at"] is None, failed
    uploads = presignable_s3.client().list_multipart_uploads(Bucket=s.bucket).get("Uploads", [])
    assert uploads == [], uploads  # aborted


def test_a_node_whose_cache_lost_the_file_fails_the_item_for_good_and_the_upload_is_aborted(
    hub: HubProcess, presignable_s3: MotoS3, setup: Setup
) -> None:
    s = setup
    upload = claim(hub, s.node).json()["data"]["upload"]
    body = {"lease_epoch": upload["lease_epoch"], "error": "the cache no longer holds this recording", "retryable": False}
    answer = post(hub, s.node, f"/direct-uploads/{s.item_id}/failed", body)
    assert answer.status_code == 200, answer.text
    assert post(hub, s.node, f"/direct-uploads/{s.item_id}/failed", body).status_code == 200  # said again: same answer
    failed = item(hub, s.item_id)
    assert failed["state"] == "failed" and failed["last_error"] == body["error"] and failed["next_attempt_at"] is None, failed
    assert presignable_s3.client().list_multipart_uploads(Bucket=s.bucket).get("Uploads", []) == []
    assert claim(hub, s.node).status_code == 204


def test_a_file_the_node_lost_but_the_hub_holds_is_sent_from_the_hubs_copy(hub: HubProcess, presignable_s3: MotoS3) -> None:
    node = enroll(hub)
    bucket = presignable_s3.create_bucket()
    data = os.urandom(MIB)
    digest = hashlib.sha256(data).hexdigest()
    storage_key = f"north/{node.id}/{new_id('rec')}.wav"
    stored = hub.data_dir / "recordings" / storage_key
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(data)
    item_id, _, key = queued_item(
        hub, presignable_s3, node, data, bucket, status="completed", storage_key=storage_key, sha256=digest, size_bytes=len(data)
    )
    upload = claim(hub, node).json()["data"]["upload"]
    body = {"lease_epoch": upload["lease_epoch"], "error": "the cache no longer holds this recording", "retryable": False}
    with hub.client(node.credential) as client:
        answer = client.post(f"/api/v1/direct-uploads/{item_id}/failed", json=body)
    assert answer.status_code == 200, answer.text
    handed = answer.json()["data"]
    assert handed["route"] == "via_hub" and handed["state"] == "pending", handed
    assert "the hub sends its own copy" in handed["state_reason"], handed

    def synced() -> dict[str, Any] | None:  # the hub's runner takes it from here
        now = item(hub, item_id)
        return now if now["state"] == "synced" else None

    done = wait_for(synced, 60, "the hub's runner to upload its copy")
    assert done["checksum_sha256"] == digest and done["route"] == "via_hub", done
    assert object_bytes(presignable_s3, bucket, key) == data
