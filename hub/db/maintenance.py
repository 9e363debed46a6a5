"""`hark-hub backup|restore|db reset`: one line out, and the exit code (0 done, 1 refused or failed, 2 not applicable)."""

from __future__ import annotations

import sys
from pathlib import Path

from hark_fleet.hub.config import HubConfig
from hark_fleet.hub.data_dir_lock import DataDirLock
from hark_fleet.hub.db.backup import BackupError, backup_sqlite, postgres_guidance, reset_sqlite, restore_sqlite
from hark_fleet.hub.db.integrity import record_database, sqlite_path


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"hark-hub {command}: {message}", file=sys.stderr)
    return code


def backup(config: HubConfig, file: Path) -> int:
    """Copy the live database to `file` (safe while the hub runs)."""
    database = sqlite_path(config.database_url, config.data_dir)
    if database is None:
        return _fail("backup", postgres_guidance(config.database_url or "", "backup", str(file)), 2)
    try:
        size = backup_sqlite(database, file)
    except BackupError as err:
        return _fail("backup", str(err))
    print(f"backed up {database} to {file} ({size} bytes); keep {config.data_dir / 'ca'} and the recordings with it")
    return 0


def _alone(config: HubConfig) -> DataDirLock | None:
    """The data directory's lock taken exclusively, or None when a hub runs on it."""
    lock = DataDirLock(config.data_dir)
    return lock if lock.take(exclusive=True) else None


def restore(config: HubConfig, file: Path) -> int:
    """Put a backup in place of the database (the hub stopped)."""
    database = sqlite_path(config.database_url, config.data_dir)
    if database is None:
        return _fail("restore", postgres_guidance(config.database_url or "", "restore", str(file)), 2)
    lock = _alone(config)
    if lock is None:
        return _fail("restore", f"a hub is running on {config.data_dir}: stop it first (e.g. systemctl stop hark-hub)")
    try:
        aside = restore_sqlite(file, database)
        record_database(config.database_url, config.data_dir)
    except BackupError as err:
        return _fail("restore", str(err))
    finally:
        lock.release()
    kept = f"; the previous database is kept as {aside}" if aside else ""
    print(f"restored {file} into {database}{kept}; start the hub")
    return 0


def reset(config: HubConfig, move_aside: bool) -> int:
    """Move a damaged database aside and make a fresh, empty one (the hub stopped)."""
    if not move_aside:
        return _fail("db reset", "this moves the database aside and starts an empty one: say so with --move-aside", 2)
    database = sqlite_path(config.database_url, config.data_dir)
    if database is None:
        return _fail("db reset", "the database is PostgreSQL: drop and create it with its own tools (dropdb, createdb)", 2)
    lock = _alone(config)
    if lock is None:
        return _fail("db reset", f"a hub is running on {config.data_dir}: stop it first (e.g. systemctl stop hark-hub)")
    try:
        aside = reset_sqlite(database, config.data_dir)
        record_database(config.database_url, config.data_dir)
    except BackupError as err:
        return _fail("db reset", str(err))
    finally:
        lock.release()
    kept = f"the old database is kept as {aside}; " if aside else ""
    print(
        f"{kept}a fresh database is at {database}. Start the hub: it creates the admin user again. "
        "Users, API keys and nodes were in the old database: enroll the nodes again (hark-provision reset, then claim)."
    )
    return 0
