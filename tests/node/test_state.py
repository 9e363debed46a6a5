"""The state file: atomic writes, mode 0600, and which credential wins."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from hark_fleet.node.agent import prepare_state
from hark_fleet.node.config import NodeConfig
from hark_fleet.node.errors import StateError
from hark_fleet.node.state import NodeState, StateStore, credential_digest, load_state, resolve_state, save_state

from tests.harness import spawn, terminate


def seeded(credential: str = "seed-1", **changes: object) -> NodeState:
    return NodeState("n1", credential, credential_digest("seed-1"), hub_url="http://hub:8080").replace(**changes)


def test_state_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = seeded(mqtt_url="mqtt://broker:1883", boot_count=3)
    save_state(path, state)
    assert load_state(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "seed-1" not in repr(state)


def test_missing_state_file_is_none(tmp_path: Path) -> None:
    assert load_state(tmp_path / "state.json") is None


def test_a_failed_write_leaves_the_old_state_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    old = seeded()
    save_state(path, old)

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StateError, match="cannot write"):
        save_state(path, seeded(credential="rotated-2"))
    monkeypatch.undo()
    assert load_state(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


WRITER = """
import sys
from pathlib import Path
from hark_fleet.node.state import NodeState, save_state
path = Path(sys.argv[1])
n = 0
while True:
    n += 1
    save_state(path, NodeState("n1", "c" * 5000 + str(n), None, boot_count=n))
    if n == 1:
        Path(sys.argv[2]).touch()
"""


def test_kill_9_mid_write_leaves_a_whole_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    started = tmp_path / "started"
    for _ in range(3):
        started.unlink(missing_ok=True)
        proc = spawn([sys.executable, "-c", WRITER, str(path), str(started)])
        try:
            deadline = time.monotonic() + 10
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            proc.kill()
            proc.wait(5)
        finally:
            terminate(proc)
        state = load_state(path)  # also removes temp files the kill left behind
        assert state is not None
        assert state.credential == "c" * 5000 + str(state.boot_count)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state-")] == []


def test_a_corrupt_state_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"node_id": "n1", "credential": ')
    with pytest.raises(StateError, match="state.json"):
        load_state(path)


def test_store_writes_the_newest_snapshot_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json", seeded())
    first = store.update(mqtt_url="mqtt://a:1883")
    second = store.update(credential="rotated-2")
    store.save(*second)
    store.save(*first)  # late: an older snapshot never overwrites a newer one
    assert load_state(tmp_path / "state.json") == store.state


# -- which credential wins --------------------------------------------------------------


def test_environment_seeds_a_new_state() -> None:
    state = resolve_state(None, "n1", "seed-1", "http://hub:8080")
    assert (state.node_id, state.credential, state.hub_url) == ("n1", "seed-1", "http://hub:8080")
    assert state.credential_seed_sha256 == credential_digest("seed-1")


def test_no_identity_anywhere_starts_unprovisioned() -> None:
    state = resolve_state(None, None, None, "http://hub:8080")
    assert (state.node_id, state.credential, state.enrolled) == (None, None, False)
    assert state.provisioning_state == "unprovisioned"
    assert state.hub_url == "http://hub:8080"


def test_a_node_id_without_a_credential_is_an_error() -> None:
    with pytest.raises(StateError, match="HARK_NODE_CREDENTIAL"):
        resolve_state(None, "n1", None, None)


def test_a_new_identity_from_the_environment_keeps_the_hardware_id_and_claim_code() -> None:
    stored = seeded(hardware_id="hw-1", claim_code="ABCD2345")
    state = resolve_state(stored, "n2", "seed-n2", None)
    assert (state.node_id, state.hardware_id, state.claim_code) == ("n2", "hw-1", "ABCD2345")


def test_a_rotated_credential_wins_over_the_seed_that_preceded_it() -> None:
    stored = seeded(credential="rotated-2", mqtt_url="mqtt://broker:1883")
    state = resolve_state(stored, "n1", "seed-1", None)
    assert state.credential == "rotated-2"
    assert state.mqtt_url == "mqtt://broker:1883"


def test_without_environment_the_state_file_is_used() -> None:
    stored = seeded(credential="rotated-2")
    assert resolve_state(stored, None, None, None) == stored


def test_a_new_seed_from_the_environment_wins() -> None:
    stored = seeded(credential="rotated-2")
    state = resolve_state(stored, "n1", "reprovisioned-3", None)
    assert state.credential == "reprovisioned-3"
    assert state.credential_seed_sha256 == credential_digest("reprovisioned-3")
    # and on the next start with the same environment, nothing changes
    assert resolve_state(state, "n1", "reprovisioned-3", None) == state


def test_a_credential_waiting_for_confirmation_keeps_the_previous_one_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    stored = seeded(credential="rotated-2", previous_credential="seed-1")
    save_state(path, stored)
    assert load_state(path) == stored
    assert resolve_state(stored, "n1", "seed-1", None) == stored
    assert "seed-1" not in repr(stored) and "rotated-2" not in repr(stored)


def test_a_new_seed_from_the_environment_forgets_a_previous_credential() -> None:
    stored = seeded(credential="rotated-2", previous_credential="seed-1")
    assert resolve_state(stored, "n1", "reprovisioned-3", None).previous_credential is None
    assert resolve_state(stored, "n2", "seed-n2", None).previous_credential is None


def test_a_state_file_from_before_the_previous_credential_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"node_id": "n1", "credential": "c1", "boot_count": 2}))
    state = load_state(path)
    assert state is not None and (state.credential, state.previous_credential) == ("c1", None)


def test_a_new_node_id_needs_its_credential() -> None:
    stored = seeded(credential="rotated-2", mqtt_url="mqtt://broker:1883", boot_count=7)
    with pytest.raises(StateError, match="HARK_NODE_CREDENTIAL"):
        resolve_state(stored, "n2", None, None)
    state = resolve_state(stored, "n2", "seed-n2", None)
    assert (state.node_id, state.credential, state.mqtt_url, state.boot_count) == ("n2", "seed-n2", None, 7)


def test_hub_url_from_the_environment_wins_and_is_remembered() -> None:
    stored = seeded()
    assert resolve_state(stored, None, None, "http://other:8080").hub_url == "http://other:8080"
    assert resolve_state(stored, None, None, None).hub_url == "http://hub:8080"


def test_prepare_state_counts_boots_and_keeps_a_rotated_credential(tmp_path: Path) -> None:
    env = {"HARK_DATA_DIR": str(tmp_path), "HARK_NODE_ID": "n1", "HARK_NODE_CREDENTIAL": "seed-1", "HARK_HUB_URL": "http://h:1"}
    config = NodeConfig.from_env(env)
    store = prepare_state(config)
    assert store.state.boot_count == 1
    store.save(*store.update(credential="rotated-2"))
    again = prepare_state(config)
    assert again.state.boot_count == 2
    assert again.state.credential == "rotated-2"
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert on_disk["credential"] == "rotated-2" and on_disk["boot_count"] == 2
