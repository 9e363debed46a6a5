"""Topic names under `hark/v1/nodes/{node_id}/...` and their parsing."""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_ROOT = "hark/v1/nodes"
HUB_SUBSCRIPTION = f"{TOPIC_ROOT}/+/#"  # what the hub listens to: everything every node sends

_ROOT_PARTS = TOPIC_ROOT.split("/")
_ROOT_LEN = len(_ROOT_PARTS)


@dataclass(frozen=True, slots=True)
class NodeTopic:
    """A parsed node topic: `kind` is the first level after the node id, `rest` what follows."""

    node_id: str
    kind: str
    rest: str


def parse_node_topic(topic: str) -> NodeTopic | None:
    """Parse `hark/v1/nodes/{id}/{kind}[/rest]`; None when the topic is not of that form."""
    parts = topic.split("/", _ROOT_LEN + 1)
    if len(parts) < _ROOT_LEN + 2 or parts[:_ROOT_LEN] != _ROOT_PARTS:
        return None
    node_id, tail = parts[_ROOT_LEN], parts[_ROOT_LEN + 1]
    kind, _, rest = tail.partition("/")
    if not node_id or not kind:
        return None
    return NodeTopic(node_id, kind, rest)


def node_prefix(node_id: str) -> str:
    return f"{TOPIC_ROOT}/{node_id}/"


def command_topic(node_id: str, kind: str) -> str:
    """Where the hub sends a command of `kind` to one node (QoS 1)."""
    return f"{TOPIC_ROOT}/{node_id}/cmd/{kind}"
