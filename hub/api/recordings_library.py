"""The recordings library: list, facets, export, detail, context, metadata, deletion, download and playback."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any
from urllib.parse import quote

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import MAX_EXPORT_IDS, ExportSelection, stream_export
from hark_fleet.hub.api.recordings import CreateRecordingHandler
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.errors import ApiError, Conflict, InvalidRequest
from hark_fleet.hub.services import recordings_library as library
from hark_fleet.hub.services.listing import facet_counts, parse_export_format
from hark_fleet.hub.services.recordings_library import RECORDING_LIST, Deleted, StoredFile
from hark_fleet.hub.storage import StorageError
from tornado.iostream import StreamClosedError

log = logging.getLogger(__name__)

READ = "recording:read_own"  # held with recording:read (every recording in scope) or alone (the caller's own)
PLAYBACK = "recording:playback"
DOWNLOAD = "recording:download"
EDIT = "recording:edit"
DELETE = "recording:delete"
READ_BLOCK = 256 * 1024
DEFAULT_BUCKETS = 1000
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"


class IdsBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class BulkMetadataBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]
    metadata: dict[str, Any]


# -- the collection ---------------------------------------------------------------------------


class RecordingsHandler(CreateRecordingHandler):
    """`GET /api/v1/recordings` (the library, newest first); `POST` starts a recording (`hub.api.recordings`)."""

    permissions = {"get": READ, **CreateRecordingHandler.permissions}

    async def get(self) -> None:
        request = library.parse_library_request(self.query_args())
        items, next_cursor = await self.hub.db.run(library.library_page, request, self.scope)
        self.write_page(items, next_cursor)


class RecordingFacetsHandler(BaseHandler):
    """`GET /api/v1/recordings/facets`."""

    permissions = {"get": READ}

    async def get(self) -> None:
        args = self.query_args()
        names = [n for raw in args.pop("fields", []) for n in raw.split(",") if n]
        request = library.parse_library_request(args)
        self.write_data(await self.hub.db.run(facet_counts, RECORDING_LIST, request, self.scope, names))


class RecordingExportHandler(BaseHandler):
    """`GET|POST /api/v1/recordings/export?format=csv|ndjson`: a manifest of every matching recording."""

    permissions = {"get": READ, "post": READ}

    async def get(self) -> None:
        await self._export(self.query_args(), None)

    async def post(self) -> None:
        args = self.query_args()
        ids = None
        if self.body_bytes().strip():
            selection = self.parse_body(ExportSelection)
            ids = selection.ids
            if ids is not None and len(ids) > MAX_EXPORT_IDS:
                raise InvalidRequest("Too many ids.", fields={"ids": f"at most {MAX_EXPORT_IDS}"})
            for name, value in selection.filters.items():
                args["audio_format" if name == "format" else name] = [value] if isinstance(value, str) else list(value)
        await self._export(args, ids)

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        fmt = parse_export_format(args)
        args.pop("format", None)
        if "audio_format" in args:
            args["format"] = args.pop("audio_format")
        request = library.parse_library_request(args, ids)
        batches = library.library_export_batches(request, self.scope)
        await stream_export(self, fmt, RECORDING_LIST.export_columns, batches, "recordings")


class BulkMetadataHandler(BaseHandler):
    """`POST /api/v1/recordings/bulk-metadata` `{"ids", "metadata"}`: one merge patch on many, a result per id."""

    permissions = {"post": EDIT}

    async def post(self) -> None:
        body = self.parse_body(BulkMetadataBody)
        self.write_data(await self.hub.db.run(library.bulk_update_metadata, self.actor, self.scope, body.ids, body.metadata))


class BulkDeleteHandler(BaseHandler):
    """`POST /api/v1/recordings/bulk-delete` `{"ids"}`: finished recordings only, a result per id."""

    permissions = {"post": DELETE}
    runs_on_full_disk = frozenset({"post"})  # deleting makes room

    async def post(self) -> None:
        body = self.parse_body(IdsBody)
        results, deleted = await self.hub.db.run(library.bulk_delete, self.actor, self.scope, body.ids)
        for gone in deleted:
            await remove_files(self, gone)
        self.write_data(results)


async def remove_files(handler: BaseHandler, gone: Deleted) -> None:
    """Remove a deleted recording's stored file (and any partial upload); a failure is logged, not answered."""
    loop = asyncio.get_running_loop()
    try:
        if gone.storage_key:
            await loop.run_in_executor(None, handler.hub.storage.delete, gone.storage_key)
        await loop.run_in_executor(None, handler.hub.uploads.discard, gone.recording_id)
    except (OSError, StorageError) as err:
        log.warning("recording %s deleted but its file stays: %s", gone.recording_id, err)
    handler.hub.ingest.publish_events(list(gone.events))


# -- one recording -------------------------------------------------------------------------------


class RecordingHandler(BaseHandler):
    """`GET /api/v1/recordings/{id}` with the actions it allows; `DELETE` a finished one and its file."""

    permissions = {"get": READ, "delete": DELETE}
    runs_on_full_disk = frozenset({"delete"})  # deleting makes room

    async def get(self, id: str) -> None:
        assert self.principal is not None
        self.write_data(await self.hub.db.run(library.recording_detail, self.scope, id, self.principal))

    async def delete(self, id: str) -> None:
        gone = await self.hub.db.run(library.delete_recording, self.actor, self.scope, id)
        await remove_files(self, gone)
        self.write_no_content()


class RecordingActionsHandler(BaseHandler):
    """`GET /api/v1/recordings/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        assert self.principal is not None
        detail = await self.hub.db.run(library.recording_detail, self.scope, id, self.principal)
        self.write_data(detail["actions"])


class RecordingContextHandler(BaseHandler):
    """`GET /api/v1/recordings/{id}/context`: node, job, profile, integrity and the node's health meanwhile."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(library.recording_context, self.scope, id))


class RecordingMetadataHandler(BaseHandler):
    """`PATCH /api/v1/recordings/{id}/metadata`: a JSON merge patch (`null` removes a key)."""

    permissions = {"patch": EDIT}

    async def patch(self, id: str) -> None:
        patch = self.parse_body(dict[str, Any])
        self.write_data(await self.hub.db.run(library.update_metadata, self.actor, self.scope, id, patch))


# -- files: download, playback, waveform ---------------------------------------------------------


def content_disposition(kind: str, filename: str) -> str:
    """`attachment|inline` with an ASCII fallback name and the exact one (RFC 6266)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "recording"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class FileHandlerBase(BaseHandler):
    """Playback and download: the permission's sites, and only recordings the caller may read."""

    @property
    def reader(self) -> SiteScope:
        assert self.principal is not None
        return self.principal.scope(READ) if self.principal.can(READ) else SiteScope(frozenset())


class DownloadHandler(FileHandlerBase):
    """`POST /api/v1/recordings/{id}/download`: where to fetch the file (audited as a download)."""

    permissions = {"post": DOWNLOAD}
    runs_on_full_disk = frozenset({"post"})  # a read, audited

    async def post(self, id: str) -> None:
        file = await self.hub.db.run(library.stored_file, self.scope, id, self.reader)
        await self.audit("recording.download", permission=DOWNLOAD, target=("recording", id))
        self.write_data(_file_info(file, f"{self.request.path.rsplit('/', 1)[0]}/file"))


class PlaybackHandler(FileHandlerBase):
    """`POST /api/v1/recordings/{id}/playback`: where to stream the recording from."""

    permissions = {"post": PLAYBACK}
    runs_on_full_disk = frozenset({"post"})  # a read, audited

    async def post(self, id: str) -> None:
        file = await self.hub.db.run(library.stored_file, self.scope, id, self.reader)
        base = self.request.path.rsplit("/", 1)[0]
        self.write_data({**_file_info(file, f"{base}/stream"), "waveform_url": f"{base}/waveform"})


def _file_info(file: StoredFile, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "content_type": file.content_type,
        "filename": file.filename,
        "size_bytes": file.size_bytes,
        "sha256": file.sha256,
        "duration_s": file.duration_s,
    }


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range `header` asks for, inclusive; None for the whole file. Raises when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: RFC 9110 lets the server send the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"The range is outside the file ({size} bytes).", headers={"Content-Range": f"bytes */{size}"}, size_bytes=size
    )


class FileSender(FileHandlerBase):
    """Sends a stored recording in blocks, honouring `Range` (so an `<audio>` element can seek)."""

    accepts_query_token = True  # <audio> and <a download> cannot set a header
    disposition = "inline"

    async def get(self, id: str) -> None:
        file = await self.hub.db.run(library.stored_file, self.scope, id, self.reader)
        loop = asyncio.get_running_loop()
        try:
            size = await loop.run_in_executor(None, self.hub.storage.size, file.storage_key)
        except StorageError as err:
            log.error("recording %s: stored file %s is missing: %s", id, file.storage_key, err)
            raise Conflict("The recording's file is missing from storage.", code="file_missing") from err
        etag = f'"{file.sha256}"' if file.sha256 else None
        wanted = self.request.headers.get("Range")
        if_range = self.request.headers.get("If-Range")
        if if_range is not None and if_range != etag:
            wanted = None  # the client's copy is of another file: send it whole
        span = parse_range(wanted, size)
        start, end = span if span is not None else (0, size - 1)
        handle = await loop.run_in_executor(None, self.hub.storage.open, file.storage_key, start)
        self.set_header("Content-Type", file.content_type)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Disposition", content_disposition(self.disposition, file.filename))
        self.set_header("Cache-Control", "private, no-store")
        if etag:
            self.set_header("ETag", etag)
        if span is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.set_header("Content-Length", str(max(0, end - start + 1)))
        if self.request.method == "HEAD":
            await loop.run_in_executor(None, handle.close)
            self.finish()  # the headers only: reading the file would be wasted
            return
        left = end - start + 1
        try:
            while left > 0:
                block = await loop.run_in_executor(None, handle.read, min(READ_BLOCK, left))
                if not block:
                    break
                left -= len(block)
                self.write(block)
                await self.flush()
        except StreamClosedError:
            return  # the player moved on (a seek closes the previous request)
        finally:
            await loop.run_in_executor(None, handle.close)
        self.finish()

    def on_connection_close(self) -> None:
        # Tornado does not finish a request whose client left mid-answer: count it as done here.
        if not self._finished and self._counted:
            self._counted = False
            self.hub.requests_finished()
        super().on_connection_close()


class StreamHandler(FileSender):
    """`GET /api/v1/recordings/{id}/stream`: the audio for a player, with `Range`."""

    permissions = {"get": PLAYBACK}


class FileHandler(FileSender):
    """`GET /api/v1/recordings/{id}/file`: the file as an attachment, with `Range` (resumable downloads)."""

    permissions = {"get": DOWNLOAD}
    disposition = "attachment"


class WaveformHandler(BaseHandler):
    """`GET /api/v1/recordings/{id}/waveform?buckets=N`: min/max peaks per bucket and channel."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        buckets = self.query_integer("buckets", DEFAULT_BUCKETS, 1, library.MAX_BUCKETS)
        file = await self.hub.db.run(library.stored_file, self.scope, id)
        try:
            peaks = await self.hub.run_cpu(functools.partial(library.waveform_peaks, self.hub.storage, file.storage_key, buckets))
        except StorageError as err:
            raise Conflict("The recording's file is missing from storage.", code="file_missing") from err
        except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
            log.error("recording %s: cannot decode %s: %s", id, file.storage_key, err)
            raise Conflict("The recording's file cannot be decoded.", code="undecodable") from err
        self.write_data({"recording_id": id, **peaks})
