"""Process configuration both sides read the same way: `HARK_*` environment variables over an optional TOML file.

Each process lists its `Setting`s; `load_settings` merges the file and the environment,
rejects unknown keys and names the failing key in every message.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hark_fleet.protocol.errors import ConfigError


def parse_bool(raw: str) -> bool:
    """`true|false` (also `1|0`, `yes|no`, `on|off`)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_port(raw: str) -> int:
    """A TCP port number, 0 to 65535."""
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number 0..65535")
    return port


def parse_host_port(raw: str, default_port: int) -> tuple[str, int]:
    """Split `host:port` (IPv6 in brackets); a bare host gets `default_port`."""
    text = raw.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not host:
        raise ValueError("expected host:port")
    return host, parse_port(port)


def parse_http_url(raw: str) -> str:
    """An http(s) base URL without a trailing slash."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return raw.strip().rstrip("/")


def parse_log_level(raw: str) -> str:
    """DEBUG, INFO, WARNING or ERROR, in any case."""
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


@dataclass(frozen=True, slots=True)
class Setting:
    """One option: its key in the TOML file, its environment variable and its parser."""

    key: str
    parse: Callable[[str], Any]
    default: Any = None

    @property
    def env(self) -> str:
        return "HARK_" + self.key.upper()


def load_settings(
    spec: tuple[Setting, ...],
    env: Mapping[str, str],
    config_file: Path | None,
    file_required: bool = False,
) -> tuple[dict[str, Any], set[str]]:
    """Merge file and environment values for `spec`; return values and the keys set explicitly."""
    by_key = {s.key: s for s in spec}
    values: dict[str, Any] = {s.key: s.default for s in spec}
    explicit: set[str] = set()
    if config_file is not None and config_file.exists():
        try:
            document = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{config_file}: cannot read: {err}") from err
        for key, raw in document.items():
            setting = by_key.get(key)
            if setting is None:
                raise ConfigError(f"{config_file}: unknown key '{key}'")
            values[key] = _parse_value(
                setting, str(raw) if not isinstance(raw, bool) else str(raw).lower(), f"{config_file}: key '{key}'"
            )
            explicit.add(key)
    elif config_file is not None and file_required:
        raise ConfigError(f"config file {config_file} does not exist")
    for setting in spec:
        raw_env = env.get(setting.env)
        if raw_env is not None and raw_env != "":
            values[setting.key] = _parse_value(setting, raw_env, setting.env)
            explicit.add(setting.key)
    return values, explicit


def _parse_value(setting: Setting, raw: str, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as err:
        raise ConfigError(f"{where}: invalid value {raw!r}: {err}") from err
