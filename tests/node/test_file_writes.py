"""Every file the node keeps arrives whole by a rename (a crash or a reader never sees it half written), secrets 0600."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hark_fleet.node.conditions import ConditionWatch
from hark_fleet.node.diagnostics import save_bundle
from hark_fleet.node.lifecycle import LifecycleLedger
from hark_fleet.node.local.provision import Provisioning
from hark_fleet.node.local.technician import TechnicianAccess
from hark_fleet.node.recorder.files import write_json_atomic
from hark_fleet.node.state import NodeState, StateStore, save_state

from tests.file_events import DirectoryWatch


async def _nothing() -> None:
    return None


def _conditions(directory: Path) -> str:
    watch = ConditionWatch(directory / "conditions.json")
    watch.reported = {"disk.full": "critical"}
    watch._save()
    return "conditions.json"


def _ledger(directory: Path) -> str:
    LifecycleLedger(directory / "lifecycle.json").set("job-1", "running")
    return "lifecycle.json"


def _bundle(directory: Path) -> str:
    save_bundle(directory, "job-1", {"agent": {"version": "1"}})
    return "job-1.json"


def _technician(directory: Path) -> str:
    store = StateStore(directory / "state.json", NodeState())
    TechnicianAccess(directory / "technician.json", Provisioning(store, _nothing)).update("pin-hash", None)
    return "technician.json"


def _state(directory: Path) -> str:
    save_state(directory / "state.json", NodeState("n1", "secret"))
    return "state.json"


def _recording_json(directory: Path) -> str:
    write_json_atomic(directory / "manifest.json", {"state": "recording"})
    return "manifest.json"


SECRET = {"technician.json", "state.json", "job-1.json"}


@pytest.mark.parametrize("write", [_conditions, _ledger, _bundle, _technician, _state, _recording_json])
def test_the_file_arrives_whole_by_a_rename_and_no_temp_file_stays(tmp_path: Path, write: Callable[[Path], str]) -> None:
    watch = DirectoryWatch(tmp_path)
    try:
        name = write(tmp_path)
        assert watch.written_in_place({name}) == [], f"{name} was written in place"
    finally:
        watch.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    if name in SECRET:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
