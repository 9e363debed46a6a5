"""Back up, restore and reset the hub's SQLite database (the CLI refuses restore and reset while a hub runs).

A backup is taken with SQLite's online backup API: a consistent copy even while the hub
writes, checked and renamed into place whole. A restore checks the file is a hark database,
keeps the current database beside it (`<file>.before-restore-<time>`) and puts the copy in
place; a reset keeps the damaged file beside it (`<file>.damaged-<time>`) and makes a fresh,
empty database. PostgreSQL has its own tools: `postgres_guidance` says which.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import peewee
from hark_fleet.hub.db.database import migrate, open_database
from hark_fleet.hub.errors import HubError
from hark_fleet.protocol.atomic_file import fsync_directory

SIDE_FILES = ("", "-wal", "-shm")


class BackupError(HubError):
    """A backup, restore or reset could not be done; the message says why."""


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _connect(path: Path) -> sqlite3.Connection:
    """An existing SQLite file, never created by accident."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_sqlite(database: Path, target: Path) -> int:
    """Copy the live `database` to `target` (one self-contained file); return its size in bytes."""
    if not database.is_file() or database.stat().st_size == 0:
        raise BackupError(f"there is no database to back up at {database}")
    if not target.parent.is_dir():
        raise BackupError(f"cannot write {target}: {target.parent} is not a directory")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        source = _connect(database)
        copy = sqlite3.connect(temp)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            problem = copy.execute("PRAGMA quick_check").fetchone()
        finally:
            copy.close()
            source.close()
        if problem != ("ok",):
            raise BackupError(f"the copy of {database} does not pass its integrity check ({problem[0]}); it was not kept")
        _fsync(temp)
        os.replace(temp, target)
        fsync_directory(target.parent)
    except sqlite3.Error as err:
        raise BackupError(f"cannot back up {database}: {err}") from err
    except OSError as err:
        raise BackupError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        temp.unlink(missing_ok=True)
    return target.stat().st_size


def _check_backup(path: Path) -> None:
    """Raise BackupError unless `path` is a sound hark hub database."""
    try:
        connection = _connect(path)
        try:
            problem = connection.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        raise BackupError(f"{path} is not an SQLite database ({err})") from err
    if problem != ("ok",):
        raise BackupError(f"{path} does not pass its integrity check ({problem[0]})")
    if not {"schema_migration", "user", "node"} <= tables:
        raise BackupError(f"{path} is not a hark hub database (it has no schema_migration, user and node tables)")


def move_aside(database: Path, label: str) -> Path | None:
    """Rename the database and its -wal/-shm to `<name>.<label>-<time>...`; the new name of the main file, if any."""
    aside = database.with_name(f"{database.name}.{label}-{_stamp()}")
    kept = None
    for suffix in SIDE_FILES:
        current = database.with_name(database.name + suffix)
        if current.exists():
            os.replace(current, aside.with_name(aside.name + suffix))
            kept = aside if suffix == "" else kept
    fsync_directory(database.parent)
    return kept


def restore_sqlite(backup: Path, database: Path) -> Path | None:
    """Put a copy of `backup` in place of `database`; return where the previous database was kept, if there was one."""
    if not backup.is_file():
        raise BackupError(f"there is no file {backup}")
    database.parent.mkdir(parents=True, exist_ok=True)
    temp = database.with_name(f".{database.name}.restore-{os.getpid()}.tmp")
    try:
        shutil.copyfile(backup, temp)
        _check_backup(temp)
        _fsync(temp)
        aside = move_aside(database, "before-restore")
        os.replace(temp, database)
        fsync_directory(database.parent)
    except OSError as err:
        raise BackupError(f"cannot restore {backup} into {database}: {err.strerror or err}") from err
    finally:
        temp.unlink(missing_ok=True)
    return aside


def reset_sqlite(database: Path, data_dir: Path) -> Path | None:
    """Move the database aside and make a fresh, empty one; return where the old one was kept, if there was one."""
    try:
        aside = move_aside(database, "damaged")
        migrate(open_database(f"sqlite:///{database.resolve()}", data_dir))
    except (OSError, peewee.PeeweeException) as err:
        raise BackupError(f"cannot reset {database}: {err}") from err
    return aside


def postgres_guidance(database_url: str, command: str, file: str) -> str:
    """How to back up or restore a PostgreSQL database with its own tools (no password shown)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "hark"
    where = f"--host={parts.hostname or 'localhost'} --port={parts.port or 5432}"
    if parts.username:
        where += f" --username={parts.username}"
    user = f"{parts.username}@" if parts.username else ""
    described = f"postgresql://{user}{parts.hostname or 'localhost'}:{parts.port or 5432}/{name}"
    if command == "backup":
        return f"the database is PostgreSQL ({described}): back it up with pg_dump --format=custom --file={file} {where} {name}"
    return (
        f"the database is PostgreSQL ({described}): stop the hub, then restore with "
        f"pg_restore --clean --if-exists --no-owner --dbname={name} {where} {file}"
    )
