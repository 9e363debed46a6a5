"""The node inventory: how nodes are listed, shown and exported."""

from __future__ import annotations

from typing import Any

from hub.clock import iso
from hub.db.models import Node
from hub.services.listing import Filter, ListSpec

NODE_STATUSES = ("pending", "online", "degraded", "offline")


def _status(value: str) -> str:
    if value not in NODE_STATUSES:
        raise ValueError(f"must be one of {', '.join(NODE_STATUSES)}")
    return value


def node_to_api(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "site": node.site,
        "tags": list(node.tags or []),
        "status": node.status,
        "last_seen_at": iso(node.last_seen_at),
        "version": node.version,
        "hardware": node.hardware or {},
        "interfaces": node.interfaces or [],
        "capacity": node.capacity or {},
        "metrics": node.metrics or {},
        "time_quality": node.time_quality,
        "created_at": iso(node.created_at),
    }


NODE_LIST = ListSpec(
    model=Node,
    serialize=node_to_api,
    filters=(
        Filter("status", Node.status, _status),
        Filter("site", Node.site),
        Filter("tag", Node.tags, contains=True),
        Filter("version", Node.version),
        Filter("time_quality", Node.time_quality),
        Filter("hardware_id", Node.hardware_id, facet=False),
    ),
    search=(Node.name, Node.site, Node.hardware_id),
    time_field=Node.created_at,
    site_field=Node.site,
    export_columns=("id", "name", "site", "tags", "status", "last_seen_at", "version", "time_quality", "created_at"),
)
