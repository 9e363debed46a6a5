"""The fleet at a glance (`GET /api/v1/status`): a handful of aggregate queries, scoped to the caller's sites.

Counts come from GROUP BY queries; the only rows read one by one are the recording jobs in
progress or uploading (their progress holds the byte figures) and each node's last heartbeat
figures for its disk. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import HealthEvent, Node, Recording, RecordingJob
from hark_fleet.hub.services.health import SEVERITIES
from hark_fleet.hub.services.listing import scoped
from hark_fleet.hub.services.nodes import NODE_STATUSES
from hark_fleet.hub.services.recordings import STATUSES as RECORDING_STATUSES

OPEN_STATES = ("open", "acknowledged")  # as on the fleet page: suppressed events are left out on purpose
RECENT = timedelta(hours=24)
HOURS_LEFT_WARNING = 24.0  # the built-in watchdog default: a node under this many hours of disk is worth a look
HOURS_LEFT_CRITICAL = 2.0
LISTED_NODES = 20  # the status lists the nodes with the fewest hours left; counts cover them all
MIN_MEASURED_S = 2.0  # a job's own byte rate is trusted once it has captured this long; before, the format's rate


@dataclass(frozen=True, slots=True)
class RecordingRate:
    """Bytes a second the recordings in progress write, and how many there are."""

    bytes_per_s: float
    recordings: int


def _scoped(query: Any, site_field: Any, scope: SiteScope) -> Any:
    """`listing.scoped`, typed loosely: these queries select columns, not model rows."""
    return scoped(query, site_field, scope)


def _counts(query: Any, names: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for value, count in query.tuples():
        counts[value] = counts.get(value, 0) + count
    return counts


def nodes_by_status(scope: SiteScope) -> dict[str, Any]:
    query = _scoped(Node.select(Node.status, peewee.fn.COUNT(Node.id)), Node.site, scope).group_by(Node.status)
    counts = _counts(query, NODE_STATUSES)
    return {"total": sum(counts.values()), "by_status": counts}


def open_health_events(scope: SiteScope) -> dict[str, Any]:
    """Open (and acknowledged) events by severity, all of them and those on nodes (with how many nodes)."""
    base = HealthEvent.state.in_(OPEN_STATES)
    every = _scoped(HealthEvent.select(HealthEvent.severity, peewee.fn.COUNT(HealthEvent.id)), HealthEvent.site, scope)
    on_nodes = _scoped(
        HealthEvent.select(
            HealthEvent.severity, peewee.fn.COUNT(HealthEvent.id), peewee.fn.COUNT(HealthEvent.node_id.distinct())
        ),
        HealthEvent.site,
        scope,
    )
    by_severity = _counts(every.where(base).group_by(HealthEvent.severity), SEVERITIES)
    node_events = {s: {"events": 0, "nodes": 0} for s in SEVERITIES}
    for severity, events, nodes in (
        on_nodes.where(base, HealthEvent.node_id.is_null(False)).group_by(HealthEvent.severity).tuples()
    ):
        node_events[severity] = {"events": events, "nodes": nodes}
    return {"total": sum(by_severity.values()), "by_severity": by_severity, "on_nodes": node_events}


def recent_recordings(scope: SiteScope, since: Any) -> dict[str, Any]:
    query = _scoped(Recording.select(Recording.status, peewee.fn.COUNT(Recording.id)), Recording.site, scope)
    counts = _counts(query.where(Recording.created_at >= since).group_by(Recording.status), RECORDING_STATUSES)
    return {"hours": int(RECENT.total_seconds() // 3600), "total": sum(counts.values()), "by_status": counts}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def upload_backlog(scope: SiteScope) -> dict[str, Any]:
    """Recordings still uploading: how many, and the bytes left where the node said how far it got."""
    jobs = _scoped(RecordingJob.select(RecordingJob.progress), RecordingJob.site, scope).where(RecordingJob.state == "uploading")
    count, known, left = 0, 0, 0
    for job in jobs:
        count += 1
        progress = job.progress or {}
        sent, total = _number(progress.get("bytes")), _number(progress.get("total"))
        if sent is not None and total is not None:
            known += 1
            left += max(0, int(total - sent))
    return {"count": count, "bytes": left, "bytes_known_for": known}


def recording_rate() -> RecordingRate:
    """How fast the recordings being captured now (hub-wide) will fill the hub's storage."""
    jobs: Any = (
        RecordingJob.select(RecordingJob.progress, Recording.sample_rate, Recording.bit_depth, Recording.channels)
        .join(Recording, on=(Recording.id == RecordingJob.recording_id))
        .where(RecordingJob.state == "recording")
        .tuples()
    )
    rate, count = 0.0, 0
    for progress, sample_rate, bit_depth, channels in jobs:
        count += 1
        progress = progress or {}
        written, seconds = _number(progress.get("bytes")), _number(progress.get("seconds"))
        if written is not None and seconds is not None and seconds >= MIN_MEASURED_S:
            rate += written / seconds
        else:
            rate += float(sample_rate * (bit_depth // 8) * (channels or 1))  # uncompressed: an upper bound
    return RecordingRate(rate, count)


def hours_left(free_bytes: int | None, bytes_per_s: float) -> float | None:
    """Hours until `free_bytes` fill at `bytes_per_s` (None when nothing is recording or the space is unknown)."""
    if free_bytes is None or bytes_per_s <= 0:
        return None
    return round(free_bytes / bytes_per_s / 3600, 2)


def node_storage(scope: SiteScope) -> dict[str, Any]:
    """Each node's disk from its last heartbeat: free bytes, recording rate and hours left; lowest first."""
    rows = _scoped(Node.select(Node.id, Node.name, Node.site, Node.status, Node.metrics), Node.site, scope)
    nodes = []
    for node in rows:
        metrics = node.metrics or {}
        disk = metrics.get("disk") or {}
        nodes.append(
            {
                "node_id": node.id,
                "name": node.name,
                "site": node.site,
                "status": node.status,
                "free_bytes": disk.get("free_bytes") if isinstance(disk, dict) else None,
                "recording_bytes_per_s": _number(metrics.get("recording_bytes_per_s")),
                "hours_left": _number(metrics.get("disk_hours_left")),
                "reported_at": metrics.get("ts"),
            }
        )
    nodes.sort(key=lambda n: (n["hours_left"] is None, n["hours_left"] or 0.0, n["name"], n["node_id"]))
    known = [n["hours_left"] for n in nodes if n["hours_left"] is not None]
    return {
        "recording": len(known),
        "under_warning": sum(1 for h in known if h < HOURS_LEFT_WARNING),
        "under_critical": sum(1 for h in known if h < HOURS_LEFT_CRITICAL),
        "warning_hours": HOURS_LEFT_WARNING,
        "critical_hours": HOURS_LEFT_CRITICAL,
        "lowest_hours_left": min(known) if known else None,
        "nodes": nodes[:LISTED_NODES],
    }


def fleet_figures(scope: SiteScope) -> dict[str, Any]:
    """Everything the status needs from the database, in one worker call."""
    now = utcnow()
    return {
        "nodes": nodes_by_status(scope),
        "health_events": open_health_events(scope),
        "recordings": recent_recordings(scope, now - RECENT),
        "upload_backlog": upload_backlog(scope),
        "node_storage": node_storage(scope),
        "recording_rate": recording_rate(),
    }
