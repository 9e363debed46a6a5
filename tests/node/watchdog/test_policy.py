"""The policy on the node: the built-in default from the environment, the hub's applied live, kept on disk, confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.config import NodeConfig
from hark_fleet.node.lifecycle import ActionResult
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.node.watchdog.runtime import Watchdog
from hark_fleet.protocol.watchdog import ConfigApplied

from tests.node.watchdog.frames import channel, frame


def hub_policy(version: int, hold_s: float = 1.0) -> dict[str, Any]:
    return {
        "node": {
            "policy_id": "wdp_site",
            "version": version,
            "detectors": {"silence": {"threshold_dbfs": -50, "hold_s": hold_s}},
        },
        "channels": {"R": {"policy_id": "wdp_r", "version": 1, "detectors": {"silence": {"enabled": False}}}},
    }


class Node:
    """A Watchdog as the agent makes it, with the outbox and health reports recorded."""

    def __init__(self, data_dir: Path) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.health: list[tuple[str, str, str, dict[str, Any]]] = []
        self.watchdog = Watchdog(
            data_dir,
            default_watchdog(-70.0, 3.0, 5.0),
            NodeTopics("n1"),
            lambda *r: self.health.append(r),
            self.enqueue,
            self.run_action,
            lambda: None,
            [],
            lambda: "capturing",
        )

    async def enqueue(self, topic: str, build: Callable[[str], bytes]) -> str:
        self.sent.append((topic, build("m1")))
        return "m1"

    async def run_action(self, action: str) -> ActionResult:
        return ActionResult(True, "")

    def applied(self) -> list[ConfigApplied]:
        return [msgspec.json.decode(p, type=ConfigApplied) for t, p in self.sent if t == "hark/v1/nodes/n1/applied"]


def test_the_environment_thresholds_are_the_built_in_policy(tmp_path: Path) -> None:
    env = {"HARK_DATA_DIR": str(tmp_path), "HARK_NODE_SILENCE_THRESHOLD_DBFS": "-55", "HARK_NODE_SILENCE_HOLD_S": "4"}
    config = NodeConfig.from_env({**env, "HARK_NODE_CLIP_CLEAR_S": "7"})
    built_in = default_watchdog(config.node_silence_threshold_dbfs, config.node_silence_hold_s, config.node_clip_clear_s)
    detectors = built_in.node.detectors
    assert (detectors.silence.threshold_dbfs, detectors.silence.hold_s, detectors.clipping.clear_s) == (-55.0, 4.0, 7.0)
    assert built_in.node.policy_id is None and built_in.node.version == 0 and built_in.channels == {}
    node = Node(tmp_path)
    assert node.watchdog.applied == {"watchdog": {"id": None, "version": 0}}


def test_a_policy_from_the_hub_applies_at_once_is_confirmed_and_a_restarted_node_keeps_it_with_the_hub_away(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path)
    asyncio.run(node.watchdog.apply(hub_policy(2)))
    assert [(a.what, a.ok, a.id, a.version) for a in node.applied()] == [("watchdog", True, "wdp_site", 2)]
    assert node.watchdog.applied["watchdog"] == {"id": "wdp_site", "version": 2}
    # it runs from the next frame: -60 dBFS is silence under the hub's -50, not under the built-in -70; R has it off
    events = []
    for _ in range(10):
        events += node.watchdog.frames.update(frame(channel("L", peak=-60), channel("R", peak=-60)))
    assert [(e.kind, e.state, e.channels, e.policy_id) for e in events] == [("audio.silence", "open", ("L",), "wdp_site")]
    asyncio.run(node.watchdog.apply(hub_policy(2)))  # every config fetch brings it again: confirmed once
    assert len(node.applied()) == 1
    asyncio.run(node.watchdog.apply(None))  # a hub that sends none: keep what runs
    assert node.watchdog.policy.node.version == 2

    restarted = Node(tmp_path)  # the hub is away: nothing is fetched
    assert restarted.watchdog.policy.node.policy_id == "wdp_site" and restarted.watchdog.policy.node.version == 2
    assert restarted.watchdog.frames.watchdog.channels["R"].policy_id == "wdp_r"
    assert restarted.watchdog.applied == {"watchdog": {"id": "wdp_site", "version": 2}}
    asyncio.run(restarted.watchdog.apply(hub_policy(2)))  # the hub is back: confirmed once after the start
    assert [a.version for a in restarted.applied()] == [2]


def test_a_policy_the_node_cannot_read_is_refused_and_the_last_one_keeps_running(tmp_path: Path) -> None:
    node = Node(tmp_path)
    asyncio.run(node.watchdog.apply(hub_policy(2)))
    broken = hub_policy(3)
    broken["node"]["detectors"]["silence"]["hold_s"] = -4
    asyncio.run(node.watchdog.apply(broken))
    refused = node.applied()[-1]
    assert (refused.ok, refused.id, refused.version) == (False, "wdp_site", 3) and "hold_s" in (refused.error or "")
    assert node.watchdog.policy.node.version == 2 and Node(tmp_path).watchdog.policy.node.version == 2


def test_a_hub_policy_that_names_no_policy_means_the_nodes_own_built_in_default(tmp_path: Path) -> None:
    node = Node(tmp_path)  # built-in: silence under -70 dBFS for 3 s
    asyncio.run(node.watchdog.apply(hub_policy(2)))
    unassigned = {"node": {"policy_id": None, "version": 0}, "channels": {"R": {"policy_id": None, "version": 0}}}
    asyncio.run(node.watchdog.apply(unassigned))  # the hub's pristine default: the environment's thresholds, here
    running = node.watchdog.frames.watchdog
    assert running.node.detectors.silence.threshold_dbfs == -70.0 and running.node.detectors.silence.hold_s == 3.0
    assert running.channels["R"].detectors.silence.threshold_dbfs == -70.0
    assert [(a.id, a.version) for a in node.applied()] == [("wdp_site", 2), (None, 0)]
    assert Node(tmp_path).watchdog.policy.node.detectors.silence.threshold_dbfs == -70.0  # kept that way
