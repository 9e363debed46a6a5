"""The hub's direct-upload routes as this node calls them, and the plain HTTP PUT of one part to S3.

The hub signs; this node never holds an S3 credential and never sends its hub credential to S3:
parts go to the presigned URLs through an HTTP client of their own, with only the signed headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.errors import HubProtocolError, HubRejected, NodeError
from hark_fleet.node.hub_client import HubClient, answer_data
from hark_fleet.node.recording_client import StaleLease
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
PUT_CONNECT_TIMEOUT_S = 20.0
PUT_TIMEOUT_S = 900.0  # one part; a presigned URL lives 15 minutes


class PartRefused(NodeError):
    """S3 refused a part (`status` and S3's error code); `expired` when the presigned URL had run out."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def expired(self) -> bool:
        return self.status == 403 and self.code in ("AccessDenied", "ExpiredToken", "RequestExpired", "")


class PartUnreachable(NodeError):
    """The part did not reach S3 (network, timeout, 5xx): sending it again may work."""


class FileChanged(NodeError):
    """The cached file's bytes changed between hashing a part and sending it."""


@dataclass(frozen=True, slots=True)
class DirectUpload:
    """A claimed direct upload: the item, its lease, the recording's file and the parts S3 already holds."""

    item_id: str
    lease_epoch: int
    upload_id: str
    recording_id: str
    size: int
    sha256: str
    part_size: int
    part_count: int
    parts_done: dict[int, str] = field(default_factory=dict)  # part number -> hex SHA-256

    def part_range(self, number: int) -> tuple[int, int]:
        """(offset, length) of part `number` (1-based) in the file."""
        offset = (number - 1) * self.part_size
        return offset, max(0, min(self.part_size, self.size - offset))


@dataclass(frozen=True, slots=True)
class SignedPart:
    number: int
    url: str
    headers: dict[str, str]


class DirectUploadClient:
    """Claims this node's direct uploads, asks for signed part URLs, reports progress, completes or gives up."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub
        self._s3: AsyncHTTPClient | None = None

    async def _post(self, url: str, body: dict[str, Any], expected: tuple[int, ...] = (200,)) -> Any:
        try:
            response = await self.hub.fetch(
                "POST", url, body=msgspec.json.encode(body), headers={"Content-Type": "application/json"}, expected=expected
            )
        except HubRejected as err:
            if err.status == 409 and err.code == "stale_lease":
                raise StaleLease(str(err)) from err
            raise
        return None if response.code == 204 else answer_data(response.body, "the hub's direct-upload answer")

    async def claim(self, active: Sequence[str] = ()) -> DirectUpload | None:
        """The next direct upload of this node (one it left behind first), or None."""
        data = await self._post(self.hub.url("direct-uploads/claim"), {"active": list(active)}, expected=(200, 204))
        if data is None:
            return None
        try:
            upload = data["upload"]
            return DirectUpload(
                item_id=str(data["item"]["id"]),
                lease_epoch=int(upload["lease_epoch"]),
                upload_id=str(upload["upload_id"]),
                recording_id=str(upload["recording_id"]),
                size=int(upload["size"]),
                sha256=str(upload["sha256"]).lower(),
                part_size=int(upload["part_size"]),
                part_count=int(upload["part_count"]),
                parts_done={int(p["n"]): str(p["sha256"]).lower() for p in upload.get("parts_done") or []},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise HubProtocolError(f"the direct-upload claim is not understood: {err!r}") from err

    async def sign(self, upload: DirectUpload, parts: Sequence[tuple[int, str, int]]) -> list[SignedPart]:
        """Presigned PUTs for `(number, sha256, size)` parts, with the headers to send."""
        body = {"lease_epoch": upload.lease_epoch, "parts": [{"n": n, "sha256": d, "size": s} for n, d, s in parts]}
        data = await self._post(self.hub.api_url(f"direct-uploads/{upload.item_id}/parts"), body)
        try:
            return [
                SignedPart(int(p["n"]), str(p["url"]), {str(k): str(v) for k, v in p["headers"].items()}) for p in data["parts"]
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HubProtocolError(f"the signed parts are not understood: {err!r}") from err

    async def progress(self, upload: DirectUpload, bytes_sent: int) -> None:
        body = {"lease_epoch": upload.lease_epoch, "bytes_sent": bytes_sent}
        await self._post(self.hub.api_url(f"direct-uploads/{upload.item_id}/progress"), body)

    async def complete(self, upload: DirectUpload, sha256: str) -> dict[str, Any]:
        """Ask the hub to complete and verify the upload; the item as it ends (synced)."""
        body = {"lease_epoch": upload.lease_epoch, "sha256": sha256}
        data = await self._post(self.hub.api_url(f"direct-uploads/{upload.item_id}/complete"), body)
        return data if isinstance(data, dict) else {}

    async def failed(self, upload: DirectUpload, error: str, retryable: bool) -> None:
        body = {"lease_epoch": upload.lease_epoch, "error": error[:2000], "retryable": retryable}
        await self._post(self.hub.api_url(f"direct-uploads/{upload.item_id}/failed"), body)

    # -- S3 -------------------------------------------------------------------------------------------------

    async def put_part(self, signed: SignedPart, path: Path, offset: int, length: int, sha256: str) -> None:
        """PUT `length` bytes of `path` from `offset` to the presigned URL, streamed; FileChanged if they no longer hash
        to `sha256` (checked as they are read, so the request is cut short), PartRefused / PartUnreachable otherwise."""
        digest = hashlib.sha256()
        loop = asyncio.get_running_loop()

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            with open(path, "rb") as handle:
                handle.seek(offset)
                left = length
                while left > 0:
                    block = await loop.run_in_executor(None, handle.read, min(READ_BYTES, left))
                    if not block:
                        raise FileChanged(f"{path.name} is shorter than the recording (ends before byte {offset + length})")
                    digest.update(block)
                    left -= len(block)
                    if left == 0 and digest.hexdigest() != sha256:
                        raise FileChanged(f"part at byte {offset} of {path.name} no longer has the SHA-256 it was signed with")
                    await write(block)

        producer: Any = produce
        request = HTTPRequest(
            signed.url,
            method="PUT",
            headers={**signed.headers, "Content-Length": str(length)},
            body_producer=producer,
            connect_timeout=PUT_CONNECT_TIMEOUT_S,
            request_timeout=PUT_TIMEOUT_S,
        )
        if self._s3 is None:
            self._s3 = AsyncHTTPClient(force_instance=True)
        try:
            response = await self._s3.fetch(request, raise_error=False)
        except FileChanged:
            raise
        except (HTTPClientError, OSError) as err:
            raise PartUnreachable(f"part {signed.number}: {err}") from err
        if response.code == 599 or response.code >= 500:
            raise PartUnreachable(f"part {signed.number}: HTTP {response.code}")
        if response.code != 200:
            code = _s3_code(response.body)
            raise PartRefused(f"part {signed.number}: S3 answered HTTP {response.code} {code}".rstrip(), response.code, code)

    def close(self) -> None:
        if self._s3 is not None:
            self._s3.close()
            self._s3 = None


def _s3_code(body: bytes | None) -> str:
    """S3's `<Code>` from an XML error body (never the body itself, which may echo the request)."""
    text = (body or b"")[:4096].decode("utf-8", "replace")
    start = text.find("<Code>")
    end = text.find("</Code>", start)
    return text[start + 6 : end][:64] if 0 <= start < end else ""


def hash_range(path: Path, offset: int, length: int, whole: Any = None) -> str:
    """Hex SHA-256 of `length` bytes of `path` from `offset`, also fed to `whole` (a running hash of the file) when given.

    Blocking: call it from an executor. FileChanged if the file is shorter.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = length
        while left > 0:
            block = handle.read(min(1024 * 1024, left))
            if not block:
                raise FileChanged(f"{path.name} ends before byte {offset + length}")
            digest.update(block)
            if whole is not None:
                whole.update(block)
            left -= len(block)
    return digest.hexdigest()


def file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
