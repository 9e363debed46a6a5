"""The upload queue's transitions (issue 20), shared by the hub's runner (via_hub) and the node's direct route.

    pending -> queued -> uploading -> synced | failed;  failed -> (backoff due) -> queued again.

`promote_due` moves what became eligible to `queued` (and back to `pending`, with the reason, what no
longer is: a window that closed, a provider disabled). `claim` is a conditional update checked by its
row count, so two claimers never get the same item; it bumps `lease_epoch`, and every later write of
the claimer names that epoch: a write from an older lease (a hub that was thought dead, a node that
lost its claim) raises `StaleLease` and changes nothing. `resume` (the provider's multipart state) is
kept across failures, releases and restarts, so the next claim continues where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import peewee
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording, Site, UploadItem, UploadPolicy, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.offsite import backoff
from hark_fleet.hub.offsite.window import DailyWindow
from hark_fleet.hub.services import upload_queue

MAX_ATTEMPTS = 12
ROUTES = ("via_hub", "direct")
CAPTURE_ENDED = ("uploading", "completed", "interrupted")  # the node has the whole file (direct route)
BATCH = 1000
ERROR_MAX = 2000

WAITING_FOR_HUB = "waiting for the file to reach the hub"
WAITING_FOR_END = "waiting for the recording to end"
PROVIDER_DISABLED = "provider disabled"
PROVIDER_GONE = "provider deleted"
POLICY_DISABLED = "policy disabled"
RECORDING_GONE = "recording deleted"


class StaleLease(Conflict):
    """A write from a claim that is no longer the item's current one (409 `stale_lease`)."""

    code = "stale_lease"


class Verified(Protocol):
    """What a provider answers for a verified copy (hub.offsite.base.UploadResult)."""

    remote_key: str
    sha256: str
    verified_by: str
    bytes: int


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    """An item as its claimer needs it to upload: what to send, where, from which resume state, under which lease."""

    item_id: str
    epoch: int
    route: str
    recording_id: str
    provider_id: str
    policy_id: str | None
    site: str | None
    node_id: str
    storage_key: str | None
    size: int
    sha256: str
    remote_key: str
    resume: dict[str, Any]
    bytes_sent: int
    attempts: int
    bandwidth_cap_bps: int | None
    window: DailyWindow | None = None  # the policy's daily window in the site's zone: uploads stop when it closes
    recording_name: str = ""
    provider_name: str = ""


# -- eligibility ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    """What one promotion pass looks up once: providers, policies, site zones, and each window's answer."""

    providers: dict[str, UploadProvider]
    policies: dict[str, UploadPolicy]
    zones: dict[str, str]
    now: datetime
    windows: dict[tuple[str, str], str | None]  # (policy id, zone) -> why closed, or None when open

    def window_blocker(self, policy: UploadPolicy, site: str | None) -> str | None:
        zone = self.zones.get(site or "", "UTC")
        known = (policy.id, zone)
        if known not in self.windows:
            try:
                window = DailyWindow.parse(policy.window_start or "", policy.window_end or "", zone)
            except ValueError:
                self.windows[known] = None  # a window is checked when saved; an unreadable one never holds uploads back
            else:
                self.windows[known] = None if window.is_open(self.now) else f"outside the window {window.describe()}"
        return self.windows[known]


def _context(now: datetime) -> _Context:
    return _Context(
        providers={p.id: p for p in UploadProvider.select(UploadProvider.id, UploadProvider.enabled)},
        policies={p.id: p for p in UploadPolicy.select()},
        zones={s.id: s.time_zone for s in Site.select(Site.id, Site.time_zone)},
        now=now,
        windows={},
    )


@dataclass(frozen=True, slots=True)
class _Row:
    """An item and its recording as promotion reads them (one joined query, only the columns it needs)."""

    id: str
    state: str
    state_reason: str | None
    route: str
    provider_id: str
    policy_id: str | None
    recording_id: str | None  # None: the recording is gone
    status: str | None
    storage_key: str | None
    hub_evicted_at: datetime | None
    sha256: str | None
    site: str | None


def _blocker(row: _Row, ctx: _Context) -> str | None:
    """Why the item may not be uploaded now, or None when it may."""
    if row.recording_id is None:
        return RECORDING_GONE
    provider = ctx.providers.get(row.provider_id)
    if provider is None:
        return PROVIDER_GONE
    if not provider.enabled:
        return PROVIDER_DISABLED
    policy = ctx.policies.get(row.policy_id) if row.policy_id else None
    if policy is not None and not policy.enabled:
        return POLICY_DISABLED
    if row.route == "direct":
        if row.status not in CAPTURE_ENDED:
            return WAITING_FOR_END
    elif not row.storage_key or row.hub_evicted_at is not None or not row.sha256:
        return WAITING_FOR_HUB
    if policy is not None and policy.when == "window" and policy.window_start and policy.window_end:
        return ctx.window_blocker(policy, row.site)
    return None


def _rows(after: str, now: datetime, fresh_only: bool) -> list[_Row]:
    if fresh_only:  # only what may have become eligible since it was made or failed
        new = (UploadItem.state == "pending") & (
            UploadItem.state_reason.is_null() | (UploadItem.state_reason == upload_queue.WAITING)
        )
        due = (UploadItem.state == "failed") & (UploadItem.next_attempt_at <= now)
        wanted = new | due
    else:
        wanted = (UploadItem.state << ["pending", "queued"]) | (
            (UploadItem.state == "failed") & (UploadItem.next_attempt_at <= now)
        )
    query = (
        UploadItem.select(
            UploadItem.id,
            UploadItem.state,
            UploadItem.state_reason,
            UploadItem.route,
            UploadItem.provider_id,
            UploadItem.policy_id,
            Recording.id,
            Recording.status,
            Recording.storage_key,
            Recording.hub_evicted_at,
            Recording.sha256,
            Recording.site,
        )
        .join(Recording, peewee.JOIN.LEFT_OUTER, on=(Recording.id == UploadItem.recording_id))
        .where(UploadItem.id > after, wanted)
        .order_by(UploadItem.id)
        .limit(BATCH)
        .tuples()
    )
    return [_Row(*values) for values in query.iterator()]


def promote_due(now: datetime | None = None, fresh_only: bool = False) -> int:
    """Queue what became eligible (pending, and failed items whose backoff is over); return how many were queued.

    A queued item that stopped being eligible goes back to pending with the reason; a pending one keeps
    its reason up to date. With `fresh_only`, only items just made and failed ones due again are looked at.
    """
    now = now or utcnow()
    promoted, after = promote_batch(now, "", fresh_only)
    while after is not None:
        more, after = promote_batch(now, after, fresh_only)
        promoted += more
    return promoted


def promote_batch(now: datetime, after: str, fresh_only: bool = False) -> tuple[int, str | None]:
    """One batch of `promote_due` (items after the id `after`): how many were queued, and where to go on (None: done).

    The runner calls it batch by batch, so requests waiting for the database worker interleave with a long
    queue. Items whose state and reason stay as they are cost one read; those that change are written in
    one update per (old state, new state, reason).
    """
    ctx = _context(now)
    rows = _rows(after, now, fresh_only)
    if not rows:
        return 0, None
    moves: dict[tuple[str, str, str | None], list[str]] = {}
    for row in rows:
        reason = _blocker(row, ctx)
        state = "queued" if reason is None else "pending"
        if state != row.state or reason != row.state_reason:
            moves.setdefault((row.state, state, reason), []).append(row.id)
    promoted = 0
    for (old, new, reason), ids in moves.items():
        changes: dict[str, Any] = {"state": new, "state_reason": reason, "updated_at": now}
        if old == "failed":
            changes["next_attempt_at"] = None
        with database_proxy.atomic():
            done = UploadItem.update(**changes).where(UploadItem.id << ids, UploadItem.state == old).execute()
        if new == "queued" and old != "queued":
            promoted += done
    return promoted, rows[-1].id if len(rows) == BATCH else None


def claimable(route: str, limit: int, skip: Iterable[str] = (), provider_ids: Iterable[str] | None = None) -> list[UploadItem]:
    """Queued items of `route`, oldest first (fewest attempts first among equals), leaving out `skip`."""
    query = UploadItem.select().where(UploadItem.state == "queued", UploadItem.route == route)
    skipped = list(skip)
    if skipped:
        query = query.where(UploadItem.id.not_in(skipped))
    if provider_ids is not None:
        query = query.where(UploadItem.provider_id << list(provider_ids))
    return list(query.order_by(UploadItem.attempts, UploadItem.created_at, UploadItem.id).limit(limit))


# -- the lease ----------------------------------------------------------------------------------------------


def claim(item_id: str, route: str) -> ClaimedItem | None:
    """Take a queued item of `route` for upload under a new lease epoch; None when it is not queued (any more)."""
    at = utcnow()
    with database_proxy.atomic():
        taken = (
            UploadItem.update(
                state="uploading",
                state_reason=None,
                lease_epoch=UploadItem.lease_epoch + 1,
                attempts=UploadItem.attempts + 1,
                started_at=at,
                next_attempt_at=None,
                updated_at=at,
            )
            .where(UploadItem.id == item_id, UploadItem.state == "queued", UploadItem.route == route)
            .execute()
        )
        if not taken:
            return None
        item = UploadItem.get_by_id(item_id)
        recording = Recording.get_or_none(Recording.id == item.recording_id)
        on_hub = recording is not None and bool(recording.storage_key) and recording.hub_evicted_at is None
        if recording is None or not recording.sha256 or (route == "via_hub" and not on_hub):
            reason = RECORDING_GONE if recording is None else WAITING_FOR_HUB
            UploadItem.update(state="pending", state_reason=reason, attempts=UploadItem.attempts - 1, updated_at=at).where(
                UploadItem.id == item_id
            ).execute()
            return None
        policy = UploadPolicy.get_or_none(UploadPolicy.id == item.policy_id) if item.policy_id else None
        window = _window_of(policy, recording.site)
        provider_name = UploadProvider.select(UploadProvider.name).where(UploadProvider.id == item.provider_id).scalar()
        size = int(recording.size_bytes or 0)
        if item.bytes_total != size:
            UploadItem.update(bytes_total=size).where(UploadItem.id == item_id).execute()
    return ClaimedItem(
        item_id=item.id,
        epoch=item.lease_epoch,
        route=item.route,
        recording_id=item.recording_id,
        provider_id=item.provider_id,
        policy_id=item.policy_id,
        site=item.site,
        node_id=item.node_id,
        storage_key=recording.storage_key,
        size=size,
        sha256=recording.sha256,
        remote_key=item.remote_key or "",
        resume=dict(item.resume or {}),
        bytes_sent=int(item.bytes_sent or 0),
        attempts=item.attempts,
        bandwidth_cap_bps=policy.bandwidth_cap_bps if policy is not None else None,
        window=window,
        recording_name=recording.name or "",
        provider_name=provider_name or "",
    )


def _window_of(policy: UploadPolicy | None, site: str | None) -> DailyWindow | None:
    if policy is None or policy.when != "window" or not policy.window_start or not policy.window_end:
        return None
    zone = Site.select(Site.time_zone).where(Site.id == site).scalar() if site else None
    try:
        return DailyWindow.parse(policy.window_start, policy.window_end, zone or "UTC")
    except ValueError:
        return None


def _held(item_id: str, epoch: int) -> UploadItem:
    """The item if `epoch` is still its lease and it is uploading; otherwise StaleLease."""
    item = UploadItem.get_or_none(UploadItem.id == item_id)
    if item is None:
        raise StaleLease("The upload item is gone; this claim is stale.", lease_epoch=None)
    if item.lease_epoch != epoch or item.state != "uploading":
        raise StaleLease(
            f"The upload item was claimed again or finished (epoch {item.lease_epoch}, {item.state}); this claim is stale.",
            lease_epoch=item.lease_epoch,
        )
    return item


def _fenced(item_id: str, epoch: int, **changes: Any) -> None:
    """Apply `changes` only under the lease `epoch` while uploading (a conditional update); StaleLease otherwise."""
    done = (
        UploadItem.update(**changes)
        .where(UploadItem.id == item_id, UploadItem.lease_epoch == epoch, UploadItem.state == "uploading")
        .execute()
    )
    if not done:
        _held(item_id, epoch)  # raises with the current epoch
        raise StaleLease("The upload item changed under this claim.", lease_epoch=None)


def progress(item_id: str, epoch: int, bytes_sent: int, resume: dict[str, Any]) -> None:
    """Record what has reached the provider and the state to resume from."""
    _fenced(item_id, epoch, bytes_sent=max(0, int(bytes_sent)), resume=resume, updated_at=utcnow())


def release(item_id: str, epoch: int, reason: str | None = None) -> None:
    """Give a claimed item back unfinished (the runner stops or pauses: queued; its window closed: pending with
    `reason`); the attempt is not counted, the resume state and bytes sent are kept."""
    state = "pending" if reason else "queued"
    with database_proxy.atomic():
        _fenced(item_id, epoch, state=state, state_reason=reason, attempts=UploadItem.attempts - 1, updated_at=utcnow())


def finish_synced(item_id: str, epoch: int, result: Verified) -> list[FleetEvent]:
    """The provider holds a verified copy: synced, with its key, checksum and how it was verified."""
    at = utcnow()
    with database_proxy.atomic():
        _fenced(
            item_id,
            epoch,
            state="synced",
            state_reason=None,
            remote_key=result.remote_key,
            checksum_sha256=result.sha256,
            verified_by=result.verified_by,
            bytes_sent=result.bytes,
            bytes_total=result.bytes,
            last_error=None,
            next_attempt_at=None,
            resume={},
            synced_at=at,
            updated_at=at,
        )
        item = UploadItem.get_by_id(item_id)
        return [FleetEvent("upload.synced", item.site, item_api(item))]


def finish_failed(
    item_id: str,
    epoch: int,
    error: str,
    retryable: bool,
    now: datetime | None = None,
    *,
    base_s: float = backoff.BASE_S,
    keep_resume: bool = True,
) -> list[FleetEvent]:
    """The attempt failed: failed with the reason; tried again after a backoff if `retryable` and attempts remain.

    Without `keep_resume` the next attempt starts over (a copy that failed verification).
    """
    now = now or utcnow()
    with database_proxy.atomic():
        item = _held(item_id, epoch)
        again = retryable and item.attempts < MAX_ATTEMPTS
        next_at = now + timedelta(seconds=backoff.delay_s(item.attempts, base_s)) if again else None
        changes: dict[str, Any] = {
            "state": "failed",
            "state_reason": None,
            "last_error": (error or "failed")[:ERROR_MAX],
            "next_attempt_at": next_at,
            "updated_at": now,
        }
        if not keep_resume:
            changes.update(resume={}, bytes_sent=0)
        _fenced(item_id, epoch, **changes)
        item = UploadItem.get_by_id(item_id)
        return [FleetEvent("upload.failed", item.site, item_api(item))]


def requeue_interrupted(route: str = "via_hub") -> int:
    """After a hub restart: items of `route` left `uploading` by the hub that died are queued again, resume kept.

    The cut-off attempt is not counted: the next claim continues it.
    """
    return (
        UploadItem.update(state="queued", state_reason=None, attempts=UploadItem.attempts - 1, updated_at=utcnow())
        .where(UploadItem.state == "uploading", UploadItem.route == route)
        .execute()
    )


DIRECT_STALL_S = 3600.0  # a direct upload its node has not advanced for this long is taken back
DIRECT_STALLED = "its node sent nothing for an hour"


def release_stalled_direct(now: datetime, stall_s: float = DIRECT_STALL_S) -> int:
    """Direct uploads whose node went quiet (gone for good, or away for long) do not stay `uploading` for ever.

    The lease is bumped (a node coming back with the old claim gets 409 and claims again, resuming from the parts S3
    holds). When the hub holds the recording's file the item is handed to the hub's runner (`via_hub`, `pending`, sent
    from the hub's copy); otherwise it goes back to `queued` for its node, saying why. The attempt is counted.
    """
    cutoff = now - timedelta(seconds=stall_s)
    stalled = list(
        UploadItem.select().where(UploadItem.route == "direct", UploadItem.state == "uploading", UploadItem.updated_at < cutoff)
    )
    moved = 0
    for item in stalled:
        recording = Recording.get_or_none(Recording.id == item.recording_id)
        on_hub = bool(recording and recording.storage_key and recording.sha256 and recording.hub_evicted_at is None)
        changes: dict[str, Any] = {
            "state": "pending" if on_hub else "queued",
            "state_reason": f"{DIRECT_STALLED}; the hub sends its own copy" if on_hub else f"{DIRECT_STALLED}; waiting for it",
            "lease_epoch": UploadItem.lease_epoch + 1,
            "updated_at": now,
        }
        if on_hub:
            changes.update(route="via_hub", resume={}, bytes_sent=0)
        moved += (
            UploadItem.update(**changes)
            .where(UploadItem.id == item.id, UploadItem.state == "uploading", UploadItem.lease_epoch == item.lease_epoch)
            .execute()
        )
    return moved


# -- figures for the runner's status ----------------------------------------------------------------------


def backlog(sites: frozenset[str] | None = None, route: str = "via_hub") -> dict[str, int]:
    """Items waiting to be uploaded by `route` (pending, queued, uploading, failed and due again) and their bytes left."""
    total = peewee.fn.COALESCE(UploadItem.bytes_total, 0)
    left = peewee.Case(None, [(total > UploadItem.bytes_sent, total - UploadItem.bytes_sent)], 0)
    query = UploadItem.select(peewee.fn.COUNT(UploadItem.id), peewee.fn.COALESCE(peewee.fn.SUM(left), 0)).where(
        UploadItem.route == route,
        (UploadItem.state << ["pending", "queued", "uploading"])
        | ((UploadItem.state == "failed") & UploadItem.next_attempt_at.is_null(False)),
    )
    if sites is not None:
        query = query.where(UploadItem.site << list(sites))
    row: Any = query.tuples().get()
    return {"count": int(row[0] or 0), "bytes": int(row[1] or 0)}


def item_api(item: UploadItem) -> dict[str, Any]:
    """The item's API dict, as the queue shows it."""
    return upload_queue.item_to_api(item)
