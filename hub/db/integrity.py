"""Whether the hub may open its SQLite database: not one missing, empty or damaged beside an earlier hub's state.

SQLite turns a missing or zero-byte file into a new, empty database without a word: the hub
would then create a new admin and forget every node and credential while the CA and the
recordings are still on disk. So before the hub opens the file it is checked (`PRAGMA
quick_check`), and a missing or empty one is accepted only in a data directory that shows no
sign of an earlier hub. `database.json` in the data dir records which database the hub used,
so even a hub with nothing else on disk is recognised.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from hark_fleet.hub import const
from hark_fleet.hub.errors import DatabaseUnusable, StartupError
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.provision.ca import CA_DIR, INDEX
from playhouse.db_url import parse as parse_db_url

log = logging.getLogger(__name__)

MARKER = "database.json"
CORRUPTION = ("SQLITE_NOTADB", "SQLITE_CORRUPT")  # damage; other errors (I/O, a full disk, locks) are not
RESTORE_OR_RESET = (
    "restore a backup with `hark-hub restore <file>`, or move the database aside and start fresh "
    "(users, nodes and node credentials are not recovered) with `hark-hub db reset --move-aside`"
)


def sqlite_path(database_url: str | None, data_dir: Path) -> Path | None:
    """The hub's SQLite file for this configuration, or None on PostgreSQL."""
    if not database_url:
        return data_dir / const.SQLITE_FILE
    if database_url.split(":", 1)[0] == "sqlite":
        return Path(parse_db_url(database_url)["database"])
    return None


def sqlite_problem(path: Path) -> str | None:
    """Why the existing, non-empty SQLite file `path` cannot be trusted, or None when its quick check passes."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=10)
        try:
            rows = connection.execute("PRAGMA quick_check").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        if str(getattr(err, "sqlite_errorname", "")).startswith(CORRUPTION) or "malformed" in str(err):
            return f"damaged ({err})"
        raise StartupError(f"cannot open the database {path}: {err}{_space_hint(path)}") from err
    if rows != [("ok",)]:
        return "damaged (integrity check: " + "; ".join(str(r[0]) for r in rows[:3]) + ")"
    return None


def _space_hint(path: Path) -> str:
    """A word on the disk when it is full (SQLite cannot make its -shm and -wal files: "disk I/O error")."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return ""
    free = stats.f_bavail * stats.f_frsize
    return f" (its disk is full: {free // 1024} KiB free; free some space and start again)" if free < 1024 * 1024 else ""


def earlier_state(data_dir: Path) -> list[str]:
    """What in `data_dir` shows that a hub ran there with a database, in words."""
    found: list[str] = []
    marker = read_marker(data_dir)
    if marker:
        found.append(f"{MARKER} recording that the hub used {marker.get('sqlite', 'a database')}")
    if (data_dir / const.ADMIN_PASSWORD_FILE).exists():
        found.append("the admin password file")
    recordings = _count_files(data_dir / "recordings")
    if recordings:
        found.append(f"{recordings} recording file(s)")
    uploads = _count_files(data_dir / "uploads")
    if uploads:
        found.append(f"{uploads} partial upload(s)")
    nodes = _node_certificates(data_dir)
    if nodes:
        found.append(f"a CA that issued {nodes} node certificate(s)")
    return found


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0


def _node_certificates(data_dir: Path) -> int:
    try:
        issued = json.loads((data_dir / CA_DIR / INDEX).read_text(encoding="utf-8"))
        return sum(1 for item in issued if item.get("kind") == "client")
    except (OSError, ValueError, AttributeError):
        return 0


def check_database(database_url: str | None, data_dir: Path) -> None:
    """Raise DatabaseUnusable when the hub must not open its SQLite database; PostgreSQL is not checked here."""
    path = sqlite_path(database_url, data_dir)
    if path is None:
        return
    wal = path.with_name(path.name + "-wal")
    if path.exists() and path.stat().st_size > 0:
        problem = sqlite_problem(path)
        if problem is None:
            return
        raise DatabaseUnusable(f"the database {path} is {problem}: {RESTORE_OR_RESET}")
    found = earlier_state(data_dir)
    if wal.exists() and wal.stat().st_size > 0:
        found.append(f"its write-ahead log {wal.name}")
    if not found:
        return  # a first start
    state = "empty (0 bytes)" if path.exists() else "missing"
    raise DatabaseUnusable(
        f"the database {path} is {state}, but {data_dir} holds an earlier hub's state ({', '.join(found)}); "
        f"starting would make an empty database (a new admin, no nodes, every node credential lost): {RESTORE_OR_RESET}"
    )


def read_marker(data_dir: Path) -> dict[str, str] | None:
    try:
        marker = json.loads((data_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def record_database(database_url: str | None, data_dir: Path) -> None:
    """Note in `data_dir` that the hub runs on this SQLite database (so its loss is noticed later)."""
    path = sqlite_path(database_url, data_dir)
    if path is None:
        return
    marker = read_marker(data_dir)
    if marker is not None and marker.get("sqlite") == str(path.resolve()):
        return
    body = {"sqlite": str(path.resolve()), "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    try:
        write_atomic(data_dir / MARKER, json.dumps(body) + "\n")
    except OSError as err:  # a full disk: written on a later start; the other signs of state still count
        log.warning("cannot write %s: %s", data_dir / MARKER, err.strerror or err)
