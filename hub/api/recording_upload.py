"""`HEAD|PUT /api/v1/recordings/{rid}/cache-file`: a node uploads a recording's file in resumable chunks.

The body is never held whole: `data_received` collects at most `FLUSH_BYTES` and appends it to
`<data_dir>/uploads/<rid>.part` on an executor (Tornado waits for that before reading on, so a
fast node cannot outrun the disk), updating the running sha256 on the way. After a hub restart,
or when the upload comes on through another hub sharing the data directory, the running hash is
rebuilt by re-reading the part once; one hub at a time writes a part, under its file lock (see
`hub.storage.PartialUploads`), and the others answer 409 upload_in_progress meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.errors import Conflict, Forbidden, InvalidRequest
from hark_fleet.hub.services import recording_upload
from hark_fleet.hub.services.recording_upload import ChunkHeaders, UploadTarget
from hark_fleet.hub.storage import recording_key
from tornado.http1connection import HTTP1Connection

log = logging.getLogger(__name__)

CONTROL = "node:control"
FLUSH_BYTES = 1024 * 1024
BODY_TIMEOUT_S = 3600.0  # one chunk may take this long to arrive


class ChecksumMismatch(InvalidRequest):
    code = "checksum_mismatch"


class CacheFileHandler(BaseHandler):
    """`HEAD` says how much is stored; `PUT` appends one chunk, and the final chunk completes the upload."""

    permissions = {"head": CONTROL, "put": CONTROL}
    max_body_bytes = recording_upload.MAX_CHUNK_BYTES

    def initialize(self, hub: Any, route: str) -> None:
        super().initialize(hub, route)
        self._buffer = bytearray()
        self._chunk: ChunkHeaders | None = None
        self._target: UploadTarget | None = None
        self._writer = False  # holds the recording's writer slot
        self._idempotent = False  # the upload already completed: the body is read and dropped
        self._received = 0
        self._put_started = False
        self._gone = False
        self._flushing = False
        self._write_error: BaseException | None = None

    # -- before the body ----------------------------------------------------------------

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "PUT":
            return
        self._body_unread = True  # refusals below come before the body is read
        rid = self.path_kwargs["rid"]
        headers = self.request.headers
        chunk = recording_upload.parse_chunk_headers(
            headers.get("Content-Range"),
            headers.get("X-Content-SHA256"),
            headers.get("X-Lease-Epoch"),
            headers.get("Content-Length"),
        )
        target = await self._own_target(rid)
        if target.stored:
            if chunk.sha256 != target.sha256 or chunk.total != target.size_bytes:
                raise Conflict(
                    "This recording's upload already completed with another file.",
                    code="upload_completed",
                    headers={"Upload-Offset": str(target.size_bytes or 0), "Upload-Complete": "true"},
                )
            self._idempotent = True
        else:
            recording_upload.check_writable(target, chunk.lease_epoch)
            if not self.hub.uploads.claim(rid, self, _writing):
                raise Conflict("Another upload of this recording is in progress.", code="upload_in_progress")
            self._writer = True
            offset = await self._io(self.hub.uploads.prepare, rid)
            if chunk.start != offset:
                raise Conflict(
                    f"The upload is at byte {offset}; send from there.",
                    code="offset_mismatch",
                    headers={"Upload-Offset": str(offset), "Upload-Complete": "false"},
                    upload_offset=offset,
                )
            if isinstance(self.request.connection, HTTP1Connection):
                self.request.connection.set_body_timeout(BODY_TIMEOUT_S)
        self._chunk = chunk
        self._target = target
        self._body_unread = False

    async def _own_target(self, rid: str) -> UploadTarget:
        target = await self.hub.db.run(recording_upload.load_target, rid)
        assert self.principal is not None
        if self.principal.kind != "node" or target.node_id != self.principal.id:
            await self.audit("access.denied", permission=CONTROL, outcome="failure", reason=f"node_mismatch on {self.route}")
            raise Forbidden("This recording belongs to another node.", code="node_mismatch")
        return target

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- the body -----------------------------------------------------------------------

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        self._received += len(chunk)
        if self._idempotent or self._chunk is None or self._write_error is not None:
            return
        self._buffer += chunk
        if len(self._buffer) >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer or self._target is None:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self._flushing = True
        try:
            await self._io(self.hub.uploads.append, self._target.recording_id, data)
        except OSError as err:
            log.error("cannot write the upload of %s: %s", self._target.recording_id, err)
            self._write_error = err
        finally:
            self._flushing = False
            if self._gone:
                self._release()  # deferred by on_connection_close until this write landed

    # -- after the body -----------------------------------------------------------------

    async def head(self, rid: str) -> None:
        target = await self._own_target(rid)
        if target.stored:
            offset, complete = target.size_bytes or 0, True
        else:
            offset, complete = await self._io(self.hub.uploads.offset, rid), False
        self.set_header("Upload-Offset", str(offset))
        self.set_header("Upload-Complete", "true" if complete else "false")
        self.set_header("Cache-Control", "no-store")
        self.finish()

    async def put(self, rid: str) -> None:
        self._put_started = True
        chunk, target = self._chunk, self._target
        assert chunk is not None and target is not None
        if self._idempotent:
            self._answer(chunk.total, True)
            return
        await self._flush()
        if self._write_error is not None:
            raise self._write_error
        offset = chunk.start + self._received
        if not chunk.final:
            self._answer(offset, False)
            return
        digest = await self._io(self.hub.uploads.hexdigest, rid)
        if digest != chunk.sha256:
            await self._io(self.hub.uploads.discard, rid)
            await self.hub.db.run(
                functools.partial(
                    recording_upload.reject_upload, self.actor, rid, f"sha256 {digest} of {offset} bytes, expected {chunk.sha256}"
                )
            )
            raise ChecksumMismatch(
                "The uploaded file does not match X-Content-SHA256; it was dropped: upload it again from byte 0.",
                headers={"Upload-Offset": "0", "Upload-Complete": "false"},
                received_sha256=digest,
            )
        key = recording_key(target.site, target.node_id, rid, target.format)
        part = self.hub.uploads.path(rid)
        size = await self._io(self.hub.storage.put_file, key, part)
        await self._io(self.hub.uploads.forget, rid)
        recording, events = await self.hub.db.run(
            recording_upload.complete_upload, self.actor, rid, chunk.lease_epoch, size, digest, key
        )
        self.hub.ingest.publish_events(events)
        self._answer(size, True, recording)

    def _answer(self, offset: int, complete: bool, recording: dict[str, Any] | None = None) -> None:
        self.set_header("Upload-Offset", str(offset))
        self.set_header("Upload-Complete", "true" if complete else "false")
        data: dict[str, Any] = {"upload_offset": offset, "complete": complete}
        if recording is not None:
            data["recording"] = recording
        self.write_data(data)

    # -- the end of the request, however it ends ---------------------------------------

    def _release(self) -> None:
        if self._writer and not self._flushing:
            self._writer = False
            self.hub.uploads.release(self.path_kwargs["rid"], self)

    def on_finish(self) -> None:
        self._release()
        super().on_finish()

    def on_connection_close(self) -> None:
        # The node went away mid-chunk: what reached the part stays (HEAD reports it), the rest is dropped.
        self._gone = True
        self._buffer.clear()
        self._release()
        if not self._put_started and self._counted:
            # Tornado drops a streamed request whose body never completed without finishing it.
            self._counted = False
            self.hub.requests_finished()
        super().on_connection_close()


def _writing(handler: CacheFileHandler) -> bool:
    """Whether a handler holding a writer slot still writes."""
    return handler._flushing or (not handler._gone and not handler._finished)
