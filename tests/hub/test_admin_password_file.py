"""The generated admin password file: written whole, readable only by the hub's user."""

from __future__ import annotations

import stat
from pathlib import Path

from hark_fleet.hub.const import ADMIN_PASSWORD_FILE

from tests.file_events import DirectoryWatch
from tests.harness import HubProcess


def test_the_generated_admin_password_file_arrives_whole_and_private(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, env_extra={"HARK_ADMIN_PASSWORD": None})
    hub.data_dir.mkdir(parents=True)
    watch = DirectoryWatch(hub.data_dir)
    try:
        hub.start()
        assert hub.stop() == 0, hub.log()
        assert watch.written_in_place({ADMIN_PASSWORD_FILE}) == []
    finally:
        watch.close()
        hub.stop()
    path = hub.data_dir / ADMIN_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 10 and password in hub.log()
