"""The CA's files as other processes see them: never empty or half written, even during the hub's first start."""

from __future__ import annotations

import stat
from pathlib import Path

from hark_fleet.provision.ca import CertificateAuthority
from hark_fleet.provision.revocation import revoke

from tests.file_events import DirectoryWatch
from tests.harness import HubProcess

CA_FILES = {"ca.pem", "ca.key", "crl.pem", "issued.json"}
CA_LOCK = "ca.lock"  # the lock file hubs sharing the data directory take to write these (never written)


def test_the_hubs_first_start_writes_every_ca_file_whole_by_a_rename(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, tls=True)
    ca_dir = hub.data_dir / "ca"
    ca_dir.mkdir(parents=True)
    watch = DirectoryWatch(ca_dir)
    try:
        hub.start()
        assert hub.stop() == 0, hub.log()
        arrived = {e.name for e in watch.events() if not e.in_place}
        assert watch.written_in_place(CA_FILES) == [], "a reader could see these empty or half written"
        assert CA_FILES <= arrived
    finally:
        watch.close()
        hub.stop()
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "ca.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((ca_dir / "crl.pem").stat().st_mode) == 0o644
    assert [p.name for p in ca_dir.iterdir() if p.name not in CA_FILES | {CA_LOCK}] == []  # no temp file left


def test_issuing_and_revoking_rewrite_the_index_and_crl_by_a_rename(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    watch = DirectoryWatch(ca.directory)
    try:
        ca.issue("n-1", "client")
        revoke(ca, "n-1")
        assert watch.written_in_place(CA_FILES) == []
        assert {e.name for e in watch.events()} >= {"issued.json", "crl.pem"}
    finally:
        watch.close()
