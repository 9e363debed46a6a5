"""Topic names under `hark/v1/nodes/{node_id}/...` and their parsing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TOPIC_ROOT = "hark/v1/nodes"
HUB_SUBSCRIPTION = f"{TOPIC_ROOT}/+/#"  # what the hub listens to: everything every node sends
# With several hubs sharing the ingest (MQTT shared subscriptions, `$share/<group>/...`), these kinds still
# reach every hub: each one's live clients (meter streams, snapshots, listeners) need every frame.
EVERY_HUB_KINDS = frozenset({"meters", "listen"})
SHARE_PREFIX = "$share/"

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


def hub_subscriptions(kinds: Iterable[str], share_group: str | None) -> list[str]:
    """The filters a hub subscribes to for the topic `kinds` it handles.

    Without `share_group`: `HUB_SUBSCRIPTION` alone (one hub hears everything). With it: each kind in
    `EVERY_HUB_KINDS` plainly (every hub gets every message) and every other kind through
    `$share/<share_group>/...` (the broker gives each message to one hub of the group). A kind's filter
    is `<kind>/#`, which also matches the bare `<kind>`. Sorted, so that a list is comparable.
    """
    if share_group is None:
        return [HUB_SUBSCRIPTION]
    filters = []
    for kind in sorted(set(kinds)):
        if not kind or "/" in kind or "+" in kind or "#" in kind:
            raise ValueError(f"not one topic level: {kind!r}")
        plain = f"{TOPIC_ROOT}/+/{kind}/#"
        filters.append(plain if kind in EVERY_HUB_KINDS else shared_filter(share_group, plain))
    return filters


def shared_filter(share_group: str, topic_filter: str) -> str:
    """`topic_filter` as a shared subscription of `share_group`."""
    if not share_group or any(c in share_group for c in "/+#"):
        raise ValueError(f"not a share group name: {share_group!r}")
    return f"{SHARE_PREFIX}{share_group}/{topic_filter}"


def unshared(topic: str) -> str:
    """The topic filter inside a `$share/<group>/<filter>`, or `topic` itself.

    A broker delivers messages of a shared subscription with their real topic (MQTT 5, 4.8.2); this is for
    filters (and for a broker that would echo the share prefix: it costs nothing to read it correctly).
    """
    if topic.startswith(SHARE_PREFIX):
        _, _, rest = topic[len(SHARE_PREFIX) :].partition("/")
        return rest
    return topic


def node_prefix(node_id: str) -> str:
    return f"{TOPIC_ROOT}/{node_id}/"


def command_topic(node_id: str, kind: str) -> str:
    """Where the hub sends a command of `kind` to one node (QoS 1)."""
    return f"{TOPIC_ROOT}/{node_id}/cmd/{kind}"
