"""Which enabled schedules would make a node record two overlapping takes with this one in the next 31 days.

The other schedules' targets are matched in memory against this schedule's nodes (a node list by id,
a selector by the node's site and tags), so only the schedules sharing a node are expanded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import Node, Schedule, Site
from hark_fleet.hub.errors import Conflict
from hark_fleet.hub.services.schedule_occurrences import aware, spec_or_none
from hark_fleet.hub.services.schedule_times import ScheduleSpec, overlaps

HORIZON = timedelta(days=31)
MAX_CLASHES = 5


def shared_nodes(target: dict[str, Any], nodes: Sequence[Node]) -> list[str]:
    """The ids among `nodes` that `target` (another schedule's) names now."""
    if "node_ids" in target:
        wanted = set(target.get("node_ids") or [])
        return [n.id for n in nodes if n.id in wanted]
    selector = target.get("selector") or {}
    site, tags = selector.get("site"), set(selector.get("tags") or [])
    return [n.id for n in nodes if (site is None or n.site == site) and tags <= set(n.tags or [])]


def find_conflicts(schedule_id: str | None, spec: ScheduleSpec, nodes: Sequence[Node], now: datetime) -> list[dict[str, Any]]:
    """Each other enabled schedule sharing a node whose takes overlap this one's, with the first clashes."""
    if not nodes:
        return []
    start = aware(now)
    end = start + HORIZON
    sites: dict[str, Site] = {}
    found = []
    query = Schedule.select().where(Schedule.enabled == True)  # noqa: E712 (SQL)
    if schedule_id is not None:
        query = query.where(Schedule.id != schedule_id)
    for other in query.order_by(Schedule.name, Schedule.id):
        node_ids = shared_nodes(other.target or {}, nodes)
        if not node_ids:
            continue
        if other.site and other.site not in sites:
            site = Site.get_or_none(Site.id == other.site)
            if site is not None:
                sites[other.site] = site
        other_spec = spec_or_none(other, sites.get(other.site or ""))
        if other_spec is None:
            continue
        try:
            pairs = overlaps(spec, other_spec, start, end, MAX_CLASHES)
        except ValueError:
            continue  # a stored schedule the engine refuses records nothing
        if pairs:
            found.append(
                {
                    "schedule_id": other.id,
                    "name": other.name,
                    "node_ids": node_ids,
                    "clashes": [
                        {
                            "this": {"start_utc": iso(a.start_utc), "end_utc": iso(a.end_utc)},
                            "other": {"start_utc": iso(b.start_utc), "end_utc": iso(b.end_utc)},
                        }
                        for a, b in pairs
                    ],
                }
            )
    return found


def refuse(conflicts: list[dict[str, Any]]) -> None:
    """409 `schedule_conflict` naming the clashing schedules."""
    names = ", ".join(f"{c['name']} ({c['schedule_id']})" for c in conflicts[:5])
    more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
    raise Conflict(
        f"The schedule would record overlapping takes on a node with {names}{more} in the next 31 days; "
        'change the times or send on_conflict "skip" (do not record the clashing take) or "allow" (record both).',
        code="schedule_conflict",
        conflicts=conflicts,
    )
