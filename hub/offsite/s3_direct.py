"""The direct route's S3 side (issue 20): the hub opens, signs, completes and aborts; the node sends the bytes.

The node uploads a recording from its cache straight to the bucket: the hub opens a multipart upload
(`ChecksumAlgorithm=SHA256`) for the item's key and, for each part the node has hashed, presigns an
`UploadPart` request with that part's SHA-256 signed in (`x-amz-checksum-sha256` is a signed header,
so the node cannot send other bytes under the signature, and S3 refuses a body whose digest differs).
The URLs expire after `URL_TTL_S`. Every upload is multipart, even a one-part one: completing it makes
S3 compute the object's composite checksum (the SHA-256 of the parts' SHA-256s) from what it stored,
and the hub checks that against the part digests it signed, so a part S3 holds that is not the node's
is caught even by servers that take a sent checksum on trust. `list_parts` is the truth for resuming.

Blocking calls (boto3): run them on an executor, never on the event loop or a database worker.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hark_fleet.hub.offsite.base import ProviderError, ProviderSpec
from hark_fleet.hub.offsite.s3 import make_client, part_size_for

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's limit
MAX_OBJECT_BYTES = 5 * 1024**4  # S3's largest object
URL_TTL_S = 900  # a presigned part URL works this long
CHECKSUM_HEADERS = ("x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm")
VERIFIED_BY = "s3-part-checksums"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_RETRYABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling"}


@dataclass(frozen=True, slots=True)
class PartLayout:
    """How a file of `size` bytes is cut into parts of `part_size` (the last may be shorter; an empty file is one empty part)."""

    size: int
    part_size: int

    @property
    def count(self) -> int:
        return max(1, -(-self.size // self.part_size))

    def offset(self, number: int) -> int:
        return (number - 1) * self.part_size

    def length(self, number: int) -> int:
        """Bytes in part `number` (1-based)."""
        return max(0, min(self.part_size, self.size - self.offset(number)))


def layout_for(size: int, part_size: int | None = None) -> PartLayout:
    """The parts of a `size`-byte file: 8 MiB, or whole MiBs large enough to keep `resume` and list_parts small."""
    if size < 0 or size > MAX_OBJECT_BYTES:
        raise ValueError(f"a file of {size} bytes cannot be uploaded to S3")
    chosen = part_size or part_size_for(size)  # as the hub's own uploads cut them: at most 1,000 parts of whole MiBs
    if chosen < MIN_PART_BYTES and size > chosen:
        raise ValueError(f"parts of {chosen} bytes are under S3's minimum of {MIN_PART_BYTES}")
    layout = PartLayout(size, chosen)
    if layout.count > MAX_PARTS:
        raise ValueError(f"{layout.count} parts of {chosen} bytes: S3 takes at most {MAX_PARTS}")
    return layout


def b64_digest(sha256_hex: str) -> str:
    """A hex SHA-256 as S3 writes checksums (base64 of the 32 bytes)."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def composite_checksum(part_digests: list[str]) -> str:
    """S3's composite SHA-256 of a multipart object (base64, without the `-N` suffix) from its parts' hex digests."""
    return base64.b64encode(hashlib.sha256(b"".join(bytes.fromhex(d) for d in part_digests)).digest()).decode("ascii")


def is_sha256_hex(text: Any) -> bool:
    return isinstance(text, str) and _HEX.match(text) is not None


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A part S3 holds for an upload: its number, size, ETag and checksum (base64, when the server lists it)."""

    number: int
    size: int
    etag: str
    checksum: str | None = None


@dataclass(frozen=True, slots=True)
class PresignedPart:
    """One part the node may PUT: where, with which headers (all of them signed), until when."""

    number: int
    url: str
    headers: dict[str, str]
    expires_at: datetime

    def to_api(self) -> dict[str, Any]:
        return {
            "n": self.number,
            "method": "PUT",
            "url": self.url,
            "headers": self.headers,
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class PartsMissing(Exception):
    """Completing needs parts S3 does not hold (or holds at another size or checksum): the node must send them."""

    def __init__(self, numbers: list[int]) -> None:
        super().__init__(f"parts not uploaded: {numbers[:20]}")
        self.numbers = numbers


@dataclass
class DirectS3:
    """The hub's side of one S3 provider's direct uploads. `client` is a boto3 S3 client (`hub.offsite.s3.make_client`)."""

    spec: ProviderSpec
    client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.spec.kind != "s3":
            raise ProviderError("config", f"the direct route needs an S3 provider, not {self.spec.kind}")
        if self.client is None:
            self.client = make_client(self.spec)

    @property
    def bucket(self) -> str:
        return str(self.spec.config.get("bucket") or "")

    def _create_args(self) -> dict[str, Any]:
        """What the provider asks of every new object (server-side encryption, storage class)."""
        config = self.spec.config
        extra: dict[str, Any] = {}
        sse = config.get("server_side_encryption") or config.get("sse")
        if sse:
            extra["ServerSideEncryption"] = sse
            if config.get("sse_kms_key_id"):
                extra["SSEKMSKeyId"] = config["sse_kms_key_id"]
        if config.get("storage_class"):
            extra["StorageClass"] = config["storage_class"]
        return extra

    # -- open and resume --------------------------------------------------------------------------------

    def open(self, key: str, upload_id: str | None) -> tuple[str, list[StoredPart]]:
        """The multipart upload to continue (`upload_id`, when S3 still has it) or a new one, and the parts it holds."""
        if upload_id:
            try:
                return upload_id, self.stored_parts(key, upload_id)
            except ProviderError as err:
                if err.step != "complete":  # "complete": S3 no longer knows the upload; anything else is real
                    raise
        answer = self._call(
            "write",
            self.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            **self._create_args(),
        )
        return str(answer["UploadId"]), []

    def stored_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """Every part S3 holds for the upload (ProviderError step `complete` when it no longer knows the upload)."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            answer = self._call(
                "read", self.client.list_parts, Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
            for part in answer.get("Parts", []):
                parts.append(
                    StoredPart(int(part["PartNumber"]), int(part["Size"]), str(part["ETag"]), part.get("ChecksumSHA256"))
                )
            if not answer.get("IsTruncated"):
                return parts
            marker = int(answer["NextPartNumberMarker"])

    # -- sign --------------------------------------------------------------------------------------------

    def presign(self, key: str, upload_id: str, number: int, sha256_hex: str, ttl_s: int = URL_TTL_S) -> PresignedPart:
        """An UploadPart URL for part `number` whose body must hash to `sha256_hex` (the digest is a signed header)."""
        digest = b64_digest(sha256_hex)
        url = self._call(
            "config",
            self.client.generate_presigned_url,
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ChecksumSHA256": digest,
                "ChecksumAlgorithm": "SHA256",
            },
            ExpiresIn=ttl_s,
        )
        headers = {"x-amz-checksum-sha256": digest, "x-amz-sdk-checksum-algorithm": "SHA256"}
        return PresignedPart(number, str(url), headers, datetime.now(UTC) + timedelta(seconds=ttl_s))

    # -- complete and abort ------------------------------------------------------------------------------

    def complete(self, key: str, upload_id: str, layout: PartLayout, signed: dict[int, str]) -> str:
        """Complete the upload from the parts S3 holds, then verify the object; its composite checksum (base64).

        `signed` maps each part number to the hex SHA-256 the hub signed for it. PartsMissing when a part is
        absent or differs from the layout; ProviderError step `verify` when the object is not what the node hashed
        (the object is deleted: the next attempt starts over).
        """
        numbers = list(range(1, layout.count + 1))
        try:
            stored = {p.number: p for p in self.stored_parts(key, upload_id)}
        except ProviderError as err:
            if err.step == "complete" and self._verified(key, layout, signed, numbers, missing_ok=True):
                return composite_checksum([signed[n] for n in numbers])  # completed before; the answer was lost
            raise
        missing = [
            n
            for n in numbers
            if n not in signed
            or n not in stored
            or stored[n].size != layout.length(n)
            or (stored[n].checksum is not None and stored[n].checksum != b64_digest(signed[n]))
        ]
        if missing:
            raise PartsMissing(missing)
        parts = [{"PartNumber": n, "ETag": stored[n].etag, "ChecksumSHA256": b64_digest(signed[n])} for n in numbers]
        self._call(
            "complete",
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._verified(key, layout, signed, numbers)
        return composite_checksum([signed[n] for n in numbers])

    def _verified(
        self, key: str, layout: PartLayout, signed: dict[int, str], numbers: list[int], missing_ok: bool = False
    ) -> bool:
        """The object at `key` has the size and composite checksum of the signed parts; else it is deleted (ProviderError)."""
        if any(n not in signed for n in numbers):
            if missing_ok:
                return False
            raise PartsMissing([n for n in numbers if n not in signed])
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as err:
            if missing_ok and _code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _wrap("verify", err) from err
        expected = composite_checksum([signed[n] for n in numbers])
        reported = str(head.get("ChecksumSHA256") or "").split("-", 1)[0]
        size = int(head.get("ContentLength", -1))
        if reported == expected and size == layout.size:
            return True
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=key)
        if not reported:
            raise ProviderError("verify", "the server reports no SHA-256 checksum for the object: it cannot be verified")
        raise ProviderError(
            "verify",
            f"the object is not what the node hashed (size {size}, expected {layout.size}; "
            f"composite SHA-256 {reported}, expected {expected}); deleted it",
            retryable=True,
        )

    def abort(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and the parts S3 holds for it (an upload S3 no longer knows is fine)."""
        try:
            self._call("delete", self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ProviderError as err:
            if err.step != "complete":
                raise

    def _call(self, step: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProviderError:
            raise
        except Exception as err:
            if _code(err) == "NoSuchUpload":
                raise ProviderError("complete", "the server no longer knows this multipart upload") from err
            raise _wrap(step, err) from err


def _code(err: Exception) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _wrap(step: str, err: Exception) -> ProviderError:
    """A boto3/botocore error as a ProviderError: which step, what the server said (never a secret), retryable or not."""
    code = _code(err)
    if code:
        status = int(getattr(err, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        retryable = code in _RETRYABLE_CODES or status >= 500
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            step = "authenticate"
        message = str(getattr(err, "response", {}).get("Error", {}).get("Message") or code)
        return ProviderError(step, f"{code}: {message}", retryable=retryable)
    name = type(err).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return ProviderError("reach", f"cannot reach the server: {name}", retryable=True)
    return ProviderError(step, f"{name}: {err}", retryable=True)
