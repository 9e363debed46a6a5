"""The one atomic file writer: readers see the old file or the new one, modes from the start, nothing left on failure."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.protocol.atomic_file import remove_stale_temps, write_atomic

from tests.file_events import DirectoryWatch
from tests.harness import tmpfs


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (needs root), unmounted at the end."""
    with tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


def test_the_file_arrives_whole_by_a_rename_with_its_mode(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path)
    try:
        write_atomic(tmp_path / "secret.key", b"key\n", mode=0o600)
        write_atomic(tmp_path / "ca.pem", "cert\n")
        write_atomic(tmp_path / "ca.pem", "cert 2\n")
        assert watch.written_in_place({"secret.key", "ca.pem"}) == []
    finally:
        watch.close()
    assert (tmp_path / "ca.pem").read_text() == "cert 2\n"
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "secret.key"]


def test_a_secret_is_never_readable_by_others_even_while_written(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "secret.key", b"x" * 100_000, mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tiny_disk: Path) -> None:
    path = tiny_disk / "state.json"
    write_atomic(path, b"old")
    with pytest.raises(OSError) as raised:
        write_atomic(path, b"n" * 2 * 1024 * 1024)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["state.json"]


def test_stale_temp_files_of_a_crash_are_removed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"{}")
    (tmp_path / ".state.json.abc123.tmp").write_bytes(b"{")
    (tmp_path / ".other.json.abc123.tmp").write_bytes(b"{")
    remove_stale_temps(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "state.json"]
