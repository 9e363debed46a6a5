"""The node inventory routes."""

from __future__ import annotations

from hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hub.services.nodes import NODE_LIST


class NodesHandler(ListHandler):
    """`GET /api/v1/nodes`."""

    spec = NODE_LIST
    permissions = {"get": "node:read"}


class NodeFacetsHandler(FacetsHandler):
    """`GET /api/v1/nodes/facets`."""

    spec = NODE_LIST
    permissions = {"get": "node:read"}


class NodeExportHandler(ExportHandler):
    """`GET|POST /api/v1/nodes/export`."""

    spec = NODE_LIST
    permissions = {"get": "node:read", "post": "node:read"}
