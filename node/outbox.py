"""The outbox: a SQLite queue of every message that must reach the hub, kept until the hub acks it.

One connection, used from one thread (the sender's executor). Rows are written before they
are sent and removed only when the hub acknowledges their `msg_id`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.node.errors import OutboxError
from hark_fleet.node.outbox_policy import KINDS, plan_admission

log = logging.getLogger(__name__)

# Numbered schema steps; PRAGMA user_version records how many have run.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
        created_at REAL NOT NULL,
        last_sent_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_kind_seq ON outbox (kind, seq);
    CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)
_CHUNK = 500  # ids per IN (...) clause, under SQLite's variable limit
_HIGH_FLAG = "level_high"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    msg_id: str
    topic: str
    payload: bytes
    kind: str
    created_at: float
    last_sent_at: float | None
    attempts: int


_COLUMNS = "seq, msg_id, topic, payload, kind, created_at, last_sent_at, attempts"


def _row(values: Any) -> OutboxRow:
    seq, msg_id, topic, payload, kind, created_at, last_sent_at, attempts = values
    return OutboxRow(seq, msg_id, topic, bytes(payload), kind, created_at, last_sent_at, attempts)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _damaged(err: sqlite3.Error) -> bool:
    """Whether SQLite says the file itself is damaged (not a database, corrupt), not that it cannot reach it."""
    return getattr(err, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def move_aside(path: Path, now: float) -> Path:
    """Rename a damaged database (and its WAL and shared-memory files) out of the way; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    return target


class Outbox:
    """A bounded, durable, ordered queue of outgoing messages.

    A file SQLite finds damaged is moved aside (kept for whoever investigates) and a new
    outbox started in its place, so a bad block never stops the node from recording;
    `damaged_moved_to` tells the agent to report it.
    """

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.damaged_moved_to: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as err:
                if not _damaged(err):
                    raise
                self._db.close()
                self.damaged_moved_to = move_aside(path, time.time())
                log.error("outbox %s is damaged (%s): moved to %s, starting a new one", path, err, self.damaged_moved_to)
                self._open()
        except (sqlite3.Error, OSError) as err:
            raise OutboxError(f"{path}: cannot open the outbox: {err}") from err

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a row written is a row kept, power cut or not
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._counts: Counter[str] = Counter(dict(self._db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind").fetchall()))

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise OutboxError(f"{self.path}: schema version {version} is newer than this agent knows")
        for number in range(version, len(MIGRATIONS)):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- size ----------------------------------------------------------------

    @property
    def depth(self) -> int:
        return sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self._counts.items() if v}

    # -- writing ---------------------------------------------------------------

    def enqueue(self, msg_id: str, topic: str, payload: bytes, kind: str, now: float) -> bool:
        """Store one message (evicting older low-rank rows when full); False when it is refused."""
        if kind not in KINDS:
            raise ValueError(f"unknown outbox kind {kind!r}")
        if self._db.execute("SELECT 1 FROM outbox WHERE msg_id = ?", (msg_id,)).fetchone():
            return True  # already queued: enqueueing is idempotent
        admission = plan_admission(kind, self._counts, self.capacity)
        if not admission.admit:
            log.warning(
                "outbox full (%d rows, capacity %d, none evictable for %s): refused message %s",
                self.depth,
                self.capacity,
                kind,
                msg_id,
            )
            return False
        with self._transaction():
            for evict_kind, count in admission.evict.items():
                self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?)",
                    (evict_kind, count),
                )
            self._db.execute(
                "INSERT INTO outbox (msg_id, topic, payload, kind, created_at) VALUES (?, ?, ?, ?, ?)",
                (msg_id, topic, payload, kind, now),
            )
        for evict_kind, count in admission.evict.items():
            self._counts[evict_kind] -= count
            log.warning("outbox full: dropped the %d oldest %s rows", count, evict_kind)
        if admission.over_capacity:
            log.warning("outbox over capacity (%d rows) with job rows only: kept %s anyway", self.depth + 1, msg_id)
        self._counts[kind] += 1
        return True

    def remove(self, msg_ids: Sequence[str]) -> int:
        """Drop the rows the hub acknowledged; return how many there were."""
        removed: Counter[str] = Counter()
        with self._transaction():
            for chunk in _chunks(list(msg_ids)):
                marks = ", ".join("?" * len(chunk))
                for (kind,) in self._db.execute(f"DELETE FROM outbox WHERE msg_id IN ({marks}) RETURNING kind", chunk):
                    removed[kind] += 1
        self._counts.subtract(removed)
        return sum(removed.values())

    def mark_sent(self, msg_ids: Sequence[str], now: float) -> None:
        with self._transaction():
            for chunk in _chunks(list(msg_ids)):
                marks = ", ".join("?" * len(chunk))
                self._db.execute(
                    f"UPDATE outbox SET last_sent_at = ?, attempts = attempts + 1 WHERE msg_id IN ({marks})",
                    (now, *chunk),
                )

    # -- reading ---------------------------------------------------------------

    def after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Rows with a sequence number above `seq`, oldest first."""
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [_row(values) for values in cursor]

    def rows(self, msg_ids: Sequence[str]) -> list[OutboxRow]:
        """The rows still held for `msg_ids`, oldest first."""
        found: list[OutboxRow] = []
        for chunk in _chunks(list(msg_ids)):
            marks = ", ".join("?" * len(chunk))
            found.extend(_row(v) for v in self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE msg_id IN ({marks})", chunk))
        return sorted(found, key=lambda row: row.seq)

    # -- the high-level flag (survives restarts so every open report is resolved) ---

    def is_high(self) -> bool:
        row = self._db.execute("SELECT value FROM outbox_meta WHERE key = ?", (_HIGH_FLAG,)).fetchone()
        return bool(row and row[0] == "1")

    def set_high(self, high: bool) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO outbox_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_HIGH_FLAG, "1" if high else "0"),
            )

    def close(self) -> None:
        self._db.close()

    # -- plumbing --------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
