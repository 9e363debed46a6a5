"""The shared event log (issue 24, PostgreSQL): fleet events of every hub instance, numbered in commit order.

Each batch is written in one transaction holding `pg_advisory_xact_lock(LOCK_KEY)`, so a batch takes its ids
only after the one before it committed: ids commit in increasing order and a reader that has every id up to
`n` misses nothing below a later `n'` it reads. The transaction ends with a NOTIFY on `hark_events` carrying
the id the log ended at before the batch (`prev`) and the batch itself when it fits in a NOTIFY (else only its
last id): an instance that has delivered up to `prev` delivers the batch as it is, any other reads the log.

These functions run on a database worker (`hub.db.run`), with `db` the peewee database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from hark_fleet.hub.cluster.pg_notify import PAYLOAD_MAX, notify_sql

CHANNEL = "hark_events"
LOCK_KEY = 0x6861726B_65767473  # "harkevts": the advisory lock every instance's event writes take
KEEP_AGE = timedelta(days=1)  # rows older than this are pruned (the newest row is always kept)
KEEP_ROWS = 100_000  # and rows more than this many ids behind the newest

Row = tuple[int, str, str | None, dict[str, Any]]  # id, type, site, data


def encode_data(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


def notice(prev: int, ids: Sequence[int], events: Sequence[tuple[str, str | None, str]]) -> str:
    """The NOTIFY payload of a batch: the batch itself when it fits, else where it ends."""
    body = ",".join(
        f"[{id},{json.dumps(type)},{json.dumps(site)},{data}]" for id, (type, site, data) in zip(ids, events, strict=True)
    )
    text = f'{{"prev":{prev},"events":[{body}]}}'
    if len(text.encode()) <= PAYLOAD_MAX:
        return text
    return json.dumps({"prev": prev, "last": ids[-1]})


def read_notice(text: str) -> tuple[int, list[Row] | None, int]:
    """A NOTIFY payload's `prev`, its rows (None: too big to carry them) and the last id of its batch."""
    message = json.loads(text)
    prev = int(message["prev"])
    if "events" not in message:
        return prev, None, int(message["last"])
    rows: list[Row] = [(int(id), str(type), site, data) for id, type, site, data in message["events"]]
    return prev, rows, rows[-1][0] if rows else prev


def write_batch(db: Any, events: Sequence[tuple[str, str | None, str]], now: datetime) -> tuple[int, list[int]]:
    """Append `events` (type, site, data JSON) in one transaction and announce them; (prev, their ids)."""
    with db.atomic():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        prev = db.execute_sql("SELECT coalesce(max(id), 0) FROM event_log").fetchone()[0]
        values = ",".join(["(%s, %s, %s, %s)"] * len(events))
        params: list[Any] = []
        for type, site, data in events:
            params += [type, site, data, now]
        cursor = db.execute_sql(f"INSERT INTO event_log (type, site, data, created_at) VALUES {values} RETURNING id", params)
        ids = sorted(int(row[0]) for row in cursor.fetchall())  # one sequence under the lock: in the order of VALUES
        notify_sql(db, CHANNEL, notice(prev, ids, events))
    return int(prev), ids


def last_id(db: Any) -> int:
    return int(db.execute_sql("SELECT coalesce(max(id), 0) FROM event_log").fetchone()[0])


def read_after(db: Any, after: int, limit: int) -> list[Row]:
    """Up to `limit` rows after id `after`, oldest first."""
    cursor = db.execute_sql("SELECT id, type, site, data FROM event_log WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
    return [(int(id), type, site, json.loads(data)) for id, type, site, data in cursor.fetchall()]


def read_backlog(db: Any, after: int, upto: int, types: Iterable[str] | None, limit: int) -> tuple[list[Row], bool]:
    """The newest `limit` rows in (after, upto] of `types`, oldest first, and whether the log still holds every
    event after `after` (False: some were pruned, or there were more than `limit`)."""
    where = "id > %s AND id <= %s"
    params: list[Any] = [after, upto]
    if types is not None:
        wanted = sorted(types)
        where += f" AND type IN ({','.join(['%s'] * len(wanted))})"
        params += wanted
    cursor = db.execute_sql(
        f"SELECT id, type, site, data FROM event_log WHERE {where} ORDER BY id DESC LIMIT %s", [*params, limit + 1]
    )
    rows: list[Row] = [(int(id), type, site, json.loads(data)) for id, type, site, data in cursor.fetchall()]
    oldest = db.execute_sql("SELECT min(id) FROM event_log").fetchone()[0]
    complete = len(rows) <= limit and oldest is not None and oldest <= after + 1
    return list(reversed(rows[:limit])), complete


def prune(db: Any, now: datetime) -> int:
    """Drop rows older than KEEP_AGE or more than KEEP_ROWS behind the newest (never the newest); how many.

    Any instance may run it, at any time: a DELETE of rows another instance deletes too costs nothing.
    """
    cursor = db.execute_sql(
        "DELETE FROM event_log WHERE id < (SELECT max(id) FROM event_log) AND (created_at < %s OR "
        "id <= (SELECT max(id) FROM event_log) - %s)",
        (now - KEEP_AGE, KEEP_ROWS),
    )
    return int(cursor.rowcount or 0)
