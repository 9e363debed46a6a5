"""An S3-compatible bucket as an upload provider (issue 20), with boto3 (chosen in bench/s3_clients.py).

Works against AWS, MinIO, R2 or moto through `endpoint_url` (None: AWS), `region`, `path_style`.
A file up to one part is a single PutObject carrying the whole file's SHA-256 (`ChecksumSHA256`): the
server refuses bytes that do not hash to it. A bigger file is a multipart upload created with
`ChecksumAlgorithm=SHA256`: each part is read once to hash it (the part's and the whole object's
SHA-256, in order) and then streamed to the server with its `ChecksumSHA256`, so the server checks every
part; the whole object's hash must equal the recording's before the upload is completed, else it is
aborted. What the server holds is checked too, as cheaply as the server allows (`verified_by` says how):
the `ChecksumSHA256` it echoes for each part (AWS, MinIO, R2); else, once completed, the object's
composite checksum (`HeadObject` with `ChecksumMode`: SHA-256 over the parts' SHA-256s, which moto
computes from the bytes it stored) against the parts' digests we sent; only a server that gives neither
costs an MD5 of each unconfirmed part (re-read from the local file) against its ETag (not under SSE-KMS,
whose ETags are not MD5s). An object that fails the check is deleted and the upload fails, retryably.
MD5 is never computed while sending: it costs more CPU than both SHA-256s together (no MD5 in hardware).
Parts are `PART_SIZE` (8 MiB) or more, grown so a file has at most
`MAX_PARTS_TARGET` parts; up to `PARTS_IN_FLIGHT` are sent at once.

Resume: `resume` is {"upload_id", "part_size", "parts"} as last reported; the server is the truth
(`list_parts`): finished parts are not sent again, only re-read from the local file for the whole
hash (and re-sent if the server's checksum of one differs). An upload id the server no longer knows
starts over, unless the object is already there with the same size and `sha256` metadata (a crash
between completing and recording it). The recording's SHA-256 is stored as object metadata `sha256`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

from hark_fleet.hub.offsite.base import (
    TEST_OBJECT_PREFIX,
    ProviderError,
    ProviderSpec,
    TestReport,
    TestRun,
    UploadResult,
    cancelled_error,
    run_test,
)

MIB = 1024 * 1024
PART_SIZE = 8 * MIB
MAX_PARTS = 10_000  # S3's limit
MAX_PARTS_TARGET = 1_000  # fewer, bigger parts beyond 8 GB keep `resume` and list_parts small
HASH_BLOCK = MIB
TEST_READ_TIMEOUT = 15.0
PARTS_IN_FLIGHT = 3  # parts sent at once by one upload (hashing stays in order on the caller's thread)
SSE_KINDS = ("AES256", "aws:kms")
VERIFIED_SHA256 = "s3 sha256 per part + whole-object sha256"
VERIFIED_COMPOSITE = "s3 composite sha256 of the parts + whole-object sha256"
VERIFIED_MD5 = "s3 part md5 etags + whole-object sha256"
VERIFIED_SINGLE = "s3 object sha256"
VERIFIED_SINGLE_MD5 = "s3 object md5 etag + sha256"
VERIFIED_EXISTING = "s3 object already there (size + sha256 metadata)"
_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "Throttling"}
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum", "InvalidRequest"}


def make_client(spec: ProviderSpec, *, read_timeout: float = 120, max_attempts: int = 3) -> Any:
    """A boto3 S3 client for `spec` (endpoint, region, addressing style, credentials, timeouts)."""
    import boto3
    from botocore.config import Config

    config = spec.config
    return boto3.client(
        "s3",
        endpoint_url=config.get("endpoint_url") or None,
        region_name=config.get("region") or "us-east-1",
        aws_access_key_id=config.get("access_key_id") or None,
        aws_secret_access_key=spec.secrets.get("secret_access_key") or None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if config.get("path_style") else "auto"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=read_timeout,
            # Checksums are ours to choose (SHA-256, below), not botocore's default CRC32 on every call,
            # which some S3-compatible servers do not accept.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def part_size_for(size: int) -> int:
    """The part size for a file of `size` bytes: at least 8 MiB, whole MiB, at most MAX_PARTS_TARGET parts."""
    wanted = -(-size // MAX_PARTS_TARGET)
    part = max(PART_SIZE, -(-wanted // MIB) * MIB)
    assert -(-size // part) <= MAX_PARTS
    return part


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Provider:
    """Uploads to `config["bucket"]`; keys arrive complete (the policy's key already has the prefix)."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        config = spec.config
        self.bucket = str(config.get("bucket") or "")
        if not self.bucket:
            raise ProviderError("config", "bucket is required")
        self.prefix = str(config.get("prefix") or "").strip("/")
        sse = config.get("sse") or None
        if sse is not None and sse not in SSE_KINDS:
            raise ProviderError("config", f"sse must be one of {', '.join(SSE_KINDS)}")
        self.write_args: dict[str, Any] = {}
        if sse:
            self.write_args["ServerSideEncryption"] = sse
            if sse == "aws:kms" and config.get("sse_kms_key_id"):
                self.write_args["SSEKMSKeyId"] = config["sse_kms_key_id"]
        if config.get("storage_class"):
            self.write_args["StorageClass"] = config["storage_class"]
        self.client = make_client(spec)

    # --- test ---------------------------------------------------------------------------------------

    def test(self) -> TestReport:
        # A person waits on the answer: one attempt per step and short timeouts, not the uploads' patience.
        client = make_client(self.spec, read_timeout=TEST_READ_TIMEOUT, max_attempts=1)

        def body(run: TestRun) -> None:
            with run.step("reach", f"connected to {self._endpoint_label()}"):
                self._reach()
            with run.step("authenticate", f"credentials accepted for bucket {self.bucket}"):
                self._call("authenticate", client.head_bucket, Bucket=self.bucket)
            name = f"{TEST_OBJECT_PREFIX}{secrets.token_hex(6)}"
            key = f"{self.prefix}/{name}" if self.prefix else name
            payload = secrets.token_bytes(1024)
            digest = hashlib.sha256(payload).digest()
            with run.step("write", f"wrote {key}"):
                self._call(
                    "write",
                    client.put_object,
                    Bucket=self.bucket,
                    Key=key,
                    Body=payload,
                    ChecksumSHA256=b64(digest),
                    **self.write_args,
                )
            try:
                with run.step("read", "read back the same bytes"):
                    answer = self._call("read", client.get_object, Bucket=self.bucket, Key=key)
                    if answer["Body"].read() != payload:
                        raise ProviderError("read", "the bytes read back differ from those written")
            finally:
                with run.step("delete", f"deleted {key}"):
                    self._call("delete", client.delete_object, Bucket=self.bucket, Key=key)

        try:
            return run_test(body)
        finally:
            client.close()

    def _endpoint_label(self) -> str:
        return self.spec.config.get("endpoint_url") or f"AWS S3 ({self.spec.config.get('region') or 'us-east-1'})"

    def _reach(self) -> None:
        """A TCP connection (and TLS handshake for https) to the endpoint, before any credential is sent."""
        url = self.client.meta.endpoint_url
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                if parts.scheme == "https":
                    with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                        pass
        except (OSError, ssl.SSLError) as err:
            raise ProviderError("reach", f"cannot connect to {host}:{port}: {err}", retryable=True) from err

    # --- upload -------------------------------------------------------------------------------------

    def upload(
        self,
        *,
        key: str,
        size: int,
        sha256: str,
        open_at: Callable[[int], BinaryIO],
        resume: dict[str, Any],
        on_progress: Callable[[int, dict[str, Any]], None],
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> UploadResult:
        if size <= PART_SIZE:
            return self._put_single(key, size, sha256, open_at, on_progress, throttle, cancelled)
        upload_id, part_size, done = self._resume_or_start(key, size, sha256, resume)
        if upload_id is None:
            return UploadResult(remote_key=key, sha256=sha256, verified_by=VERIFIED_EXISTING, bytes=size)
        try:
            return self._send_parts(key, size, sha256, open_at, upload_id, part_size, done, on_progress, throttle, cancelled)
        except ProviderError as err:
            if err.step == "verify" and not err.retryable:
                self._abort(key, upload_id)
            raise

    def _put_single(
        self,
        key: str,
        size: int,
        sha256: str,
        open_at: Callable[[int], BinaryIO],
        on_progress: Callable[[int, dict[str, Any]], None],
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> UploadResult:
        with open_at(0) as source:
            data = source.read(size)
        if len(data) != size:
            raise ProviderError("read", f"the source has {len(data)} bytes, {size} expected", retryable=True)
        digest = hashlib.sha256(data)
        if digest.hexdigest() != sha256:
            raise ProviderError("verify", f"the file's sha256 {digest.hexdigest()} differs from the recording's {sha256}")
        if cancelled():
            raise cancelled_error()
        body = ThrottledPart(lambda offset: io.BytesIO(data[offset:]), 0, size, throttle, cancelled)
        answer = self._call(
            "write",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentLength=size,
            ChecksumSHA256=b64(digest.digest()),
            Metadata={"sha256": sha256},
            **self.write_args,
        )
        how = self._confirm(answer, b64(digest.digest()), hashlib.md5(data, usedforsecurity=False).hexdigest())
        if how is None:
            raise ProviderError("verify", "the server's checksum of the object differs from the file's", retryable=True)
        on_progress(size, {})
        return UploadResult(
            remote_key=key, sha256=sha256, verified_by=VERIFIED_SINGLE if how == "sha256" else VERIFIED_SINGLE_MD5, bytes=size
        )

    def _resume_or_start(
        self, key: str, size: int, sha256: str, resume: dict[str, Any]
    ) -> tuple[str | None, int, dict[int, dict[str, Any]]]:
        """(upload id, part size, finished parts by number) — the server's list, or a new upload (None: already there)."""
        upload_id = resume.get("upload_id")
        part_size = resume.get("part_size")
        if isinstance(upload_id, str) and isinstance(part_size, int) and part_size >= PART_SIZE:
            try:
                return upload_id, part_size, self._list_parts(key, upload_id)
            except _UnknownUpload:
                if self._already_there(key, size, sha256):
                    return None, part_size, {}
        answer = self._call(
            "write",
            self.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={"sha256": sha256},
            **self.write_args,
        )
        return answer["UploadId"], part_size_for(size), {}

    def _list_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]]:
        from botocore.exceptions import ClientError

        parts: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            try:
                answer = self.client.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MaxParts=1000, PartNumberMarker=marker
                )
            except ClientError as err:
                if _code(err) in ("NoSuchUpload", "404"):
                    raise _UnknownUpload from err
                raise self._error("write", err) from err
            except Exception as err:  # connection errors
                raise self._error("write", err) from err
            for part in answer.get("Parts", []):
                parts[part["PartNumber"]] = part
            if not answer.get("IsTruncated"):
                return parts
            marker = int(answer["NextPartNumberMarker"])

    def _already_there(self, key: str, size: int, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return bool(head.get("ContentLength") == size and head.get("Metadata", {}).get("sha256") == sha256)

    def _send_parts(
        self,
        key: str,
        size: int,
        sha256: str,
        open_at: Callable[[int], BinaryIO],
        upload_id: str,
        part_size: int,
        done: dict[int, dict[str, Any]],
        on_progress: Callable[[int, dict[str, Any]], None],
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> UploadResult:
        """Hash every part in order on this thread; send the ones the server lacks, PARTS_IN_FLIGHT at a time."""
        whole = hashlib.sha256()
        count = -(-size // part_size)
        finished: dict[int, dict[str, Any]] = {}
        methods: set[str] = set()
        state = {"sent": 0, "bytes": 0}
        stop = threading.Event()

        def stopped() -> bool:
            return stop.is_set() or cancelled()

        def send(number: int, start: int, length: int, checksum: str) -> tuple[int, int, dict[str, Any], str]:
            with ThrottledPart(open_at, start, length, throttle, stopped) as body:
                answer = self._call(
                    "write",
                    self.client.upload_part,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentLength=length,
                    ChecksumSHA256=checksum,
                )
            how = _echo_check(answer, checksum)
            if how is None:
                raise ProviderError("verify", f"the server's checksum of part {number} differs from the file's", retryable=True)
            return number, length, {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}, how

        def landed(number: int, length: int, part: dict[str, Any], how: str, sent: bool) -> None:
            finished[number] = part
            methods.add(how)
            state["bytes"] += length
            state["sent"] += length if sent else 0
            on_progress(state["bytes"], {"upload_id": upload_id, "part_size": part_size, "parts": sorted(finished)})

        pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        pending: set[Future[tuple[int, int, dict[str, Any], str]]] = set()

        def collect(block: bool) -> None:
            ready, rest = wait(pending, return_when=FIRST_COMPLETED) if block else (set(), pending)
            pending.clear()
            pending.update(rest)
            for future in ready:
                landed(*future.result(), sent=True)

        try:
            for number in range(1, count + 1):
                if cancelled():
                    raise cancelled_error()
                start = (number - 1) * part_size
                length = min(part_size, size - start)
                checksum = b64(_hash_part(open_at, start, length, whole))
                listed = done.get(number)
                how = _echo_check(listed, checksum) if listed is not None and listed.get("Size") == length else None
                if how is not None and listed is not None:
                    landed(number, length, {"PartNumber": number, "ETag": listed["ETag"], "ChecksumSHA256": checksum}, how, False)
                    continue
                while len(pending) >= PARTS_IN_FLIGHT:
                    collect(block=True)
                pending.add(pool.submit(send, number, start, length, checksum))
            while pending:
                collect(block=True)
        except BaseException:
            stop.set()  # parts in flight stop at their next read
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if whole.hexdigest() != sha256:
            raise ProviderError("verify", f"the file's sha256 {whole.hexdigest()} differs from the recording's {sha256}")
        self._call(
            "complete",
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [finished[n] for n in sorted(finished)]},
        )
        head = self._call("verify", self.client.head_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ContentLength") != size:
            raise ProviderError("verify", f"the object has {head.get('ContentLength')} bytes, {size} were sent", retryable=True)
        self.last_sent_bytes = state["sent"]
        verified_by = (
            VERIFIED_SHA256 if methods == {"sha256"} else self._verify_completed(key, head, finished, part_size, open_at)
        )
        return UploadResult(remote_key=key, sha256=sha256, verified_by=verified_by, bytes=size)

    def _verify_completed(
        self,
        key: str,
        head: dict[str, Any],
        finished: dict[int, dict[str, Any]],
        part_size: int,
        open_at: Callable[[int], BinaryIO],
    ) -> str:
        """Check a completed object whose parts the server did not echo; delete it and fail when it is not what was sent."""
        digests = b"".join(base64.b64decode(finished[n]["ChecksumSHA256"]) for n in sorted(finished))
        stored = str(head.get("ChecksumSHA256") or "")
        if stored:
            if stored.split("-")[0] == b64(hashlib.sha256(digests).digest()):
                return VERIFIED_COMPOSITE
            self._discard(key)
            raise ProviderError("verify", "the server's composite checksum of the parts differs from the file's", retryable=True)
        if self.write_args.get("ServerSideEncryption") == "aws:kms":
            return VERIFIED_SHA256  # no checksum back and no MD5 ETags: the server checked the ChecksumSHA256 we sent
        for number in sorted(finished):
            etag = str(finished[number].get("ETag") or "").strip('"')
            if len(etag) != 32:
                return VERIFIED_SHA256  # not an MD5 ETag: as above
            start = (number - 1) * part_size
            length = min(part_size, int(head["ContentLength"]) - start)
            if etag != _md5_part(open_at, start, length):
                self._discard(key)
                raise ProviderError("verify", f"the server's ETag of part {number} is not the file's MD5", retryable=True)
        return VERIFIED_MD5

    def _discard(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception:  # noqa: BLE001 - failing already; the next attempt overwrites the object
            pass

    def _confirm(self, answer: dict[str, Any], checksum: str, md5_hex: str) -> str | None:
        """How the server confirmed a part or object ("sha256" or "md5"); None when what it holds differs."""
        echoed = answer.get("ChecksumSHA256")
        if echoed:
            return "sha256" if echoed.split("-")[0] == checksum else None
        etag = str(answer.get("ETag") or "").strip('"')
        if self.write_args.get("ServerSideEncryption") == "aws:kms" or len(etag) != 32:
            return "sha256"  # no echo and no MD5 ETag: the server checked the ChecksumSHA256 header we sent
        return "md5" if etag == md5_hex else None

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - the upload is failing already; an abandoned upload expires by lifecycle
            pass

    # --- other operations ---------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if _status(err) == 404:
                return False
            raise self._error("read", err) from err
        except Exception as err:
            raise self._error("read", err) from err
        return True

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=key)

    def close(self) -> None:
        self.client.close()

    # --- errors ---------------------------------------------------------------------------------------

    def _call(self, step: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ProviderError:
            raise
        except Exception as err:
            raise self._error(step, err) from err

    def _error(self, step: str, err: Exception) -> ProviderError:
        """A library error as a ProviderError: the step, a message without secrets, whether to retry."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(err, ClientError):
            code, status = _code(err), _status(err)
            message = err.response.get("Error", {}).get("Message") or code
            if code in ("NoSuchBucket",) or (status == 404 and step == "authenticate"):
                return ProviderError(step, f"bucket {self.bucket!r} does not exist ({code or status})")
            if status == 403 or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                return ProviderError(
                    "authenticate" if step in ("authenticate", "write") else step,
                    f"access denied ({code or status}): check the access key, the secret and the bucket's permissions",
                )
            if code in _DIGEST_CODES:
                return ProviderError("verify", f"the server refused the bytes' checksum ({code}: {message})", retryable=True)
            retryable = status >= 500 or code in _RETRYABLE_CODES
            return ProviderError(step, f"{code or status}: {message}", retryable=retryable)
        if isinstance(err, EndpointConnectionError | ConnectTimeoutError):
            return ProviderError("reach", f"cannot connect to {self._endpoint_label()}: {err}", retryable=True)
        if isinstance(err, ReadTimeoutError | ConnectionClosedError | ConnectionError | TimeoutError):
            return ProviderError(step, f"connection lost: {err}", retryable=True)
        if isinstance(err, NoCredentialsError):
            return ProviderError("authenticate", "no access key or secret configured")
        return ProviderError(step, f"{type(err).__name__}: {err}", retryable=True)


class _UnknownUpload(Exception):
    """The server no longer knows the multipart upload id (completed, aborted or expired)."""


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code") or "")


def _status(err: Any) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _echo_check(answer: dict[str, Any], checksum: str) -> str | None:
    """ "sha256" when the server echoed the part's checksum, "unconfirmed" when it echoed none, None when it differs."""
    echoed = answer.get("ChecksumSHA256")
    if echoed:
        return "sha256" if echoed.split("-")[0] == checksum else None
    return "unconfirmed"  # checked once completed (`_verify_completed`)


def _md5_part(open_at: Callable[[int], BinaryIO], start: int, length: int) -> str:
    """The MD5 hex of bytes [start, start+length) of the source (for a server that gives no checksum back)."""
    md5 = hashlib.md5(usedforsecurity=False)
    left = length
    with open_at(start) as source:
        while left:
            block = source.read(min(HASH_BLOCK, left))
            if not block:
                raise ProviderError("read", f"the source ended {left} bytes before the end of a part", retryable=True)
            md5.update(block)
            left -= len(block)
    return md5.hexdigest()


def _hash_part(open_at: Callable[[int], BinaryIO], start: int, length: int, whole: Any) -> bytes:
    """The SHA-256 of bytes [start, start+length) of the source, also fed (in order) to `whole`."""
    digest = hashlib.sha256()
    left = length
    with open_at(start) as source:
        while left:
            block = source.read(min(HASH_BLOCK, left))
            if not block:
                raise ProviderError("read", f"the source ended {left} bytes before the end of a part", retryable=True)
            digest.update(block)
            whole.update(block)
            left -= len(block)
    return digest.digest()


class ThrottledPart(io.RawIOBase):
    """`length` bytes of the source from `start`, read as they are sent; `throttle(n)` before each read.

    Seekable (botocore rewinds a body to retry it): a seek reopens the source at the new offset.
    """

    def __init__(
        self,
        open_at: Callable[[int], BinaryIO],
        start: int,
        length: int,
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> None:
        super().__init__()
        self._open_at = open_at
        self._start = start
        self._length = length
        self._throttle = throttle
        self._cancelled = cancelled
        self._pos = 0
        self._source: BinaryIO | None = None
        self._throttled_to = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._length

    def read(self, n: int | None = -1) -> bytes:
        left = self._length - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        if self._cancelled():
            raise cancelled_error()
        if self._pos + n > self._throttled_to:  # each byte once: over http botocore reads a body twice (to sign it)
            self._throttle(self._pos + n - self._throttled_to)
            self._throttled_to = self._pos + n
        if self._source is None:
            self._source = self._open_at(self._start + self._pos)
        data = self._source.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        pos = max(0, min(self._length, base + offset))
        if pos != self._pos and self._source is not None:
            self._source.close()
            self._source = None
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        super().close()
