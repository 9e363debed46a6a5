"""The node's configuration: HARK_* variables over hark.toml, with the failing variable named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hark_fleet.node.config import NodeConfig
from hark_fleet.protocol.errors import ConfigError

from tests.harness import ROOT, spawn, terminate


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path
    assert config.hub_url is None
    assert config.node_local_port == 8081
    assert config.heartbeat_interval_s == 10
    assert config.outbox_capacity == 10_000
    assert config.log_level == "INFO"
    source = config.audio_source
    assert (source.kind, source.target, source.freq, source.dbfs, source.channels, source.rate) == (
        "synthetic",
        "sine",
        1000,
        -20,
        2,
        48000,
    )
    assert not config.is_explicit("heartbeat_interval_s")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    (tmp_path / "hark.toml").write_text('hub_url = "http://hub.local:8080/"\nheartbeat_interval_s = 5\noutbox_capacity = 50\n')
    config = NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_HEARTBEAT_INTERVAL_S": "1"})
    assert config.hub_url == "http://hub.local:8080"
    assert config.heartbeat_interval_s == 1
    assert config.outbox_capacity == 50
    assert config.is_explicit("heartbeat_interval_s")


def test_credential_is_kept_out_of_the_repr(tmp_path: Path) -> None:
    config = NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_NODE_ID": "n1", "HARK_NODE_CREDENTIAL": "s3cret-value"})
    assert config.node_credential == "s3cret-value"
    assert "s3cret-value" not in repr(config)


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "hark.toml").write_text("heartbeat_intervall_s = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'heartbeat_intervall_s'"):
        NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path)})


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HARK_HUB_URL", "hub.local:8080"),
        ("HARK_HUB_URL", "ftp://hub.local"),
        ("HARK_NODE_ID", "north/box-1"),
        ("HARK_NODE_ID", "box+1"),
        ("HARK_HEARTBEAT_INTERVAL_S", "often"),
        ("HARK_HEARTBEAT_INTERVAL_S", "0"),
        ("HARK_OUTBOX_CAPACITY", "3"),
        ("HARK_OUTBOX_CAPACITY", "lots"),
        ("HARK_NODE_LOCAL_PORT", "70000"),
        ("HARK_LOG_LEVEL", "LOUD"),
        ("HARK_NODE_AUDIO_SOURCE", "tape:deck"),
        ("HARK_NODE_AUDIO_SOURCE", "synthetic:square"),
        ("HARK_NODE_AUDIO_SOURCE", "synthetic:sine?volume=3"),
        ("HARK_NODE_AUDIO_SOURCE", "synthetic:sine?dbfs=+6"),
        ("HARK_NODE_AUDIO_SOURCE", "synthetic:sine?rate=8000"),
        ("HARK_NODE_AUDIO_SOURCE", "synthetic:noise?channels=two"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path), variable: value})
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_invalid_values_in_the_file_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "hark.toml").write_text('node_audio_source = "synthetic:sine?freq=loud"\n')
    with pytest.raises(ConfigError, match="key 'node_audio_source'.*'freq'"):
        NodeConfig.from_env({"HARK_DATA_DIR": str(tmp_path)})


def _run_cli(tmp_path: Path, env_extra: dict[str, str]) -> tuple[int, str]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HARK_")}
    env.update(HARK_DATA_DIR=str(tmp_path / "data"), **env_extra)
    log = tmp_path / "node.log"
    proc = spawn([sys.executable, "-m", "hark_fleet.node"], env=env, log_path=log)
    try:
        code = proc.wait(20)
    finally:
        terminate(proc)
    return code, log.read_text()


def test_missing_hub_url_with_mdns_off_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    code, output = _run_cli(tmp_path, {"HARK_NODE_ID": "n1", "HARK_NODE_CREDENTIAL": "cred-1", "HARK_MDNS_INTERFACES": "off"})
    assert code == 2
    assert "HARK_HUB_URL" in output
    assert "cred-1" not in output


def test_a_node_id_without_its_credential_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    code, output = _run_cli(tmp_path, {"HARK_HUB_URL": "http://127.0.0.1:9", "HARK_NODE_ID": "n1"})
    assert code == 2
    assert "HARK_NODE_CREDENTIAL" in output


def test_bad_variable_exits_2_naming_it(tmp_path: Path) -> None:
    code, output = _run_cli(tmp_path, {"HARK_HEARTBEAT_INTERVAL_S": "soon"})
    assert code == 2
    assert "HARK_HEARTBEAT_INTERVAL_S" in output


def test_console_script_reports_its_version() -> None:
    proc = spawn([str(ROOT / ".venv" / "bin" / "hark-node"), "--version"], log_path=None)
    assert proc.wait(20) == 0
