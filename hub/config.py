"""Process configuration: `HARK_*` environment variables over an optional TOML file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from hark_fleet.hub import const
from hark_fleet.hub.forwarded import Network, parse_trusted_proxies
from hark_fleet.protocol.config import (
    Setting,
    load_settings,
    parse_bool,
    parse_host_port,
    parse_http_url,
    parse_log_level,
    parse_port,
)
from hark_fleet.protocol.errors import ConfigError
from hark_fleet.provision.mdns import Interfaces, parse_interfaces


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


EMBEDDED_BROKERS = ("auto", "mosquitto", "in-process")


def _parse_embedded_broker(raw: str) -> str:
    kind = raw.strip().lower()
    if kind not in EMBEDDED_BROKERS:
        raise ValueError("expected auto (Mosquitto when installed, else in-process), mosquitto or in-process")
    return kind


def _parse_listen_transport(raw: str) -> str:
    kind = raw.strip().lower()
    if kind not in ("mqtt", "http"):
        raise ValueError("expected mqtt (chunks on the node's MQTT connection) or http (POSTs to the agent route)")
    return kind


def _parse_mqtt_shared(raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError("expected auto (on with PostgreSQL and an external broker), on or off")
    return mode


def _parse_share_group(raw: str) -> str:
    group = raw.strip()
    if not group or any(c in group for c in "/+#") or len(group) > 64:
        raise ValueError("expected a name of up to 64 characters without /, + or #")
    return group


def _parse_pool_size(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 200:
        raise ValueError("expected a whole number of connections from 1 to 200")
    return value


def _parse_positive_seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 7 * 86400:
        raise ValueError("expected a number of seconds above 0 and at most 604800")
    return value


def _parse_retention_days(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 3650:
        raise ValueError("expected a number of days above 0 and at most 3650 (fractions allowed)")
    return value


def _parse_upload_concurrency(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 64:
        raise ValueError("expected a whole number of uploads from 1 to 64")
    return value


HUB_SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", Path, Path(const.DEFAULT_DATA_DIR)),
    Setting("http_host", str, const.DEFAULT_HTTP_HOST),
    Setting("http_port", parse_port, const.DEFAULT_HTTP_PORT),
    Setting("public_url", parse_http_url),
    Setting("public_mqtt_url", _parse_mqtt_url),
    Setting("database_url", _parse_database_url),
    Setting("mqtt_url", _parse_mqtt_url),
    Setting("embedded_mqtt_bind", str, const.DEFAULT_EMBEDDED_MQTT_BIND),
    Setting("embedded_broker", _parse_embedded_broker, "auto"),
    Setting("mosquitto_bin", str),
    Setting("admin_password", str),
    Setting("metrics_open_on_loopback", parse_bool, False),
    Setting("log_level", parse_log_level, "INFO"),
    Setting("mqtt_dynsec", parse_bool, False),
    Setting("sse_keepalive_s", float, 30.0),
    Setting("job_lease_timeout_s", _parse_positive_seconds, 60.0),
    Setting("job_recovery_grace_s", _parse_positive_seconds, 3600.0),
    Setting("oidc_issuer", parse_http_url),
    Setting("oidc_client_id", str),
    Setting("oidc_client_secret", str),
    Setting("oidc_scopes", str, "openid profile email"),
    Setting("oidc_redirect_url", parse_http_url),
    Setting("mdns_interfaces", parse_interfaces, None),
    Setting("tls", _parse_tls, "auto"),
    Setting("history_retention_days", _parse_retention_days, 30.0),
    Setting("retention_interval_s", _parse_positive_seconds, 3600.0),
    Setting("schedule_lead_s", _parse_positive_seconds, 86400.0),
    Setting("schedule_dispatch_interval_s", _parse_positive_seconds, 30.0),
    Setting("upload_concurrency", _parse_upload_concurrency, 2),
    Setting("upload_backoff_base_s", _parse_positive_seconds, 30.0),
    Setting("upload_pass_interval_s", _parse_positive_seconds, 5.0),
    Setting("notify_backoff_base_s", _parse_positive_seconds, 5.0),
    Setting("notify_give_up_s", _parse_positive_seconds, 86400.0),
    Setting("listen_transport", _parse_listen_transport, "mqtt"),
    Setting("mqtt_shared", _parse_mqtt_shared, "auto"),
    Setting("mqtt_share_group", _parse_share_group, "hark-hub"),
    Setting("database_pool_size", _parse_pool_size, 8),
    Setting("trusted_proxies", parse_trusted_proxies, ()),
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
    history_retention_days: float = 30.0  # meter and heartbeat minutes older than this are pruned
    retention_interval_s: float = 3600.0  # how often retention runs at the hub (and at once when space is short)
    schedule_lead_s: float = 86400.0  # schedules' occurrences are dispatched to their nodes this far ahead
    schedule_dispatch_interval_s: float = 30.0  # how often the dispatcher looks (and at once when a schedule changes)
    upload_concurrency: int = 2  # uploads the runner runs at once, across providers (issue 20)
    upload_backoff_base_s: float = 30.0  # a failed upload waits this long after its first failure, doubling after each
    upload_pass_interval_s: float = 5.0  # how often the upload runner looks at the queue (and at once when nudged)
    notify_backoff_base_s: float = 5.0  # a notification's first retry waits up to this long, doubling (full jitter) (issue 21)
    notify_give_up_s: float = 86400.0  # a notification still undelivered this long after its first attempt fails
    listen_transport: str = "mqtt"  # how nodes send live listen audio: mqtt (QoS 0 chunks) | http (agent route POSTs)
    embedded_broker: str = "auto"  # without HARK_MQTT_URL: auto (Mosquitto when installed) | mosquitto | in-process
    mosquitto_bin: str | None = None  # the Mosquitto binary; else `mosquitto` on PATH or in /usr/sbin
    # More than one hub (issue 24): ingest through `$share/<group>/...` subscriptions (auto: with PostgreSQL and
    # HARK_MQTT_URL), and the PostgreSQL connections of each hub process (its database threads too)
    mqtt_shared: str = "auto"
    mqtt_share_group: str = "hark-hub"
    database_pool_size: int = 8
    trusted_proxies: tuple[Network, ...] = ()  # balancers whose X-Forwarded-For/-Proto the hub believes (HARK_TRUSTED_PROXIES)
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
    def on_postgres(self) -> bool:
        """PostgreSQL: the database more than one hub process may share."""
        return bool(self.database_url) and not str(self.database_url).startswith("sqlite")

    @property
    def shared_subscriptions(self) -> bool:
        """Whether ingest topics are subscribed as `$share/<group>/...`, spread across the hubs of a deployment."""
        if self.mqtt_shared != "auto":
            return self.mqtt_shared == "on"
        return self.on_postgres and bool(self.mqtt_url)

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
