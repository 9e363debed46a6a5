"""Which errors mean "the disk is full" (one place decides): real ones, from a real full tmpfs."""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.errors import is_storage_full

from tests.harness import tmpfs


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (needs root), unmounted at the end."""
    with tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


def test_a_file_write_on_a_full_disk_is_storage_full(tiny_disk: Path) -> None:
    with pytest.raises(OSError) as raised, (tiny_disk / "big").open("wb") as handle:
        handle.write(b"\0" * 2 * 1024 * 1024)
        handle.flush()
    assert raised.value.errno == errno.ENOSPC and is_storage_full(raised.value)


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_through_peewee_on_a_full_disk_is_storage_full(tiny_disk: Path, journal: str) -> None:
    db = peewee.SqliteDatabase(str(tiny_disk / "db.sqlite3"), pragmas={"journal_mode": journal})
    db.execute_sql("CREATE TABLE t (x BLOB)")
    with pytest.raises(peewee.OperationalError) as raised:
        for _ in range(1000):
            db.execute_sql("INSERT INTO t VALUES (?)", (os.urandom(64 * 1024),))
    db.close()
    full = is_storage_full(raised.value)
    del raised  # its frames hold the failed statement, and with it the file open on the tmpfs
    gc.collect()
    assert full


def test_other_errors_are_not_storage_full(tmp_path: Path) -> None:
    db = peewee.SqliteDatabase(str(tmp_path / "db.sqlite3"))
    db.execute_sql("CREATE TABLE t (x INTEGER UNIQUE)")
    db.execute_sql("INSERT INTO t VALUES (1)")
    with pytest.raises(peewee.IntegrityError) as duplicate:
        db.execute_sql("INSERT INTO t VALUES (1)")
    with pytest.raises(peewee.OperationalError) as no_table:
        db.execute_sql("SELECT * FROM missing")
    db.close()
    with pytest.raises(OSError) as missing:
        (tmp_path / "nowhere" / "file").write_bytes(b"x")
    for err in (duplicate.value, no_table.value, missing.value, ValueError("database or disk is full"), None):
        assert not is_storage_full(err)
