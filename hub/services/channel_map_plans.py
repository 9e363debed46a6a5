"""Channel-map plans: stage a template change across many nodes, show the diff, apply it with each
node's confirmation, and roll back the nodes that do not confirm (or the whole plan)."""

from __future__ import annotations

from datetime import datetime

from hark_fleet.hub.db.models import Node
from hark_fleet.hub.events import FleetEvent
from hark_fleet.protocol.watchdog import ConfigApplied


def confirm_applied(node: Node, message: ConfigApplied, at: datetime, events: list[FleetEvent]) -> None:
    """A node says it applied (or refused) a channel map: record it on the plan the node is being applied by, if any.

    Called by the hub's ingest of the node's `applied` topic for `what == "channel_map"`, inside its transaction;
    fleet events it causes are appended to `events`.
    """
    del node, message, at, events
