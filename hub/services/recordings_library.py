"""The recordings library: search, detail and context, metadata, deletion, and what playback needs.

Plain functions on a database worker (and `waveform_peaks` on the CPU pool); the files
themselves are reached through `hub.storage`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import peewee
import soundfile
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import HealthEvent, Node, Recording, RecordingJob, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.health import UNRESOLVED, event_to_api
from hark_fleet.hub.services.listing import (
    Filter,
    ListRequest,
    ListSpec,
    export_batches,
    fetch_page,
    get_scoped,
    one_of,
    parse_list_request,
)
from hark_fleet.hub.services.nodes import node_to_api
from hark_fleet.hub.services.recordings import STATUSES, TERMINAL_STATUSES, job_to_api, recording_to_api
from hark_fleet.hub.storage import RecordingStorage

FORMATS = ("wav", "flac")
STORED = ("completed", "interrupted")
CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}
MAX_BULK = 500
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_KEYS = 100
MAX_KEY_CHARS = 100
MAX_METADATA_DEPTH = 8
MAX_CONTEXT_EVENTS = 200
HELD = "the recording is under legal hold"
log = logging.getLogger(__name__)

MAX_BUCKETS = 10_000
WAVEFORM_CACHE_KEEP = 4  # bucket counts cached per recording: any reader may ask for 10 000 different ones
WAVEFORM_BLOCK_FRAMES = 256 * 1024


RECORDING_LIST = ListSpec(
    model=Recording,
    serialize=lambda r: recording_to_api(r, None),
    filters=(
        Filter("node_id", Recording.node_id),
        Filter("site", Recording.site),
        Filter("status", Recording.status, one_of(STATUSES)),
        Filter("format", Recording.format, one_of(FORMATS)),  # not a query name on exports: see parse_library_request
        Filter("interrupted", Recording.interrupted, query.boolean),
        Filter("schedule_id", Recording.schedule_id, facet=False),  # the takes of one schedule (issue 19)
        Filter("legal_hold", Recording.legal_hold, query.boolean),  # held recordings are never deleted (issue 20)
    ),
    search=(Recording.name, Recording.metadata),
    # A recording's time is when it started, or when it was asked for if it never started.
    # (an expression, used only in comparisons, where it stands in for a field)
    time_field=cast(peewee.Field, peewee.fn.COALESCE(Recording.started_at, Recording.created_at)),
    site_field=Recording.site,
    owner_field=Recording.created_by_id,  # recording:read_own: the caller's own recordings whatever their site
    descending=True,
    export_columns=(
        "id",
        "node_id",
        "site",
        "name",
        "status",
        "started_at",
        "ended_at",
        "duration_s",
        "sample_rate",
        "channels",
        "bit_depth",
        "format",
        "size_bytes",
        "sha256",
        "interrupted",
        "time_quality",
        "metadata",
        "created_at",
        "job_id",
        "legal_hold",
    ),
)


def parse_library_request(
    args: Mapping[str, Sequence[str]], ids: Sequence[str] | None = None, audio_format_param: bool = True
) -> ListRequest:
    """List parameters; `format` filters by audio format except on exports, where it names the export's format."""
    rest = dict(args)
    formats = tuple(rest.pop("format", ())) if audio_format_param else ()
    problems = {"format": f"must be one of {', '.join(FORMATS)}"} if any(f not in FORMATS for f in formats) else {}
    try:
        request = parse_list_request(RECORDING_LIST, rest, ids)
    except InvalidRequest as err:
        raise InvalidRequest(err.message, fields={**err.extra.get("fields", {}), **problems}) from err
    if problems:
        raise InvalidRequest("Some query parameters are invalid.", fields=problems)
    if formats:
        request = dataclasses.replace(request, filters={**request.filters, "format": formats})
    return request


def latest_job_ids(recording_ids: Sequence[str]) -> dict[str, str]:
    """Each recording's latest job id."""
    if not recording_ids:
        return {}
    rows: Any = (
        RecordingJob.select(RecordingJob.recording_id, peewee.fn.MAX(RecordingJob.id))
        .where(RecordingJob.recording_id.in_(list(recording_ids)))
        .group_by(RecordingJob.recording_id)
        .tuples()
    )
    return {str(recording_id): str(job_id) for recording_id, job_id in rows}


def _with_job_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    jobs = latest_job_ids([i["id"] for i in items])
    for item in items:
        item["job_id"] = jobs.get(item["id"])
    return items


def library_page(request: ListRequest, scope: SiteScope) -> tuple[list[dict[str, Any]], str | None]:
    items, next_cursor = fetch_page(RECORDING_LIST, request, scope)
    return _with_job_ids(items), next_cursor


def library_export_batches(
    request: ListRequest, scope: SiteScope
) -> Callable[[str | None], tuple[list[dict[str, Any]], str | None]]:
    next_batch = export_batches(RECORDING_LIST, request, scope)

    def batch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        rows, last = next_batch(after)
        return _with_job_ids(rows), last

    return batch


# -- one recording ------------------------------------------------------------------------


def get_recording(scope: SiteScope, recording_id: str) -> Recording:
    """A recording inside the caller's sites (or, for `recording:read_own`, one it started), or 404."""
    recording: Recording = get_scoped(Recording, recording_id, Recording.site, scope, Recording.created_by_id)
    return recording


def _latest_job(recording_id: str) -> RecordingJob | None:
    job: RecordingJob | None = (
        RecordingJob.select().where(RecordingJob.recording_id == recording_id).order_by(RecordingJob.id.desc()).first()
    )
    return job


def _api(recording: Recording) -> dict[str, Any]:
    job = _latest_job(recording.id)
    return recording_to_api(recording, job.id if job else None)


def recording_actions(recording: Recording, job: RecordingJob | None, principal: Principal) -> dict[str, dict[str, Any]]:
    """Which actions the caller may take on this recording now, and why not."""

    def may(permission: str) -> bool:
        return principal.can(permission) and principal.scope(permission).allows(recording.site)

    def state(permission: str, why_not: str | None) -> dict[str, Any]:
        if not may(permission):
            return {"allowed": False, "reason": f"needs {permission} on this recording's site"}
        return {"allowed": why_not is None, "reason": why_not}

    status = recording.status
    no_file = None if status in STORED and recording.storage_key else f"there is no file yet (the recording is {status})"
    if status in ("queued", "recording"):
        stop = "already asked to stop" if job is not None and job.stop_requested else None
    else:
        stop = f"only a queued or running recording can be stopped (this one is {status})"
    terminal = None if status in TERMINAL_STATUSES else f"only a finished recording can be deleted (this one is {status})"
    if recording.legal_hold:
        terminal = HELD
    return {
        "playback": state("recording:playback", no_file),
        "download": state("recording:download", no_file),
        "edit_metadata": state("recording:edit", None),
        "stop": state("recording:control", stop),
        "delete": state("recording:delete", terminal),
        "legal_hold": state("recording:edit", None),  # place, re-word or release (issue 20)
    }


def recording_detail(scope: SiteScope, recording_id: str, principal: Principal) -> dict[str, Any]:
    recording = get_recording(scope, recording_id)
    job = _latest_job(recording.id)
    return {**recording_to_api(recording, job.id if job else None), "actions": recording_actions(recording, job, principal)}


def recording_context(scope: SiteScope, recording_id: str) -> dict[str, Any]:
    """What explains a recording: its node, job, profile as recorded, integrity ledger and the node's health meanwhile."""
    recording = get_recording(scope, recording_id)
    job = _latest_job(recording.id)
    node = Node.get_or_none(Node.id == recording.node_id)
    start: datetime = recording.started_at or recording.created_at
    end: datetime = recording.ended_at or utcnow()
    events = (
        HealthEvent.select()
        .where(
            HealthEvent.node_id == recording.node_id,
            HealthEvent.first_seen <= end,
            (HealthEvent.state.in_(UNRESOLVED)) | (peewee.fn.COALESCE(HealthEvent.resolved_at, HealthEvent.last_seen) >= start),
        )
        .order_by(HealthEvent.first_seen)
        .limit(MAX_CONTEXT_EVENTS)
    )
    return {
        "recording": recording_to_api(recording, job.id if job else None),
        "node": node_to_api(node) if node is not None else None,
        "job": job_to_api(job) if job is not None else None,
        "profile": recording.profile or {},
        "integrity": recording.integrity or {},
        "span": {"from": iso(start), "to": iso(end)},
        "health_events": [event_to_api(e) for e in events],
    }


# -- metadata -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge key by key, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_metadata(metadata: dict[str, Any]) -> None:
    """The limits of a recording's metadata object; a 400 names the one broken."""
    problems: dict[str, str] = {}
    if len(metadata) > MAX_METADATA_KEYS:
        problems["metadata"] = f"at most {MAX_METADATA_KEYS} keys"
    for key in metadata:
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            problems[f"metadata.{key[:40]}"] = f"a key has 1 to {MAX_KEY_CHARS} characters"
    if _depth(metadata) > MAX_METADATA_DEPTH:
        problems["metadata"] = f"nested at most {MAX_METADATA_DEPTH} levels deep"
    if len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        problems["metadata"] = f"at most {MAX_METADATA_BYTES} bytes as JSON"
    if problems:
        raise InvalidRequest("The metadata is too large or malformed.", fields=problems)


def update_metadata(actor: Actor, scope: SiteScope, recording_id: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Merge `patch` into a recording's metadata; audited."""
    with database_proxy.atomic():
        recording = get_recording(scope, recording_id)
        before = _api(recording)
        merged = merge_patch(recording.metadata or {}, patch)
        check_metadata(merged)
        Recording.update(metadata=merged, updated_at=utcnow()).where(Recording.id == recording.id).execute()
        after = _api(Recording.get_by_id(recording.id))
        record(
            actor,
            "recording.metadata.update",
            permission="recording:edit",
            target=("recording", recording.id),
            before=before,
            after=after,
        )
    return after


def _per_id(ids: Sequence[str], act: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    if not 1 <= len(ids) <= MAX_BULK:
        raise InvalidRequest("Too many or no ids.", fields={"ids": f"1 to {MAX_BULK} recording ids"})
    results: list[dict[str, Any]] = []
    for recording_id in dict.fromkeys(ids):
        try:
            results.append({"id": recording_id, "ok": True, **act(recording_id)})
        except (Conflict, InvalidRequest, NotFound) as err:
            results.append({"id": recording_id, "ok": False, "error": {"code": err.code, "message": err.message}})
    return results


def bulk_update_metadata(actor: Actor, scope: SiteScope, ids: Sequence[str], patch: dict[str, Any]) -> list[dict[str, Any]]:
    """The same merge patch on many recordings; each answers on its own."""
    return _per_id(ids, lambda rid: {"recording": update_metadata(actor, scope, rid, patch)})


# -- deletion -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deleted:
    """A recording removed from the library, and its stored file to remove."""

    recording_id: str
    storage_key: str | None
    events: tuple[FleetEvent, ...]


def delete_recording(actor: Actor, scope: SiteScope, recording_id: str) -> Deleted:
    """Remove a finished recording and its jobs; the caller then removes the stored file. Audited."""
    with database_proxy.atomic():
        recording = get_recording(scope, recording_id)
        if recording.status not in TERMINAL_STATUSES:
            raise Conflict(f"Only a finished recording can be deleted (this one is {recording.status}); stop it first.")
        if recording.legal_hold:
            why = recording.legal_hold_reason
            raise Conflict(f"The recording is under legal hold ({why}); release the hold first.", code="legal_hold")
        before = _api(recording)
        RecordingJob.delete().where(RecordingJob.recording_id == recording.id).execute()
        Recording.delete().where(Recording.id == recording.id).execute()
        record(actor, "recording.delete", permission="recording:delete", target=("recording", recording.id), before=before)
    event = FleetEvent("recording.deleted", recording.site, {"id": recording.id, "node_id": recording.node_id})
    return Deleted(recording.id, recording.storage_key, (event,))


def bulk_delete(actor: Actor, scope: SiteScope, ids: Sequence[str]) -> tuple[list[dict[str, Any]], list[Deleted]]:
    """Delete many recordings; each answers on its own."""
    deleted: list[Deleted] = []

    def one(recording_id: str) -> dict[str, Any]:
        deleted.append(delete_recording(actor, scope, recording_id))
        return {}

    return _per_id(ids, one), deleted


# -- files ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A recording's file in storage, as playback and download need it."""

    recording_id: str
    storage_key: str
    format: str
    size_bytes: int | None
    sha256: str | None
    name: str
    duration_s: float | None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.format, "application/octet-stream")

    @property
    def filename(self) -> str:
        return f"{self.name or self.recording_id}.{self.format}"


def stored_file(scope: SiteScope, recording_id: str, reader: SiteScope | None = None) -> StoredFile:
    """The recording's stored file; 409 when the recording has none (yet).

    `reader` is where the caller may read recordings (`recording:read_own`): playing or downloading
    one it may not read (another user's, for a recordist) answers 404 as if it did not exist.
    """
    recording = get_recording(scope, recording_id)
    if reader is not None and not reader.allows_row(recording.site, recording.created_by_id):
        raise NotFound(f"No recording {recording_id}.")
    if recording.hub_evicted_at is not None:  # retention evicted the hub's copy (issue 20): 410 naming where copies are
        from hark_fleet.hub.services.recording_copies import check_on_hub  # noqa: PLC0415 - it imports this module

        check_on_hub(recording)
    if recording.status not in STORED or not recording.storage_key:
        raise Conflict(f"The recording has no file yet (it is {recording.status}).", code="no_file")
    return StoredFile(
        recording.id,
        recording.storage_key,
        recording.format,
        recording.size_bytes,
        recording.sha256,
        recording.name,
        recording.duration_s,
    )


def waveform_peaks(storage: RecordingStorage, key: str, buckets: int) -> dict[str, Any]:
    """Min/max sample per bucket and channel over the whole file, read in blocks (cached beside the file)."""
    cache_key = f"{key}.waveform-{buckets}.json"
    cached = storage.get_bytes(cache_key)
    if cached is not None:
        peaks: dict[str, Any] = json.loads(cached)
        return peaks
    with storage.local_copy(key) as path, soundfile.SoundFile(str(path)) as sound:
        frames, channels, rate = sound.frames, sound.channels, sound.samplerate
        low = np.zeros((buckets, channels), dtype=np.float32)
        high = np.zeros((buckets, channels), dtype=np.float32)
        seen = np.zeros(buckets, dtype=bool)
        position = 0
        for block in sound.blocks(blocksize=WAVEFORM_BLOCK_FRAMES, dtype="float32", always_2d=True):
            index = (np.arange(position, position + len(block), dtype=np.int64) * buckets) // max(frames, 1)
            starts = np.flatnonzero(np.diff(index, prepend=-1))
            which = index[starts]
            block_low = np.minimum.reduceat(block, starts, axis=0)
            block_high = np.maximum.reduceat(block, starts, axis=0)
            fresh = ~seen[which]
            low[which] = np.where(fresh[:, None], block_low, np.minimum(low[which], block_low))
            high[which] = np.where(fresh[:, None], block_high, np.maximum(high[which], block_high))
            seen[which] = True
            position += len(block)
    result = {
        "buckets": buckets,
        "frames": frames,
        "sample_rate": rate,
        "duration_s": frames / rate if rate else None,
        "channels": [
            {"index": c, "min": [_round(v) for v in low[:, c]], "max": [_round(v) for v in high[:, c]]} for c in range(channels)
        ],
    }
    try:
        storage.put_bytes(cache_key, json.dumps(result, separators=(",", ":")).encode())
        others = [k for k in storage.derived_keys(key) if k.startswith(f"{key}.waveform-") and k != cache_key]
        for stale in others[: max(0, len(others) - (WAVEFORM_CACHE_KEEP - 1))]:
            storage.delete(stale)
    except OSError as err:  # a cache: a full disk must not fail the read
        log.warning("waveform of %s not cached: %s", key, err.strerror or err)
    return result


def _round(value: float) -> float:
    return 0.0 if math.isnan(value) else round(float(value), 5)
