"""The node's configuration: `HARK_*` environment variables over an optional TOML file."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from hark_fleet.hw.config import HardwareConfig, HardwareConfigError, parse_hardware_config_json
from hark_fleet.node import const
from hark_fleet.node.audio_source import AudioSource, parse_audio_source
from hark_fleet.protocol.config import Setting, load_settings, parse_bool, parse_http_url, parse_log_level, parse_port
from hark_fleet.provision.mdns import Interfaces, parse_interfaces

FORBIDDEN_ID_CHARACTERS = set("/+#\x00 ")


def parse_node_id(raw: str) -> str:
    """A node id usable as one MQTT topic level."""
    value = raw.strip()
    if not value or len(value) > 128 or FORBIDDEN_ID_CHARACTERS & set(value):
        raise ValueError("expected 1..128 characters without '/', '+', '#' or spaces")
    return value


def _parse_secret(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty credential")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 86_400:
        raise ValueError("expected a number of seconds above 0")
    return value


def _parse_dbfs(raw: str) -> float:
    value = float(raw)
    if not -150.0 <= value <= 0.0:
        raise ValueError("expected a level from -150 to 0 dBFS")
    return value


def _parse_capacity(raw: str) -> int:
    value = int(raw)
    if value < 10:
        raise ValueError("expected at least 10 rows")
    return value


def _parse_runner(raw: str) -> tuple[str, ...]:
    """A command prefix for privileged commands, e.g. `sudo -n` (empty: run them directly)."""
    try:
        return tuple(shlex.split(raw))
    except ValueError as err:
        raise ValueError(f"not a command line: {err}") from err


def _parse_hardware(raw: str) -> HardwareConfig:
    """JSON naming the box's devices, e.g. `{"front_panel": "/dev/ttyUSB0", "hardware_watchdog": "/dev/watchdog"}`."""
    try:
        return parse_hardware_config_json(raw, where="node_hardware")
    except HardwareConfigError as err:
        raise ValueError(str(err)) from err


NODE_SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", Path, Path(const.DEFAULT_DATA_DIR)),
    Setting("hub_url", parse_http_url),
    Setting("node_id", parse_node_id),
    Setting("node_credential", _parse_secret),
    Setting("node_audio_source", parse_audio_source, parse_audio_source(const.DEFAULT_AUDIO_SOURCE)),
    Setting("node_local_port", parse_port, const.DEFAULT_LOCAL_PORT),
    Setting("node_local_host", str, const.DEFAULT_LOCAL_HOST),
    Setting("mdns_interfaces", parse_interfaces, None),
    Setting("heartbeat_interval_s", _parse_positive_float, const.DEFAULT_HEARTBEAT_INTERVAL_S),
    Setting("outbox_capacity", _parse_capacity, const.DEFAULT_OUTBOX_CAPACITY),
    Setting("node_privileged_runner", _parse_runner, ()),
    Setting("node_hardware", _parse_hardware, HardwareConfig()),
    Setting("node_silence_threshold_dbfs", _parse_dbfs, -60.0),
    Setting("node_silence_hold_s", _parse_positive_float, 10.0),
    Setting("node_clip_clear_s", _parse_positive_float, 10.0),
    Setting("log_level", parse_log_level, "INFO"),
    Setting("allow_plain", parse_bool, False),
)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything the node process is configured with, validated."""

    data_dir: Path
    hub_url: str | None
    node_id: str | None
    node_credential: str | None = field(repr=False)
    node_audio_source: AudioSource
    node_local_port: int
    node_local_host: str
    mdns_interfaces: Interfaces | bool  # None: every interface; False: no mDNS; else IPv4 addresses
    heartbeat_interval_s: float
    outbox_capacity: int
    node_privileged_runner: tuple[str, ...]
    node_hardware: HardwareConfig
    node_silence_threshold_dbfs: float
    node_silence_hold_s: float
    node_clip_clear_s: float
    log_level: str
    allow_plain: bool = False  # plain HTTP/MQTT to a hub outside loopback even with a CA pinned
    explicit: frozenset[str] = field(default_factory=frozenset)

    @property
    def audio_source(self) -> AudioSource:
        return self.node_audio_source

    @property
    def state_path(self) -> Path:
        return self.data_dir / const.STATE_FILE

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / const.OUTBOX_FILE

    def is_explicit(self, key: str) -> bool:
        """True when `key` was set in the environment or the file (not a default)."""
        return key in self.explicit

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeConfig:
        """Read the configuration the way `hark-node` does; ConfigError names the failing key."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("HARK_DATA_DIR") or const.DEFAULT_DATA_DIR)
        config_path = env.get("HARK_CONFIG")
        config_file = Path(config_path) if config_path else data_dir / const.CONFIG_FILE
        values, explicit = load_settings(NODE_SETTINGS, env, config_file, file_required=bool(config_path))
        if "data_dir" not in explicit:
            values["data_dir"] = data_dir
        names = {f.name for f in fields(cls)} - {"explicit"}
        return cls(**{k: v for k, v in values.items() if k in names}, explicit=frozenset(explicit))
