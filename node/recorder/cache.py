"""The recording cache: eviction and admission decided by pure functions, applied by a small `CacheDirectory`.

Only recordings the hub has confirmed (state `uploaded`) are ever evicted: first those kept longer
than `keep_after_upload_s` after upload, then, oldest upload first, as many as it takes to get
back above `min_free_pct` free or under `max_bytes`. New jobs are refused while free space stays
under `min_free_pct` after that; running recordings must stop (cleanly, finalized) when free
space falls under the hard floor, min(1 % of the disk, 200 MB).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hark_fleet.node.clock import parse_utc, utc_iso
from hark_fleet.node.recorder.const import (
    DEFAULT_KEEP_AFTER_UPLOAD_S,
    DEFAULT_MIN_FREE_PCT,
    HARD_FLOOR_BYTES,
    HARD_FLOOR_PCT,
    MANIFEST_FILE,
    UPLOADED,
)
from hark_fleet.node.recorder.errors import CachePolicyError, CorruptRecording, RecorderError
from hark_fleet.node.recorder.files import fsync_dir
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.protocol.atomic_file import write_atomic

log = logging.getLogger(__name__)

EVICTIONS_FILE = ".evictions-pending.json"  # beside the recordings (a file: never taken for a recording)
RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The node's cache policy (`{"min_free_pct", "keep_after_upload_s", "max_bytes", "min_free_bytes"}` in its config)
    and the hard floor. `min_free_bytes` is the retention policies' floor for nodes (issue 20); the larger floor holds."""

    min_free_pct: float = DEFAULT_MIN_FREE_PCT
    min_free_bytes: int = 0
    keep_after_upload_s: float = DEFAULT_KEEP_AFTER_UPLOAD_S
    max_bytes: int | None = None
    hard_floor_pct: float = HARD_FLOOR_PCT
    hard_floor_bytes: int = HARD_FLOOR_BYTES

    @classmethod
    def from_config(cls, body: dict[str, Any]) -> CachePolicy:
        """The policy from the node's config; CachePolicyError names an unknown or invalid key."""
        known = {f.name for f in fields(cls)}
        for key in body:
            if key not in known:
                raise CachePolicyError(f"cache.{key}: unknown key")
        for key, value in body.items():
            if key == "max_bytes" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise CachePolicyError(f"cache.{key}: must be a number of at least 0")
        if body.get("min_free_pct", 0) > 100:
            raise CachePolicyError("cache.min_free_pct: must be at most 100")
        return cls(**body)

    def hard_floor(self, total_bytes: int) -> int:
        """Free bytes under which running recordings must stop."""
        return int(min(total_bytes * self.hard_floor_pct / 100.0, self.hard_floor_bytes))


@dataclass(frozen=True, slots=True)
class CachedRecording:
    """What the policy needs to know of one recording in the cache."""

    recording_id: str
    state: str
    size_bytes: int
    uploaded_at: float | None = None  # epoch seconds


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """The cache disk's free and total bytes."""

    free_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class CacheDecision:
    """What to do now: recordings to evict, whether a new job may start, whether running ones must stop."""

    evict: tuple[str, ...]
    accept_jobs: bool
    stop_recording: bool
    free_bytes_after: int
    reasons: tuple[str, ...] = ()


def plan_cache(
    policy: CachePolicy,
    recordings: Iterable[CachedRecording],
    disk: DiskSpace,
    now: float,
    held: frozenset[str] = frozenset(),
) -> CacheDecision:
    """Decide evictions and admission from the policy, the cache's recordings and the disk (pure).

    `held`: recordings under legal hold (the hub lists them in the node's config); never evicted, even uploaded.
    """
    items = list(recordings)
    total = max(1, disk.total_bytes)
    cache_bytes = sum(r.size_bytes for r in items)
    uploaded = sorted(
        (r for r in items if r.state == UPLOADED and r.recording_id not in held),
        key=lambda r: (r.uploaded_at or 0.0, r.recording_id),
    )
    evict: list[str] = []
    freed = 0

    def low() -> bool:
        free = disk.free_bytes + freed
        return free * 100.0 < policy.min_free_pct * total or free < policy.min_free_bytes

    def over() -> bool:
        return policy.max_bytes is not None and cache_bytes - freed > policy.max_bytes

    for item in uploaded:
        expired = item.uploaded_at is None or now - item.uploaded_at >= policy.keep_after_upload_s
        if expired or low() or over():
            evict.append(item.recording_id)
            freed += item.size_bytes
    free_after = disk.free_bytes + freed
    reasons: list[str] = []
    stop = free_after < policy.hard_floor(total)
    if stop:
        reasons.append(f"free space {free_after} B is under the hard floor {policy.hard_floor(total)} B")
    if low():
        floor = (
            f"{policy.min_free_pct:g}%"
            if policy.min_free_pct * total / 100.0 >= policy.min_free_bytes
            else f"{policy.min_free_bytes} B"
        )
        reasons.append(f"free space is under {floor} even after evicting every uploaded recording")
    full = policy.max_bytes is not None and cache_bytes - freed >= policy.max_bytes
    if full:
        reasons.append(f"the cache holds {cache_bytes - freed} B, the limit is {policy.max_bytes} B")
    return CacheDecision(tuple(evict), not (stop or low() or full), stop, free_after, tuple(reasons))


class CacheDirectory:
    """The recordings under the node's cache root: listing, marking uploaded, deleting, disk space."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._applying = threading.Lock()  # the ad-hoc worker and the scheduled runner apply the policy from threads
        self.held: frozenset[str] = frozenset()  # under legal hold (the hub's config says): never evicted
        self._reports = threading.Lock()
        self._pending: list[str] | None = None  # evictions the hub has not been told of (kept in EVICTIONS_FILE)

    def path_for(self, recording_id: str) -> Path:
        """The directory a recording lives in; RecorderError for an id that is not a safe file name."""
        if not RECORDING_ID.match(recording_id) or recording_id in (".", ".."):
            raise RecorderError(f"{recording_id!r} cannot name a cache directory")
        return self.root / recording_id

    def manifests(self) -> list[Manifest]:
        """Every readable manifest in the cache (unreadable ones are logged and left alone)."""
        found = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists()):
            try:
                found.append(Manifest.load(directory))
            except CorruptRecording as err:
                log.error("cache: %s", err)
        return found

    def recordings(self) -> list[CachedRecording]:
        """The policy's view of every recording: state, bytes on disk, when it was uploaded."""
        items = []
        for manifest in self.manifests():
            directory = self.path_for(manifest.recording_id)
            size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
            uploaded_at = parse_utc(manifest.uploaded_at) if manifest.uploaded_at else None
            items.append(CachedRecording(manifest.recording_id, manifest.state, size, uploaded_at))
        return items

    def disk_space(self) -> DiskSpace:
        """Free and total bytes of the cache's file system."""
        usage = shutil.disk_usage(self.root)
        return DiskSpace(usage.free, usage.total)

    def mark_uploaded(self, recording_id: str, at: float | None = None) -> None:
        """Record that the hub confirmed the upload (the recording becomes evictable)."""
        directory = self.path_for(recording_id)
        manifest = Manifest.load(directory)
        manifest.state = UPLOADED
        manifest.uploaded_at = utc_iso(time.time() if at is None else at)
        manifest.save(directory)

    def delete(self, recording_id: str, force: bool = False) -> None:
        """Remove a recording; only an uploaded one unless `force` (e.g. a failed one reported to the hub)."""
        directory = self.path_for(recording_id)
        if not force and Manifest.load(directory).state != UPLOADED:
            raise RecorderError(f"{recording_id} is not confirmed uploaded: not deleting it")
        shutil.rmtree(directory)
        fsync_dir(self.root)

    def apply(self, policy: CachePolicy, now: float | None = None) -> CacheDecision:
        """Plan against the disk as it is and delete what the plan evicts (one caller at a time); the evictions are
        kept on disk for the hub (`evictions_pending`) until it has taken them."""
        with self._applying:
            held = self.held
            decision = plan_cache(policy, self.recordings(), self.disk_space(), time.time() if now is None else now, held)
            evicted = []
            for recording_id in decision.evict:
                log.info("cache: evicting uploaded recording %s", recording_id)
                self.delete(recording_id)
                evicted.append(recording_id)
            if evicted:
                self._note_evicted(evicted)
            return decision

    # -- evictions the hub is told of --------------------------------------------------------

    @property
    def evictions_file(self) -> Path:
        return self.root / EVICTIONS_FILE

    def _load_pending(self) -> list[str]:
        if self._pending is None:
            try:
                loaded = json.loads(self.evictions_file.read_text())
                self._pending = [str(r) for r in loaded] if isinstance(loaded, list) else []
            except FileNotFoundError:
                self._pending = []
            except (OSError, ValueError) as err:
                log.error("cache: unreadable %s (%s): starting a new list", self.evictions_file, err)
                self._pending = []
        return self._pending

    def _note_evicted(self, recording_ids: list[str]) -> None:
        with self._reports:
            pending = self._load_pending()
            pending.extend(r for r in recording_ids if r not in pending)
            write_atomic(self.evictions_file, json.dumps(pending))

    def evictions_pending(self) -> list[str]:
        """Recordings this cache evicted that the hub has not been told of yet (oldest first)."""
        with self._reports:
            return list(self._load_pending())

    def evictions_reported(self, recording_ids: Iterable[str]) -> None:
        """The hub took these: forget them."""
        done = set(recording_ids)
        with self._reports:
            pending = [r for r in self._load_pending() if r not in done]
            self._pending = pending
            if pending:
                write_atomic(self.evictions_file, json.dumps(pending))
            else:
                self.evictions_file.unlink(missing_ok=True)
