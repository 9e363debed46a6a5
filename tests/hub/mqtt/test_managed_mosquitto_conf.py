"""The managed Mosquitto's configuration and identities file, as pure functions (the processes: test_managed_mosquitto.py)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from hark_fleet.hub.config import HubConfig
from hark_fleet.hub.mqtt.dynsec import HUB_ROLE
from hark_fleet.hub.mqtt.mosquitto_conf import (
    ADMIN_ROLE,
    Listener,
    MosquittoSetupError,
    hash_password,
    initial_dynsec,
    log_level_of,
    render_config,
    with_admin_password,
)
from hark_fleet.protocol.errors import ConfigError


def test_passwords_are_hashed_as_mosquitto_hashes_them(tmp_path: Path) -> None:
    path = tmp_path / "dynsec.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(path), "admin", "s3cret"], check=True, capture_output=True)
    client = json.loads(path.read_text())["clients"][0]
    ours = hash_password("s3cret", base64.b64decode(client["salt"]), client["iterations"])
    assert ours == {k: client[k] for k in ("password", "salt", "iterations")}


def test_a_new_admin_password_keeps_every_node_and_role() -> None:
    document = initial_dynsec("hark-hub", "first", b"0" * 12)
    document["clients"].append({"username": "node-1", "clientid": "node-1", "roles": [{"rolename": "hark-node-node-1"}]})
    document["roles"].append({"rolename": "hark-node-node-1", "acls": []})
    document["clients"][0]["roles"] = []  # an admin stripped of its roles gets them back
    updated = with_admin_password(document, "hark-hub", "second", b"1" * 12)
    hub = next(c for c in updated["clients"] if c["username"] == "hark-hub")
    assert hub["password"] == hash_password("second", b"1" * 12)["password"]
    assert {r["rolename"] for r in hub["roles"]} == {ADMIN_ROLE, HUB_ROLE}
    assert any(c["username"] == "node-1" for c in updated["clients"])
    assert {r["rolename"] for r in updated["roles"]} == {ADMIN_ROLE, HUB_ROLE, "hark-node-node-1"}
    assert updated["defaultACLAccess"]["subscribe"] is False


def test_a_missing_admin_is_made_again() -> None:
    updated = with_admin_password({"clients": [], "roles": []}, "hark-hub", "pw", b"2" * 12)
    assert [c["username"] for c in updated["clients"]] == ["hark-hub"]


def test_paths_mosquitto_cannot_name_are_refused(tmp_path: Path) -> None:
    spaced = tmp_path / "with space"
    with pytest.raises(MosquittoSetupError, match="whitespace"):
        render_config(
            listeners=[Listener("127.0.0.1", 1883)],
            plugin=Path("/usr/lib/p.so"),
            dynsec_file=spaced / "d.json",
            persistence_dir=spaced,
            user="hark",
        )


def test_the_configuration_denies_anonymous_logins_and_keeps_sessions(tmp_path: Path) -> None:
    text = render_config(
        listeners=[Listener("0.0.0.0", 1884)],
        plugin=Path("/usr/lib/p.so"),
        dynsec_file=tmp_path / "d.json",
        persistence_dir=tmp_path,
        user="hark",
    )
    lines = text.splitlines()
    for wanted in ("allow_anonymous false", "persistence true", f"persistence_location {tmp_path}/", "listener 1884 0.0.0.0"):
        assert wanted in lines
    assert int(next(line for line in lines if line.startswith("max_queued_messages")).split()[1]) > 1000


def test_mosquittos_lines_are_logged_at_their_level() -> None:
    assert log_level_of("Error: Address already in use") == "error"
    assert log_level_of("Warning: Mosquitto should not be run as root/administrator.") == "debug"
    assert log_level_of("New client connected from 127.0.0.1:5 as node-1 (p2, c0, k30, u'node-1').") == "debug"
    assert log_level_of("mosquitto version 2.0.11 running") == "info"


def test_the_setting_takes_three_values_and_names_itself_otherwise(tmp_path: Path) -> None:
    assert HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path)}).embedded_broker == "auto"
    asked = HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_EMBEDDED_BROKER": "in-process"})
    assert asked.embedded_broker == "in-process"
    with pytest.raises(ConfigError, match="HARK_EMBEDDED_BROKER"):
        HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_EMBEDDED_BROKER": "rabbitmq"})
