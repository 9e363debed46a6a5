"""`hark-provision ca`: init, issue, revoke and list on a data directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hark_fleet.provision.ca import CertificateAuthority
from hark_fleet.provision.cli import main

from tests.file_events import DirectoryWatch


def test_ca_commands_work_on_a_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "hub")
    assert main(["ca", "--data-dir", data, "init"]) == 0
    assert stat.S_IMODE((tmp_path / "hub" / "ca" / "ca.key").stat().st_mode) == 0o600
    assert main(["ca", "--data-dir", data, "issue", "n-7", "--out", str(tmp_path / "out")]) == 0
    assert stat.S_IMODE((tmp_path / "out" / "n-7.key").stat().st_mode) == 0o600
    assert main(["ca", "--data-dir", data, "revoke", "n-7"]) == 0
    assert main(["ca", "--data-dir", data, "list"]) == 0
    [record] = CertificateAuthority.open(tmp_path / "hub", create=False).issued()
    assert record.subject == "n-7" and record.revoked_at


def test_ca_commands_without_a_ca_say_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "--data-dir", str(tmp_path), "list"]) == 1
    assert "hark-provision ca init" in capsys.readouterr().err


def test_issued_files_arrive_whole_by_a_rename(tmp_path: Path) -> None:
    data, out = tmp_path / "hub", tmp_path / "out"
    assert main(["ca", "--data-dir", str(data), "init"]) == 0
    out.mkdir()
    watch = DirectoryWatch(out)
    try:
        assert main(["ca", "--data-dir", str(data), "issue", "n-8", "--out", str(out)]) == 0
        assert watch.written_in_place({"n-8.pem", "n-8.key"}) == []
    finally:
        watch.close()
    assert sorted(p.name for p in out.iterdir()) == ["n-8.key", "n-8.pem"]
    assert stat.S_IMODE((out / "n-8.key").stat().st_mode) == 0o600
