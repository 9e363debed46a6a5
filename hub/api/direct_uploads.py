"""Direct uploads (agent, issue 20): a node uploads its recordings straight to S3 through requests the hub signs.

Each handler checks the caller's claim on the database executor, talks to S3 on the default executor
(never holding a database worker while the network answers), then records the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.nodes import CONTROL as NODE_CONTROL
from hark_fleet.hub.api.nodes import AgentHandler
from hark_fleet.hub.errors import Conflict, InvalidRequest, ServiceUnavailable
from hark_fleet.hub.offsite.base import ProviderError
from hark_fleet.hub.offsite.runner import load_spec
from hark_fleet.hub.offsite.s3_direct import DirectS3, PartsMissing
from hark_fleet.hub.services import direct_uploads
from hark_fleet.hub.services.direct_uploads import MAX_ACTIVE, DirectClaim

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    active: list[str] = []  # items this node is uploading now: not taken back as left behind


class Part(msgspec.Struct, forbid_unknown_fields=True):
    n: int
    sha256: str
    size: int


class PartsBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    parts: list[Part]


class ProgressBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    bytes_sent: int


class CompleteBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    sha256: str


class FailedBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    error: str
    retryable: bool = True


class DirectHandler(BaseHandler):
    """Shared by the direct-upload routes: blocking S3 work off the loop, the provider's client from its spec."""

    permissions = {"post": NODE_CONTROL}

    @property
    def backoff_s(self) -> float:
        return float(self.hub.config.upload_backoff_base_s)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def s3(self, claimed: DirectClaim) -> DirectS3:
        try:
            spec = await self.hub.db.run(load_spec, claimed.provider_id, self.hub.secrets)
            return await self.blocking(DirectS3, spec)
        except ProviderError:
            raise
        except Exception as err:  # a provider that cannot be loaded or whose client cannot be made
            raise ProviderError("config", f"the provider cannot be used: {type(err).__name__}") from err

    async def abort(self, claimed: DirectClaim) -> None:
        """Drop the claim's multipart upload on S3, if it has one (best effort: a failure is logged)."""
        if not claimed.upload_id:
            return
        try:
            direct = await self.s3(claimed)
            await self.blocking(direct.abort, claimed.remote_key, claimed.upload_id)
        except ProviderError as err:
            log.warning("direct upload %s: could not abort it on S3: %s", claimed.item_id, err)

    async def fail(self, claimed: DirectClaim, error: str, retryable: bool, keep_resume: bool = True) -> dict[str, Any]:
        item, events = await self.hub.db.run(
            direct_uploads.failed, self.actor, claimed.item_id, claimed.epoch, error, retryable, keep_resume, self.backoff_s
        )
        self.hub.ingest.publish_events(events)
        return item


class ClaimHandler(DirectHandler, AgentHandler):
    """`POST /api/v1/nodes/{id}/direct-uploads/claim` `{"active"}`: the node's next direct upload, opened on S3, or 204."""

    async def post(self, id: str) -> None:
        body = self.parse_body(ClaimBody) if self.body_bytes().strip() else ClaimBody()
        if len(body.active) > MAX_ACTIVE:
            raise InvalidRequest("The claim is invalid.", fields={"active": f"at most {MAX_ACTIVE} items"})
        claimed = await self.hub.db.run(direct_uploads.claim, self.actor, body.active)
        if claimed is None:
            self.write_no_content()
            return
        try:
            direct = await self.s3(claimed)
            upload_id, stored = await self.blocking(direct.open, claimed.remote_key, claimed.upload_id)
        except ProviderError as err:
            log.warning("direct upload %s: cannot open it on S3: %s", claimed.item_id, err)
            await self.fail(claimed, f"opening the upload: {err}", err.retryable)
            self.write_no_content()
            return
        self.write_data(await self.hub.db.run(direct_uploads.opened, claimed, upload_id, stored))


class PartsHandler(DirectHandler):
    """`POST /api/v1/direct-uploads/{id}/parts` `{"lease_epoch", "parts": [{"n", "sha256", "size"}]}`: presigned URLs."""

    async def post(self, id: str) -> None:
        body = self.parse_body(PartsBody)
        claimed = await self.hub.db.run(direct_uploads.held, self.actor, id, body.lease_epoch)
        wanted = direct_uploads.check_parts(claimed, [msgspec.structs.asdict(p) for p in body.parts])
        assert claimed.upload_id is not None
        try:
            direct = await self.s3(claimed)
            urls = await self.blocking(
                lambda: [direct.presign(claimed.remote_key, claimed.upload_id or "", n, d) for n, d in sorted(wanted.items())]
            )
        except ProviderError as err:
            raise ServiceUnavailable(f"Cannot sign the parts: {err}") from err
        await self.hub.db.run(direct_uploads.signed, self.actor, id, body.lease_epoch, claimed.upload_id, wanted)
        self.write_data({"parts": [u.to_api() for u in urls]})


class ProgressHandler(DirectHandler):
    """`POST /api/v1/direct-uploads/{id}/progress` `{"lease_epoch", "bytes_sent"}`."""

    async def post(self, id: str) -> None:
        body = self.parse_body(ProgressBody)
        self.write_data(await self.hub.db.run(direct_uploads.progress, self.actor, id, body.lease_epoch, body.bytes_sent))


class CompleteHandler(DirectHandler):
    """`POST /api/v1/direct-uploads/{id}/complete` `{"lease_epoch", "sha256"}`: completed on S3, verified, synced."""

    async def post(self, id: str) -> None:
        body = self.parse_body(CompleteBody)
        sha256 = body.sha256.strip().lower()
        if not direct_uploads.is_sha256_hex(sha256):
            raise InvalidRequest(
                "The completion is invalid.", fields={"sha256": "the whole file's SHA-256 in hex (64 characters)"}
            )
        claimed = await self.hub.db.run(direct_uploads.check_complete, self.actor, id, body.lease_epoch, sha256)
        if isinstance(claimed, dict):
            self.write_data(claimed)  # completed before; the node did not hear the answer
            return
        if sha256 != claimed.sha256:
            await self.abort(claimed)
            await self.fail(claimed, f"the node's file has SHA-256 {sha256}; the recording's is {claimed.sha256}", False, False)
            raise Conflict("The file is not the recording's: its SHA-256 differs.", code=direct_uploads.MISMATCH)
        if not claimed.upload_id:
            raise Conflict("The upload has not been opened; claim it again.")
        try:
            direct = await self.s3(claimed)
            composite = await self.blocking(
                direct.complete, claimed.remote_key, claimed.upload_id, claimed.layout, claimed.signed
            )
        except PartsMissing as err:
            raise Conflict(
                f"Some parts are not on S3 yet: {err.numbers[:20]}.", code="parts_missing", missing=err.numbers
            ) from err
        except ProviderError as err:
            if err.step == "verify":
                await self.fail(claimed, str(err), err.retryable, keep_resume=False)
                raise Conflict(f"S3's copy failed verification: {err.message}", code="verification_failed") from err
            if err.step == "complete" and "no longer knows" in err.message:
                await self.fail(claimed, str(err), True, keep_resume=False)
                raise Conflict("S3 no longer knows this upload; it starts over.", code="upload_lost") from err
            raise ServiceUnavailable(f"Cannot complete the upload now: {err}") from err
        item, events = await self.hub.db.run(direct_uploads.synced, self.actor, claimed, composite)
        self.hub.ingest.publish_events(events)
        self.write_data(item)


class FailedHandler(DirectHandler):
    """`POST /api/v1/direct-uploads/{id}/failed` `{"lease_epoch", "error", "retryable"}`: the node gives up this attempt.

    Not retryable (the cache no longer holds the file): the multipart upload is aborted and the next attempt starts over.
    """

    async def post(self, id: str) -> None:
        body = self.parse_body(FailedBody)
        claimed = await self.hub.db.run(direct_uploads.held_or_none, self.actor, id, body.lease_epoch)
        if claimed is not None and not body.retryable:
            await self.abort(claimed)
        item, events = await self.hub.db.run(
            direct_uploads.failed, self.actor, id, body.lease_epoch, body.error, body.retryable, body.retryable, self.backoff_s
        )
        self.hub.ingest.publish_events(events)
        self.write_data(item)
