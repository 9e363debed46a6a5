"""The watchdog policy a node runs: the hub's last one (kept on disk for when the hub is away), else the built-in default.

`NodeWatchdog` comes from the hub in `data.watchdog` of the node's config; a channel with a policy
of its own (keyed by channel name) uses it instead of the node's. The built-in default is the
protocol's `DEFAULT_POLICY` with the silence and clipping thresholds of the node's environment
(`HARK_NODE_SILENCE_THRESHOLD_DBFS`, `HARK_NODE_SILENCE_HOLD_S`, `HARK_NODE_CLIP_CLEAR_S`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.watchdog import (
    Baseline,
    ChannelBaseline,
    ClippingDetector,
    Detectors,
    NodeWatchdog,
    PolicyConfig,
    SilenceDetector,
)

log = logging.getLogger(__name__)

POLICY_FILE = "watchdog_policy.json"


def default_watchdog(silence_dbfs: float = -60.0, silence_hold_s: float = 10.0, clip_clear_s: float = 10.0) -> NodeWatchdog:
    """The built-in policy (no id, version 0): the protocol's defaults with the environment's thresholds."""
    detectors = Detectors(
        silence=SilenceDetector(threshold_dbfs=silence_dbfs, hold_s=silence_hold_s),
        clipping=ClippingDetector(clear_s=clip_clear_s),
    )
    return NodeWatchdog(node=PolicyConfig(detectors=detectors))


def with_builtin(watchdog: NodeWatchdog, builtin: NodeWatchdog) -> NodeWatchdog:
    """What the node runs of the hub's policy: where it names no policy (`policy_id` None), the node's own default."""
    node = builtin.node if watchdog.node.policy_id is None else watchdog.node
    channels = {name: builtin.node if p.policy_id is None else p for name, p in watchdog.channels.items()}
    return NodeWatchdog(node=node, channels=channels)


def parse_watchdog(data: Any) -> NodeWatchdog:
    """The hub's `data.watchdog` as a NodeWatchdog; ValueError says what is wrong with it."""
    try:
        return msgspec.convert(data, NodeWatchdog)
    except msgspec.ValidationError as err:
        raise ValueError(f"watchdog policy not understood: {err}") from err


def policy_for(watchdog: NodeWatchdog, channel: str) -> PolicyConfig:
    """The policy that governs `channel`: its own where assigned, else the node's."""
    return watchdog.channels.get(channel) or watchdog.node


def baseline_for(watchdog: NodeWatchdog, channel: str) -> ChannelBaseline | None:
    """The calibrated levels of `channel`: from its own policy's baseline where it has them, else the node's."""
    own = watchdog.channels.get(channel)
    if own is not None and own.baseline is not None and channel in own.baseline.channels:
        return own.baseline.channels[channel]
    baseline = watchdog.node.baseline
    return baseline.channels.get(channel) if baseline is not None else None


def format_baseline(watchdog: NodeWatchdog) -> Baseline | None:
    """The node policy's baseline, which says the sample rate and channel count the node was calibrated at."""
    return watchdog.node.baseline


def applied_entry(watchdog: NodeWatchdog) -> dict[str, object]:
    """The heartbeat's `applied["watchdog"]`: the node policy's id (None: the built-in default) and version."""
    return {"id": watchdog.node.policy_id, "version": watchdog.node.version}


class PolicyStore:
    """The last policy the hub sent, in the data dir (replaced atomically); None when the hub never sent one."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / POLICY_FILE

    def load(self) -> NodeWatchdog | None:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=NodeWatchdog)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
            log.error("watchdog policy %s unreadable (%s): using the built-in default", self.path, err)
            return None

    def save(self, watchdog: NodeWatchdog) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, msgspec.json.encode(watchdog))
