"""The hub's technician token key: made once, arrives whole, readable only by the hub's user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hark_fleet.hub.services.technician import TechnicianSigner

from tests.file_events import DirectoryWatch


def test_the_key_arrives_whole_by_a_rename_and_is_never_readable_by_others(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path)
    old_umask = os.umask(0)  # a permissive umask must not widen the key, not even for a moment
    try:
        signer = TechnicianSigner(tmp_path / "technician.key")
        assert watch.written_in_place() == []
    finally:
        os.umask(old_umask)
        watch.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["technician.key"]
    assert stat.S_IMODE((tmp_path / "technician.key").stat().st_mode) == 0o600
    assert TechnicianSigner(tmp_path / "technician.key").public_pem == signer.public_pem
