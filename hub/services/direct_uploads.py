"""The direct route (issue 20): a node uploads a recording from its cache straight to S3, the hub only signs.

A node claims its own queued `direct` items (and takes back those it left `uploading` when it restarted);
the hub opens or resumes the item's multipart upload (`hub.offsite.s3_direct`) and keeps in `resume`
the upload id, the part size and the SHA-256 it signed for each part. The node hashes each part of
its cached file, gets presigned URLs with those digests signed in, PUTs the parts, and completes
with the whole file's SHA-256, which must be the recording's (the hub's copy's, or what the node
reported when capture ended). The hub completes the upload and checks S3's composite checksum
against the digests it signed: `synced`, verified by `s3-part-checksums`. The bytes never cross the hub.

Every call names the claim's `lease_epoch` (409 `stale_lease` otherwise, `upload_runs` fences it) and
only the item's node may make it (403 `node_mismatch`, audited). Functions here are database work
(run them on the database executor); the S3 calls between them are the API's, on another executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, UploadItem, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.offsite import backoff
from hark_fleet.hub.offsite.base import UploadResult
from hark_fleet.hub.offsite.s3_direct import URL_TTL_S, VERIFIED_BY, PartLayout, StoredPart, b64_digest, is_sha256_hex, layout_for
from hark_fleet.hub.services import upload_runs
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.upload_runs import StaleLease, item_api

NODE_CONTROL = "node:control"
ROUTE = "direct"
MAX_PARTS_PER_CALL = 100
MAX_ACTIVE = 100
ERROR_MAX = 2000
MISMATCH = "checksum_mismatch"
FROM_HUB = "the node cannot send it; the hub sends its own copy"


@dataclass(frozen=True, slots=True)
class DirectClaim:
    """An item under the calling node's lease: what to upload, where, and what the hub has signed so far."""

    item_id: str
    epoch: int
    provider_id: str
    remote_key: str
    recording_id: str
    format: str
    size: int
    sha256: str
    bytes_sent: int
    resume: dict[str, Any]

    @property
    def layout(self) -> PartLayout:
        part_size = self.resume.get("part_size")
        return layout_for(self.size, int(part_size) if part_size else None)

    @property
    def upload_id(self) -> str | None:
        value = self.resume.get("upload_id")
        return str(value) if value else None

    @property
    def signed(self) -> dict[int, str]:
        """Part number -> the hex SHA-256 the hub signed for it."""
        return {int(n): str(d) for n, d in (self.resume.get("parts") or {}).items()}


def reported_file(recording: Recording) -> tuple[str | None, int | None]:
    """The recording's file as the hub knows it: its stored copy's SHA-256 and size, else what the node reported at the end."""
    if recording.sha256 and recording.size_bytes is not None:
        return str(recording.sha256), int(recording.size_bytes)
    file = (recording.integrity or {}).get("file") if isinstance(recording.integrity, dict) else None
    if (
        isinstance(file, dict)
        and is_sha256_hex(str(file.get("sha256") or "").lower())
        and isinstance(file.get("size_bytes"), int)
    ):
        return str(file["sha256"]).lower(), int(file["size_bytes"])
    return None, None


def _claim_of(item: UploadItem, recording: Recording, sha256: str, size: int) -> DirectClaim:
    return DirectClaim(
        item_id=item.id,
        epoch=item.lease_epoch,
        provider_id=item.provider_id,
        remote_key=item.remote_key or "",
        recording_id=item.recording_id,
        format=recording.format,
        size=size,
        sha256=sha256,
        bytes_sent=int(item.bytes_sent or 0),
        resume=dict(item.resume or {}),
    )


# -- claim ----------------------------------------------------------------------------------------------------


def claim(actor: Actor, active: Sequence[str] = ()) -> DirectClaim | None:
    """The calling node's next direct upload under a new lease, or None.

    Its own items left `uploading` (a restart lost the worker) come first unless `active` names them (the
    node is working on them now); then queued ones, fewest attempts and oldest first. An item whose recording's
    file the node has not reported yet stays queued; one whose provider is not S3 fails for good.
    """
    node_id = actor.id
    candidates = list(
        UploadItem.select()
        .where(
            UploadItem.node_id == node_id,
            UploadItem.route == ROUTE,
            (UploadItem.state == "queued") | ((UploadItem.state == "uploading") & UploadItem.id.not_in(list(active) or [""])),
        )
        .order_by(UploadItem.state.desc(), UploadItem.attempts, UploadItem.created_at, UploadItem.id)  # uploading first
        .limit(50)
    )
    for item in candidates:
        recording = Recording.get_or_none(Recording.id == item.recording_id)
        provider = UploadProvider.get_or_none(UploadProvider.id == item.provider_id)
        if recording is None or provider is None or not provider.enabled:
            continue  # promote_due moves it back to pending with the reason
        sha256, size = reported_file(recording)
        if sha256 is None or size is None:
            continue
        at = utcnow()
        changes: dict[str, Any] = {
            "state": "uploading",
            "state_reason": None,
            "lease_epoch": UploadItem.lease_epoch + 1,
            "next_attempt_at": None,
            "bytes_total": size,
            "updated_at": at,
        }
        if item.state == "queued":
            changes.update(attempts=UploadItem.attempts + 1, started_at=at)
        with database_proxy.atomic():
            taken = (
                UploadItem.update(**changes)
                .where(UploadItem.id == item.id, UploadItem.state == item.state, UploadItem.lease_epoch == item.lease_epoch)
                .execute()
            )
            if not taken:
                continue
            claimed: UploadItem = UploadItem.get_by_id(item.id)
            if provider.kind != "s3":
                upload_runs.finish_failed(
                    item.id,
                    claimed.lease_epoch,
                    f"the direct route needs an S3 provider; {provider.name} is {provider.kind}",
                    False,
                )
                continue
            record(
                actor,
                "upload.direct_claim",
                permission=NODE_CONTROL,
                target=("upload_item", item.id),
                before={"state": item.state, "lease_epoch": item.lease_epoch},
                after={"state": "uploading", "lease_epoch": claimed.lease_epoch},
            )
        return _claim_of(claimed, recording, sha256, size)
    return None


def opened(claimed: DirectClaim, upload_id: str, stored: Sequence[StoredPart]) -> dict[str, Any]:
    """Keep the multipart upload the hub opened or resumed; the claim's answer with the parts already done."""
    layout = claimed.layout
    signed = claimed.signed if claimed.upload_id == upload_id else {}
    done = [
        p
        for p in sorted(stored, key=lambda p: p.number)
        if p.number in signed
        and 1 <= p.number <= layout.count
        and p.size == layout.length(p.number)
        and (p.checksum is None or p.checksum == b64_digest(signed[p.number]))
    ]
    resume = {
        "route": ROUTE,
        "upload_id": upload_id,
        "part_size": layout.part_size,
        "parts": {str(n): d for n, d in signed.items()},
    }
    sent = sum(p.size for p in done)
    upload_runs.progress(claimed.item_id, claimed.epoch, sent, resume)
    item: UploadItem = UploadItem.get_by_id(claimed.item_id)
    return {
        "item": item_api(item),
        "upload": {
            "lease_epoch": claimed.epoch,
            "upload_id": upload_id,
            "recording_id": claimed.recording_id,
            "format": claimed.format,
            "size": claimed.size,
            "sha256": claimed.sha256,
            "part_size": layout.part_size,
            "part_count": layout.count,
            "parts_done": [{"n": p.number, "size": p.size, "sha256": signed[p.number]} for p in done],
            "url_ttl_s": URL_TTL_S,
        },
    }


# -- under the lease ------------------------------------------------------------------------------------------


def _own(actor: Actor, item_id: str) -> UploadItem:
    """The calling node's direct item: 404 when there is none, 403 `node_mismatch` (audited) when it is another node's."""
    item = UploadItem.get_or_none(UploadItem.id == item_id)
    if item is None or item.route != ROUTE:
        raise NotFound(f"No direct upload {item_id}.")
    if item.node_id != actor.id:
        record(
            actor, "access.denied", permission=NODE_CONTROL, outcome="failure", reason=f"node_mismatch on direct upload {item_id}"
        )
        raise Forbidden("This upload belongs to another node.", code="node_mismatch")
    return item


def held(actor: Actor, item_id: str, epoch: int) -> DirectClaim:
    """The caller's item under its current lease (409 `stale_lease` for an older one or an item no longer uploading)."""
    item = _own(actor, item_id)
    if item.lease_epoch != epoch or item.state != "uploading":
        raise StaleLease(
            f"The upload was claimed again or finished (epoch {item.lease_epoch}, {item.state}); this claim is stale.",
            lease_epoch=item.lease_epoch,
        )
    recording = Recording.get_or_none(Recording.id == item.recording_id)
    sha256, size = reported_file(recording) if recording is not None else (None, None)
    if recording is None or sha256 is None or size is None:
        raise Conflict("The recording of this upload is gone.")
    return _claim_of(item, recording, sha256, size)


def held_or_none(actor: Actor, item_id: str, epoch: int) -> DirectClaim | None:
    """`held`, or None when the item already failed under this lease (the node says it again)."""
    item = _own(actor, item_id)
    if item.state == "failed" and item.lease_epoch == epoch:
        return None
    return held(actor, item_id, epoch)


def check_parts(claimed: DirectClaim, parts: Sequence[dict[str, Any]]) -> dict[int, str]:
    """The node's `[{n, sha256, size}]` checked against the layout; part number -> hex digest. 400 names each bad field."""
    layout = claimed.layout
    problems: dict[str, str] = {}
    if not parts:
        problems["parts"] = "name at least one part"
    elif len(parts) > MAX_PARTS_PER_CALL:
        problems["parts"] = f"at most {MAX_PARTS_PER_CALL} parts per call"
    wanted: dict[int, str] = {}
    for i, part in enumerate(parts[:MAX_PARTS_PER_CALL]):
        n, digest, size = part.get("n"), str(part.get("sha256") or "").lower(), part.get("size")
        if not isinstance(n, int) or not 1 <= n <= layout.count:
            problems[f"parts[{i}].n"] = f"a part number from 1 to {layout.count}"
            continue
        if n in wanted:
            problems[f"parts[{i}].n"] = f"part {n} is named twice"
        if not is_sha256_hex(digest):
            problems[f"parts[{i}].sha256"] = "the part's SHA-256 in hex (64 characters)"
        if size != layout.length(n):
            problems[f"parts[{i}].size"] = f"part {n} is {layout.length(n)} bytes (parts of {layout.part_size} bytes)"
        wanted[n] = digest
    if problems:
        raise InvalidRequest("The parts are invalid.", fields=problems)
    if not claimed.upload_id:
        raise Conflict("The upload has not been opened; claim it again.")
    return wanted


def signed(actor: Actor, item_id: str, epoch: int, upload_id: str, digests: dict[int, str]) -> None:
    """Keep the digests the hub has just signed, so completing can check the object against them."""
    claimed = held(actor, item_id, epoch)
    if claimed.upload_id != upload_id:
        raise Conflict("The upload was opened again meanwhile; ask for the parts again.")
    resume = dict(claimed.resume)
    resume["parts"] = {**(resume.get("parts") or {}), **{str(n): d for n, d in digests.items()}}
    upload_runs.progress(item_id, epoch, claimed.bytes_sent, resume)


def progress(actor: Actor, item_id: str, epoch: int, bytes_sent: int) -> dict[str, Any]:
    """The node's count of bytes S3 has taken so far."""
    claimed = held(actor, item_id, epoch)
    if not 0 <= bytes_sent <= claimed.size:
        raise InvalidRequest("The progress is invalid.", fields={"bytes_sent": f"from 0 to {claimed.size}"})
    upload_runs.progress(item_id, epoch, bytes_sent, claimed.resume)
    return item_api(UploadItem.get_by_id(item_id))


def check_complete(actor: Actor, item_id: str, epoch: int, sha256: str) -> DirectClaim | dict[str, Any]:
    """Before completing: the claim, or (a repeated call whose first answer was lost) the item already synced.

    A whole-file SHA-256 that is not the recording's fails the item for good (409 `checksum_mismatch`).
    """
    item = _own(actor, item_id)
    if item.state == "synced" and item.lease_epoch == epoch and item.checksum_sha256 == sha256:
        return item_api(item)
    return held(actor, item_id, epoch)  # the API compares the digests: it aborts the upload before failing the item


def synced(actor: Actor, claimed: DirectClaim, composite: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """S3 holds the object and its composite checksum is the signed parts': the item is synced."""
    result = UploadResult(remote_key=claimed.remote_key, sha256=claimed.sha256, verified_by=VERIFIED_BY, bytes=claimed.size)
    with database_proxy.atomic():
        events = upload_runs.finish_synced(claimed.item_id, claimed.epoch, result)
        item: UploadItem = UploadItem.get_by_id(claimed.item_id)
        after = item_api(item)
        record(
            actor,
            "upload.direct_synced",
            permission=NODE_CONTROL,
            target=("upload_item", item.id),
            after={
                "state": item.state,
                "remote_key": item.remote_key,
                "checksum_sha256": item.checksum_sha256,
                "s3_composite": composite,
            },
        )
    return after, events


def failed(
    actor: Actor,
    item_id: str,
    epoch: int,
    error: str,
    retryable: bool,
    keep_resume: bool = True,
    base_s: float = backoff.BASE_S,
) -> tuple[dict[str, Any], list[FleetEvent]]:
    """The upload failed (the node says why, or the hub found the object wrong): failed, retried after a backoff if `retryable`.

    A failure for good (the node's cache lost the file, or holds another one) while the hub holds the recording's
    file hands the item to the hub's runner: route `via_hub`, `pending`, sent from the hub's copy (the only source
    left; the item is no longer a direct upload). Saying it again under the same lease answers the same (once handed
    to the hub: 404)."""
    item = _own(actor, item_id)
    if item.state == "failed" and item.lease_epoch == epoch:
        return item_api(item), []
    held(actor, item_id, epoch)
    reason = (error or "the node could not upload it")[:ERROR_MAX]
    with database_proxy.atomic():
        events = upload_runs.finish_failed(item_id, epoch, reason, retryable, base_s=base_s, keep_resume=keep_resume)
        done: UploadItem = UploadItem.get_by_id(item_id)
        record(
            actor,
            "upload.direct_failed",
            permission=NODE_CONTROL,
            target=("upload_item", item_id),
            after={"state": done.state, "attempts": done.attempts, "next_attempt_at": str(done.next_attempt_at or "")},
            outcome="failure",
            reason=reason,
        )
        if not retryable and _on_hub(done.recording_id):
            UploadItem.update(
                route="via_hub",
                state="pending",
                state_reason=f"{FROM_HUB}: {reason}"[:ERROR_MAX],
                resume={},
                bytes_sent=0,
                next_attempt_at=None,
                updated_at=utcnow(),
            ).where(UploadItem.id == item_id, UploadItem.state == "failed", UploadItem.lease_epoch == epoch).execute()
            done = UploadItem.get_by_id(item_id)
    return item_api(done), events


def _on_hub(recording_id: str) -> bool:
    """Whether the hub holds the recording's file (uploaded, not evicted)."""
    recording = Recording.get_or_none(Recording.id == recording_id)
    return bool(recording and recording.storage_key and recording.sha256 and recording.hub_evicted_at is None)
