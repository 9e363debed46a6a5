"""The hub instances of the deployment and the singleton leases, as the API shows them (issue 24).

Instances come from `hub_instance` (each live instance renews its row every few seconds, see
hub/cluster/leases.py); a row is `live` when seen within LIVE_S, `stopped` once it stopped cleanly, and `lost`
otherwise (killed, or cut off from the database). Times are judged by the database's clock. On SQLite there is
one hub and no rows: the list is this instance, holding every lease.

There are a handful of instances (rows of stopped ones are dropped after a week), so the list is built in memory:
filters `state`, `host`, `version`, text `q` over id, host and url; newest start first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.cluster.leases import LIVE_S, NAMES
from hark_fleet.hub.db.models import HubInstance, HubLease, database_proxy
from hark_fleet.hub.errors import InvalidRequest, NotFound
from hark_fleet.hub.services.listing import RESERVED_PARAMS, encode_cursor, parse_paging, parse_search

STATES = ("live", "stopped", "lost")
FILTERS = ("state", "host", "version")
EXPORT_COLUMNS = ("id", "host", "pid", "url", "version", "started_at", "seen_at", "stopped_at", "state", "leases")


@dataclass(frozen=True)
class OwnInstance:
    """This process, as the list shows it on SQLite (where no rows are written)."""

    id: str
    host: str
    pid: int
    url: str
    version: str
    started_at: datetime


@dataclass(frozen=True)
class InstanceQuery:
    filters: Mapping[str, tuple[str, ...]]
    q: str | None
    limit: int
    after: str | None
    ids: tuple[str, ...] | None = None


def parse_request(args: Mapping[str, Sequence[str]], ids: Sequence[str] | None = None) -> InstanceQuery:
    """Validate the list's query parameters; every problem in one 400."""
    args = {name: values for name, values in args.items() if values}
    problems: dict[str, str] = {}
    filters: dict[str, tuple[str, ...]] = {}
    for name, values in args.items():
        if name in RESERVED_PARAMS:
            if name in ("from", "to"):
                problems[name] = "this list has no time range"
            continue
        if name not in FILTERS:
            problems[name] = "unknown filter"
            continue
        if name == "state" and any(v not in STATES for v in values):
            problems[name] = f"must be one of {', '.join(STATES)}"
            continue
        filters[name] = tuple(values)
    limit, after = parse_paging(args, problems)
    q = parse_search(args, problems)
    if problems:
        raise InvalidRequest("Some query parameters are invalid.", fields=problems)
    return InstanceQuery(filters, q, limit, after, tuple(ids) if ids is not None else None)


def _db_now() -> datetime:
    """Now by the database's clock (PostgreSQL), the clock leases and instances are judged by."""
    db = database_proxy.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        row = db.execute_sql("SELECT now() AT TIME ZONE 'UTC'").fetchone()
        return row[0]
    return utcnow()


def _leases(own: OwnInstance | None, now: datetime) -> list[dict[str, Any]]:
    if own is not None:  # SQLite: this hub holds every lease
        return [
            {"name": name, "holder": own.id, "fence": 0, "acquired_at": iso(own.started_at), "expires_at": None, "held": True}
            for name in NAMES
        ]
    rows = {row.name: row for row in HubLease.select()}
    out = []
    for name in [*NAMES, *sorted(set(rows) - set(NAMES))]:
        row = rows.get(name)
        held = row is not None and row.holder is not None and row.expires_at is not None and row.expires_at > now
        out.append(
            {
                "name": name,
                "holder": row.holder if row is not None else None,
                "fence": row.fence if row is not None else 0,
                "acquired_at": iso(row.acquired_at) if row is not None else None,
                "expires_at": iso(row.expires_at) if row is not None else None,
                "held": held,
            }
        )
    return out


def lease_list(own: OwnInstance | None) -> list[dict[str, Any]]:
    """Every singleton lease: name, holder, fence, acquired_at, expires_at and whether it is held now."""
    return _leases(own, _db_now())


def _instances(own: OwnInstance | None) -> list[dict[str, Any]]:
    now = _db_now()
    leases = _leases(own, now)
    held: dict[str, list[str]] = {}
    for lease in leases:
        if lease["held"] and lease["holder"]:
            held.setdefault(lease["holder"], []).append(lease["name"])
    if own is not None:
        rows: list[Any] = [
            HubInstance(
                id=own.id, host=own.host, pid=own.pid, url=own.url, version=own.version, started_at=own.started_at, seen_at=now
            )
        ]
    else:
        rows = list(HubInstance.select())
    live_after = now - timedelta(seconds=LIVE_S)
    items = []
    for row in rows:
        if row.stopped_at is not None:
            state = "stopped"
        elif row.seen_at is not None and row.seen_at > live_after:
            state = "live"
        else:
            state = "lost"
        items.append(
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "url": row.url,
                "version": row.version,
                "started_at": iso(row.started_at),
                "seen_at": iso(row.seen_at),
                "stopped_at": iso(row.stopped_at),
                "state": state,
                "leases": held.get(row.id, []) if state == "live" else [],
            }
        )
    items.sort(key=lambda item: (item["started_at"] or "", item["id"]), reverse=True)
    return items


def _matching(own: OwnInstance | None, request: InstanceQuery) -> list[dict[str, Any]]:
    items = _instances(own)
    for name, values in request.filters.items():
        items = [item for item in items if str(item[name]) in values]
    if request.q:
        needle = request.q.lower()
        items = [item for item in items if any(needle in str(item[k]).lower() for k in ("id", "host", "url"))]
    if request.ids is not None:
        wanted = set(request.ids)
        items = [item for item in items if item["id"] in wanted]
    return items


def _after(items: list[dict[str, Any]], after: str | None) -> list[dict[str, Any]]:
    if after is None:
        return items
    ids = [item["id"] for item in items]
    return items[ids.index(after) + 1 :] if after in ids else []


def instance_page(own: OwnInstance | None, request: InstanceQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the list and the cursor of the next (None at the end)."""
    items = _after(_matching(own, request), request.after)
    page = items[: request.limit]
    return page, encode_cursor(page[-1]["id"]) if len(items) > request.limit else None


def facet_counts(own: OwnInstance | None, request: InstanceQuery, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Value counts of `names` (state, host, version) over the matching instances."""
    unknown = [name for name in names if name not in FILTERS]
    if unknown:
        raise InvalidRequest("Some facets are unknown.", fields={"fields": f"unknown: {', '.join(unknown)}"})
    items = _matching(own, request)
    out = {}
    for name in names or FILTERS:
        counts = Counter(str(item[name]) for item in items)
        out[name] = [{"value": value, "count": count} for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return out


def export_batches(own: OwnInstance | None, request: InstanceQuery) -> Callable[[Any], tuple[list[dict[str, Any]], Any]]:
    """Every matching instance in one batch (there are a handful); leases joined by spaces for CSV."""

    def next_batch(after: Any) -> tuple[list[dict[str, Any]], Any]:
        rows = [{**item, "leases": " ".join(item["leases"])} for item in _matching(own, request)]
        return rows, None

    return next_batch


def instance_detail(own: OwnInstance | None, instance_id: str) -> dict[str, Any]:
    """One instance, 404 when unknown."""
    for item in _instances(own):
        if item["id"] == instance_id:
            return item
    raise NotFound(f"No hub instance {instance_id}.")
