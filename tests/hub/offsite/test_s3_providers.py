"""The S3 provider against moto's real server: single puts, multipart with checksums, resume, verification, test steps."""

from __future__ import annotations

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.offsite.base import ProviderError, ProviderSpec
from hark_fleet.hub.offsite.registry import open_provider
from hark_fleet.hub.offsite.s3 import PART_SIZE, VERIFIED_COMPOSITE, VERIFIED_MD5, S3Provider, part_size_for
from hark_fleet.hub.processes import free_port

from tests.hub.offsite.upload_source import MIB, Upload, make_file
from tests.offsite_servers import MotoS3


def provider(moto_s3: MotoS3, bucket: str, secrets: dict[str, str] | None = None, **config: Any) -> S3Provider:
    spec = ProviderSpec("p1", "s3", moto_s3.provider_config(bucket, **config), secrets or moto_s3.provider_secrets(), None, 2)
    opened = open_provider(spec)
    assert isinstance(opened, S3Provider)
    return opened


def count_part_uploads(s3: S3Provider) -> list[int]:
    """Part numbers sent through this provider's client, as they are sent."""
    numbers: list[int] = []
    s3.client.meta.events.register(
        "provide-client-params.s3.UploadPart", lambda params, **_: numbers.append(params["PartNumber"])
    )
    return numbers


def stored_sha256(moto_s3: MotoS3, bucket: str, key: str) -> tuple[str, dict[str, str]]:
    answer = moto_s3.client().get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    for block in iter(lambda: answer["Body"].read(MIB), b""):
        digest.update(block)
    return digest.hexdigest(), answer["Metadata"]


def test_a_small_file_is_one_put_carrying_its_sha256(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    upload = Upload(tmp_path / "rec.wav", 300_000, make_file(tmp_path / "rec.wav", 300_000))
    s3 = provider(moto_s3, s3_bucket, storage_class="STANDARD_IA", sse="AES256")
    parts = count_part_uploads(s3)
    result = s3.upload(**upload.kwargs())
    assert parts == [] and result.bytes == 300_000 and result.verified_by.startswith("s3 object")
    assert stored_sha256(moto_s3, s3_bucket, upload.key) == (upload.sha256, {"sha256": upload.sha256})
    head = moto_s3.client().head_object(Bucket=s3_bucket, Key=upload.key)
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    assert upload.throttled == 300_000


def test_a_big_file_goes_up_in_checked_parts_and_is_verified_whole(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    size = 2 * PART_SIZE + 123
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    s3 = provider(moto_s3, s3_bucket)
    parts = count_part_uploads(s3)
    result = s3.upload(**upload.kwargs())
    assert sorted(parts) == [1, 2, 3]
    assert result.sha256 == upload.sha256 and result.bytes == size and "whole-object sha256" in result.verified_by
    assert stored_sha256(moto_s3, s3_bucket, upload.key) == (upload.sha256, {"sha256": upload.sha256})
    assert upload.throttled == size  # every byte sent passed the throttle
    assert upload.progress[-1][0] == size and upload.resume["parts"] == [1, 2, 3]


def tampered_while_sending(upload: Upload, s3: S3Provider, offset: int) -> Any:
    """`open_at` giving a byte flipped in the part at `offset` from its second opening (the send, after the hashing
    read) until the upload is completed: the part hashes as the file does, but the server receives other bytes
    (moto takes a claimed checksum on trust); a check reading the local file afterwards reads it as it is."""
    opened: dict[int, int] = {}
    completed: list[bool] = []
    s3.client.meta.events.register("after-call.s3.CompleteMultipartUpload", lambda **_: completed.append(True))

    def open_at(at: int) -> Any:
        opened[at] = opened.get(at, 0) + 1
        source = upload.open_at(at)
        if at != offset or opened[at] < 2 or completed:
            return source
        data = bytearray(source.read())
        source.close()
        data[100] ^= 0xFF
        return io.BytesIO(bytes(data))

    return open_at


def test_a_server_echoing_no_part_checksum_is_checked_by_the_objects_composite_checksum(
    moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    size = 2 * PART_SIZE + 10
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    assert provider(moto_s3, s3_bucket).upload(**upload.kwargs()).verified_by == VERIFIED_COMPOSITE
    bad = Upload(tmp_path / "rec.wav", size, upload.sha256, key="site/node/bad.wav")
    s3 = provider(moto_s3, s3_bucket)
    with pytest.raises(ProviderError) as failed:
        s3.upload(**bad.kwargs(open_at=tampered_while_sending(bad, s3, PART_SIZE)))
    assert (failed.value.step, failed.value.retryable) == ("verify", True)
    assert "composite checksum" in failed.value.message
    listed = moto_s3.client().list_objects_v2(Bucket=s3_bucket, Prefix="site/node/bad")
    assert listed.get("KeyCount", 0) == 0  # what did not verify is not left there


def test_a_server_giving_no_checksum_back_is_checked_by_part_md5_etags(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    def without_checksums(s3: S3Provider) -> S3Provider:
        s3.client.meta.events.register("after-call.s3.HeadObject", lambda parsed, **_: parsed.pop("ChecksumSHA256", None))
        return s3

    size = PART_SIZE + 10
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    assert without_checksums(provider(moto_s3, s3_bucket)).upload(**upload.kwargs()).verified_by == VERIFIED_MD5
    bad = Upload(tmp_path / "rec.wav", size, upload.sha256, key="site/node/bad-md5.wav")
    s3 = without_checksums(provider(moto_s3, s3_bucket))
    with pytest.raises(ProviderError) as failed:
        s3.upload(**bad.kwargs(open_at=tampered_while_sending(bad, s3, 0)))
    assert failed.value.step == "verify" and "MD5" in failed.value.message


def test_an_interrupted_upload_resumes_without_sending_finished_parts_again(
    moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    size = 6 * PART_SIZE
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size), cancel_after_bytes=2 * PART_SIZE)
    with pytest.raises(ProviderError) as failed:
        provider(moto_s3, s3_bucket).upload(**upload.kwargs())
    assert failed.value.retryable
    first_upload_id, finished = upload.resume["upload_id"], list(upload.resume["parts"])
    assert len(finished) >= 2
    listed = moto_s3.client().list_parts(Bucket=s3_bucket, Key=upload.key, UploadId=first_upload_id)["Parts"]
    assert {p["PartNumber"] for p in listed} >= set(finished)

    # A new provider (as after a hub restart) continues from what was reported; the server's list is the truth.
    upload.cancel_after_bytes, upload.throttled = None, 0
    s3 = provider(moto_s3, s3_bucket)
    parts = count_part_uploads(s3)
    result = s3.upload(**upload.kwargs())
    on_server = {p["PartNumber"] for p in listed if p["Size"] == PART_SIZE}
    assert set(parts) == set(range(1, 7)) - on_server  # nothing the server had was sent again
    assert upload.throttled == (6 - len(on_server)) * PART_SIZE
    assert upload.resume["upload_id"] == first_upload_id
    assert result.sha256 == upload.sha256
    assert stored_sha256(moto_s3, s3_bucket, upload.key)[0] == upload.sha256


def test_an_upload_id_the_server_forgot_starts_over(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    size = PART_SIZE + 1
    upload = Upload(tmp_path / "rec.wav", size, make_file(tmp_path / "rec.wav", size))
    upload.resume = {"upload_id": "forgotten", "part_size": PART_SIZE, "parts": [1]}
    s3 = provider(moto_s3, s3_bucket)
    parts = count_part_uploads(s3)
    s3.upload(**upload.kwargs())
    assert sorted(parts) == [1, 2] and upload.resume["upload_id"] != "forgotten"
    assert stored_sha256(moto_s3, s3_bucket, upload.key)[0] == upload.sha256


def test_bytes_that_do_not_hash_to_the_recording_are_never_completed(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    size = PART_SIZE + 5
    make_file(tmp_path / "rec.wav", size)
    upload = Upload(tmp_path / "rec.wav", size, "ab" * 32)
    with pytest.raises(ProviderError) as failed:
        provider(moto_s3, s3_bucket).upload(**upload.kwargs())
    assert failed.value.step == "verify" and not failed.value.retryable
    client = moto_s3.client()
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket)
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")  # aborted, not left behind


def test_a_small_file_that_does_not_hash_to_the_recording_is_not_put(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    make_file(tmp_path / "rec.wav", 1000)
    with pytest.raises(ProviderError) as failed:
        provider(moto_s3, s3_bucket).upload(**Upload(tmp_path / "rec.wav", 1000, "cd" * 32).kwargs())
    assert failed.value.step == "verify"
    assert "Contents" not in moto_s3.client().list_objects_v2(Bucket=s3_bucket)


def test_the_test_writes_reads_and_deletes_a_small_object_under_the_prefix(moto_s3: MotoS3, s3_bucket: str) -> None:
    report = provider(moto_s3, s3_bucket, prefix="archive/").test()
    assert report.ok, report
    assert [s.step for s in report.steps] == ["reach", "authenticate", "write", "read", "delete"]
    assert "archive/.hark-test-" in report.steps[2].message
    assert "Contents" not in moto_s3.client().list_objects_v2(Bucket=s3_bucket)


def test_a_wrong_secret_fails_the_authenticate_step(moto_s3: MotoS3, s3_bucket: str) -> None:
    report = provider(moto_s3, s3_bucket, secrets={"secret_access_key": "not-the-secret"}).test()
    assert (report.ok, report.failed_step) == (False, "authenticate")
    assert "access denied" in report.steps[-1].message and "not-the-secret" not in report.steps[-1].message


def test_a_missing_bucket_fails_the_test_and_names_it(moto_s3: MotoS3) -> None:
    report = provider(moto_s3, "no-such-bucket").test()
    assert report.failed_step == "authenticate"
    assert "'no-such-bucket' does not exist" in report.steps[-1].message


def test_an_unreachable_endpoint_fails_the_reach_step(moto_s3: MotoS3, s3_bucket: str) -> None:
    report = provider(moto_s3, s3_bucket, endpoint_url=f"http://127.0.0.1:{free_port()}").test()
    assert report.failed_step == "reach" and [s.step for s in report.steps] == ["reach"]


def test_an_upload_to_a_missing_bucket_is_not_retryable_and_a_lost_server_is(moto_s3: MotoS3, tmp_path: Path) -> None:
    upload = Upload(tmp_path / "rec.wav", 1000, make_file(tmp_path / "rec.wav", 1000))
    with pytest.raises(ProviderError) as missing:
        provider(moto_s3, "no-such-bucket").upload(**upload.kwargs())
    assert not missing.value.retryable
    with pytest.raises(ProviderError) as unreachable:
        provider(moto_s3, "b", endpoint_url=f"http://127.0.0.1:{free_port()}").upload(**upload.kwargs())
    assert unreachable.value.retryable and unreachable.value.step == "reach"


def test_exists_and_delete(moto_s3: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    upload = Upload(tmp_path / "rec.wav", 10, make_file(tmp_path / "rec.wav", 10))
    s3 = provider(moto_s3, s3_bucket)
    assert not s3.exists(upload.key)
    s3.upload(**upload.kwargs())
    assert s3.exists(upload.key)
    s3.delete(upload.key)
    assert not s3.exists(upload.key)


def test_parts_grow_so_a_huge_file_stays_within_the_part_limit() -> None:
    assert part_size_for(100 * MIB) == PART_SIZE
    huge = 5 * 1024**4  # S3's largest object
    assert part_size_for(huge) % MIB == 0 and -(-huge // part_size_for(huge)) <= 10_000


class _Unavailable(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request 503 SlowDown, as a struggling server does."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow  # botocore's own retries back off first
def test_a_server_answering_503_fails_retryably(moto_s3: MotoS3, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, name="s3-503", daemon=True)
    thread.start()
    try:
        upload = Upload(tmp_path / "rec.wav", 1000, make_file(tmp_path / "rec.wav", 1000))
        s3 = provider(moto_s3, "b", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(ProviderError) as failed:
            s3.upload(**upload.kwargs())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert failed.value.retryable and "SlowDown" in failed.value.message
