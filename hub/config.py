"""Process configuration: `HARK_*` environment variables over an optional TOML file."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub import const
from hub.errors import ConfigError
from provision.mdns import Interfaces, parse_interfaces


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_port(raw: str) -> int:
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
    return host, _parse_port(port)


def _parse_mqtt_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("expected mqtt://[user:pass@]host[:port] or mqtts://...")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return raw


TLS_MODES = ("on", "off", "auto")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _parse_tls(raw: str) -> str:
    mode = raw.strip().lower()
    if mode in ("1", "true", "yes"):
        mode = "on"
    if mode in ("0", "false", "no"):
        mode = "off"
    if mode not in TLS_MODES:
        raise ValueError("expected on, off or auto (on unless every listener is on loopback)")
    return mode


def _parse_database_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected sqlite:///path or postgresql://user@host/db")
    return raw


def _parse_http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _parse_positive_seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 7 * 86400:
        raise ValueError("expected a number of seconds above 0 and at most 604800")
    return value


def _parse_log_level(raw: str) -> str:
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


HUB_SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", Path, Path(const.DEFAULT_DATA_DIR)),
    Setting("http_host", str, const.DEFAULT_HTTP_HOST),
    Setting("http_port", _parse_port, const.DEFAULT_HTTP_PORT),
    Setting("public_url", _parse_http_url),
    Setting("public_mqtt_url", _parse_mqtt_url),
    Setting("database_url", _parse_database_url),
    Setting("mqtt_url", _parse_mqtt_url),
    Setting("embedded_mqtt_bind", str, const.DEFAULT_EMBEDDED_MQTT_BIND),
    Setting("admin_password", str),
    Setting("metrics_open_on_loopback", _parse_bool, False),
    Setting("log_level", _parse_log_level, "INFO"),
    Setting("mqtt_dynsec", _parse_bool, False),
    Setting("sse_keepalive_s", float, 30.0),
    Setting("job_lease_timeout_s", _parse_positive_seconds, 60.0),
    Setting("job_recovery_grace_s", _parse_positive_seconds, 3600.0),
    Setting("oidc_issuer", _parse_http_url),
    Setting("oidc_client_id", str),
    Setting("oidc_client_secret", str),
    Setting("oidc_scopes", str, "openid profile email"),
    Setting("oidc_redirect_url", _parse_http_url),
    Setting("mdns_interfaces", parse_interfaces, None),
    Setting("tls", _parse_tls, "auto"),
)


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything the hub process is configured with, validated."""

    data_dir: Path
    http_host: str
    http_port: int
    public_url: str | None
    public_mqtt_url: str | None
    database_url: str | None
    mqtt_url: str | None
    embedded_mqtt_bind: str
    admin_password: str | None
    metrics_open_on_loopback: bool
    log_level: str
    mqtt_dynsec: bool = False
    sse_keepalive_s: float = 30.0
    job_lease_timeout_s: float = 60.0  # a recording job without a heartbeat this long loses its lease
    job_recovery_grace_s: float = 3600.0  # after that, how long a node that started capturing may come back for it
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scopes: str = "openid profile email"
    oidc_redirect_url: str | None = None
    mdns_interfaces: Interfaces | bool = None  # None: every interface; False: no mDNS; else IPv4 addresses
    tls: str = "auto"  # on | off | auto (on unless every listener is on loopback)
    explicit: frozenset[str] = field(default_factory=frozenset)

    @property
    def embedded_mqtt_address(self) -> tuple[str, int]:
        return parse_host_port(self.embedded_mqtt_bind, 1883)

    @property
    def tls_enabled(self) -> bool:
        """HTTPS and mqtts on the hub's listeners: `on`, or `auto` with a listener outside loopback."""
        if self.tls != "auto":
            return self.tls == "on"
        hosts = [self.http_host]
        if not self.mqtt_url:
            hosts.append(self.embedded_mqtt_address[0])
        return any(h not in LOOPBACK_HOSTS for h in hosts)

    @property
    def embedded_bind_is_explicit(self) -> bool:
        return "embedded_mqtt_bind" in self.explicit

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubConfig:
        """Read the configuration the way `hark-hub` does."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("HARK_DATA_DIR") or const.DEFAULT_DATA_DIR)
        config_path = env.get("HARK_CONFIG")
        config_file = Path(config_path) if config_path else data_dir / "hark.toml"
        values, explicit = load_settings(HUB_SETTINGS, env, config_file, file_required=bool(config_path))
        if "data_dir" not in explicit:
            values["data_dir"] = data_dir
        try:
            parse_host_port(values["embedded_mqtt_bind"], 1883)
        except ValueError as err:
            raise ConfigError(f"HARK_EMBEDDED_MQTT_BIND: invalid value: {err}") from err
        if values["oidc_issuer"] and not (values["oidc_client_id"] and values["oidc_client_secret"]):
            raise ConfigError("HARK_OIDC_ISSUER is set: HARK_OIDC_CLIENT_ID and HARK_OIDC_CLIENT_SECRET are needed too")
        names = {f.name for f in fields(cls)} - {"explicit"}
        return cls(**{k: v for k, v in values.items() if k in names}, explicit=frozenset(explicit))
