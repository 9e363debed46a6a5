"""Which watchdog policy each node runs: node+channel > node > site > the built-in `default` (most specific wins).

An assignment target (a site, a node, a node's channel) belongs to at most one policy (the
service refuses a second), so resolution never has to break a tie. Everything here reads the
policies once and works in memory, so telling a whole fleet what changed costs two queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hark_fleet.hub.db.models import Node, WatchdogPolicy
from hark_fleet.protocol.watchdog import Baseline, Detectors, NodeWatchdog, PolicyConfig

DEFAULT_ID = "default"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A node's policies by row id: the node-level one (and what reached it) and any per channel."""

    node_policy: str  # a policy id (DEFAULT_ID when nothing more specific is assigned)
    via: str  # channel | node | site | default
    channels: dict[str, str] = field(default_factory=dict)  # channel name -> policy id


@dataclass(slots=True)
class PolicyIndex:
    """Every policy and assignment target, read once."""

    policies: dict[str, WatchdogPolicy]
    by_site: dict[str, str] = field(default_factory=dict)
    by_node: dict[str, str] = field(default_factory=dict)
    by_channel: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def load(cls) -> PolicyIndex:
        return cls.of(list(WatchdogPolicy.select()))

    @classmethod
    def of(cls, policies: Iterable[WatchdogPolicy]) -> PolicyIndex:
        index = cls({p.id: p for p in policies})
        for policy in sorted(index.policies.values(), key=lambda p: p.id):
            for assignment in policy.assignments or []:
                if assignment.get("channel") is not None and assignment.get("node_id"):
                    index.by_channel.setdefault((assignment["node_id"], assignment["channel"]), policy.id)
                elif assignment.get("node_id"):
                    index.by_node.setdefault(assignment["node_id"], policy.id)
                elif assignment.get("site"):
                    index.by_site.setdefault(assignment["site"], policy.id)
        return index

    def resolve(self, node_id: str, site: str | None) -> Resolved:
        channels = {channel: pid for (nid, channel), pid in sorted(self.by_channel.items()) if nid == node_id}
        if node_id in self.by_node:
            return Resolved(self.by_node[node_id], "node", channels)
        if site is not None and site in self.by_site:
            return Resolved(self.by_site[site], "site", channels)
        return Resolved(DEFAULT_ID, "default", channels)

    def config(self, policy_id: str, node_id: str) -> PolicyConfig:
        """The protocol's view of one policy for one node (the pristine built-in default is the node's own)."""
        policy = self.policies.get(policy_id)
        baselines = (policy.baselines or {}) if policy is not None else {}
        if policy is None or (policy.builtin and policy.version <= 1 and node_id not in baselines):
            return PolicyConfig()  # policy_id None: the node's built-in default (its environment's thresholds)
        raw_baseline = baselines.get(node_id)
        return PolicyConfig(
            policy_id=policy.id,
            version=policy.version,
            detectors=msgspec.convert(policy.detectors or {}, Detectors),
            baseline=msgspec.convert(raw_baseline, Baseline) if raw_baseline is not None else None,
        )

    def node_watchdog(self, node_id: str, site: str | None) -> NodeWatchdog:
        resolved = self.resolve(node_id, site)
        return NodeWatchdog(
            node=self.config(resolved.node_policy, node_id),
            channels={channel: self.config(pid, node_id) for channel, pid in resolved.channels.items()},
        )


def node_watchdog(node: Node) -> NodeWatchdog:
    """The protocol `NodeWatchdog` a node runs: what `GET /nodes/{id}/config` hands it as `data.watchdog`."""
    return PolicyIndex.load().node_watchdog(node.id, node.site)


def node_watchdog_builtins(node: Node) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(node_watchdog(node))
    return result


def fleet_resolution(node_ids: Sequence[str] | None = None) -> dict[str, NodeWatchdog]:
    """Every node's (or the given nodes') resolved watchdog, by node id."""
    index = PolicyIndex.load()
    query = Node.select(Node.id, Node.site)
    if node_ids is not None:
        query = query.where(Node.id.in_(list(node_ids)))
    return {node.id: index.node_watchdog(node.id, node.site) for node in query}


def changed_nodes(before: dict[str, NodeWatchdog], after: dict[str, NodeWatchdog]) -> list[str]:
    """Nodes whose resolved watchdog differs between two resolutions (they get `cmd/config`)."""
    return sorted(node_id for node_id in before.keys() | after.keys() if before.get(node_id) != after.get(node_id))
