"""A stored schedule as the occurrence engine's `ScheduleSpec`, and which nodes it records on.

Shared by the schedules API (validation, conflicts, previews) and the dispatcher. Targets are a
node list, or a selector (site and/or tags) resolved when it is asked, so a box added to the site
later is included from its next dispatch on.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from hark_fleet.hub.db.models import Node, Schedule, Site
from hark_fleet.hub.services.schedule_times import ScheduleSpec, SolarAnchor

LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_local(text: str) -> datetime:
    """A local wall time "YYYY-MM-DDTHH:MM[:SS]" without an offset; ValueError otherwise."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("a local wall time has no offset")
    return value.replace(microsecond=0)


def format_local(value: datetime) -> str:
    return value.strftime(LOCAL_FORMAT)


def solar_anchor(solar: dict[str, Any] | None, site: Site | None) -> SolarAnchor | None:
    """The schedule's solar anchor with coordinates: its own if it names them, else its site's."""
    if not solar:
        return None
    latitude = solar.get("latitude")
    longitude = solar.get("longitude")
    elevation = solar.get("elevation_m")
    if latitude is None and longitude is None and site is not None:
        latitude, longitude, elevation = site.latitude, site.longitude, site.elevation_m
    return SolarAnchor(
        event=str(solar.get("event")),
        offset_minutes=int(solar.get("offset_minutes") or 0),
        latitude=latitude,
        longitude=longitude,
        elevation_m=float(elevation or 0.0),
    )


def spec_of(schedule: Schedule, site: Site | None = None) -> ScheduleSpec:
    """The occurrence engine's view of a stored schedule (`site`: its site row, looked up when not given)."""
    if site is None and schedule.site:
        site = Site.get_or_none(Site.id == schedule.site)
    return ScheduleSpec(
        time_zone=schedule.time_zone,
        start_local=parse_local(schedule.start_local),
        duration_s=int(schedule.duration_s),
        rrule=schedule.rrule or None,
        exdates=tuple(parse_local(x) for x in (schedule.exdates or [])),
        valid_from=_utc(schedule.valid_from),
        valid_until=_utc(schedule.valid_until),
        solar=solar_anchor(schedule.solar, site),
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def target_node_ids(target: dict[str, Any]) -> list[str]:
    """The ids of the existing nodes a target names now, in id order (a node list keeps only nodes that exist)."""
    if "node_ids" in target:
        wanted = [str(x) for x in target.get("node_ids") or []]
        if not wanted:
            return []
        return [n.id for n in Node.select(Node.id).where(Node.id.in_(wanted)).order_by(Node.id)]
    selector = target.get("selector") or {}
    query = Node.select(Node.id, Node.tags)
    if selector.get("site"):
        query = query.where(Node.site == selector["site"])
    tags = set(selector.get("tags") or [])
    return [n.id for n in query.order_by(Node.id) if tags <= set(n.tags or [])]


def sites_of(node_ids: Iterable[str]) -> set[str | None]:
    """The sites the given nodes stand in (None for a node without a site)."""
    ids = list(node_ids)
    if not ids:
        return set()
    return {n.site for n in Node.select(Node.site).where(Node.id.in_(ids))}
