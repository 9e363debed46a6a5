"""Configuration from HARK_* variables over a TOML file, with the failing key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hark_fleet.hub.config import HubConfig
from hark_fleet.protocol.config import parse_host_port
from hark_fleet.protocol.errors import ConfigError


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path)})
    assert config.http_host == "127.0.0.1"
    assert config.http_port == 8080
    assert config.database_url is None
    assert config.mqtt_url is None
    assert config.embedded_mqtt_address == ("127.0.0.1", 1883)
    assert not config.embedded_bind_is_explicit
    assert not config.metrics_open_on_loopback


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    (tmp_path / "hark.toml").write_text('http_port = 9000\nhttp_host = "0.0.0.0"\n')
    config = HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_HTTP_PORT": "9100"})
    assert config.http_port == 9100
    assert config.http_host == "0.0.0.0"


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "hark.toml").write_text("http_prot = 9000\n")
    with pytest.raises(ConfigError, match="unknown key 'http_prot'"):
        HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HARK_HTTP_PORT", "eighty"),
        ("HARK_HTTP_PORT", "70000"),
        ("HARK_MQTT_URL", "http://broker:1883"),
        ("HARK_MQTT_URL", "mqtt://broker:notaport"),
        ("HARK_DATABASE_URL", "mysql://db/hark"),
        ("HARK_PUBLIC_URL", "ftp://hub"),
        ("HARK_EMBEDDED_MQTT_BIND", "127.0.0.1:99999"),
        ("HARK_METRICS_OPEN_ON_LOOPBACK", "perhaps"),
        ("HARK_LOG_LEVEL", "LOUD"),
        ("HARK_HISTORY_RETENTION_DAYS", "0"),
        ("HARK_HISTORY_RETENTION_DAYS", "nan"),
        ("HARK_HISTORY_RETENTION_DAYS", "3651"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), variable: value})


def test_history_is_kept_30_days_unless_configured(tmp_path: Path) -> None:
    assert HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path)}).history_retention_days == 30.0
    (tmp_path / "hark.toml").write_text("history_retention_days = 7\n")
    assert HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path)}).history_retention_days == 7.0
    half_a_day = HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_HISTORY_RETENTION_DAYS": "0.5"})
    assert half_a_day.history_retention_days == 0.5  # the environment over the file; fractions allowed


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        HubConfig.from_env({"HARK_CONFIG": str(tmp_path / "missing.toml")})


def test_embedded_bind_set_by_the_user_is_explicit(tmp_path: Path) -> None:
    config = HubConfig.from_env({"HARK_DATA_DIR": str(tmp_path), "HARK_EMBEDDED_MQTT_BIND": "0.0.0.0:1884"})
    assert config.embedded_mqtt_address == ("0.0.0.0", 1884)
    assert config.embedded_bind_is_explicit


@pytest.mark.parametrize(
    ("text", "expected"),
    [("host", ("host", 1883)), ("host:1", ("host", 1)), ("[::1]:8883", ("::1", 8883)), ("[::1]", ("::1", 1883))],
)
def test_host_port_parsing(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, 1883) == expected


def test_the_hub_refuses_to_start_on_a_bad_configuration(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "hark_fleet.hub", "run"],
        env={"HARK_DATA_DIR": str(tmp_path), "HARK_HTTP_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "HARK_HTTP_PORT" in result.stderr
    assert "Traceback" not in result.stderr
