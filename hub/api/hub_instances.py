"""The hub instances of the deployment (issue 24): `GET /api/v1/hub-instances` (list, facets, export, detail) and
`GET /api/v1/hub-instances/leases` (who holds each singleton lease).

They show the hub's processes (host, pid, address, version) like `/metrics` shows their internals, so they need
`metrics:read`; nothing in them belongs to a site, so a site-limited grant sees the same list.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, stream_export
from hark_fleet.hub.services import hub_instances as instances
from hark_fleet.hub.services.hub_instances import OwnInstance
from hark_fleet.hub.services.listing import parse_export_format
from hark_fleet.protocol.version import __version__

READ = "metrics:read"


class InstancesBase(BaseHandler):
    def own(self) -> OwnInstance | None:
        """This process as a row, on SQLite (where none are written); None on PostgreSQL."""
        hub = self.hub
        if not hub.db.is_sqlite:
            return None
        started = datetime.fromtimestamp(hub.started_at, UTC).replace(tzinfo=None)
        return OwnInstance(hub.instance_id, socket.gethostname(), hub.leases.pid, hub.public_url, __version__, started)


class InstancesHandler(InstancesBase):
    """`GET /api/v1/hub-instances`: every instance (live, stopped, lost) with the leases each live one holds."""

    permissions = {"get": READ}

    async def get(self) -> None:
        request = instances.parse_request(self.query_args())
        items, next_cursor = await self.hub.db.run(instances.instance_page, self.own(), request)
        self.write_page(items, next_cursor)


class InstanceFacetsHandler(InstancesBase):
    """`GET /api/v1/hub-instances/facets?fields=state`: counts of state, host and version."""

    permissions = {"get": READ}

    async def get(self) -> None:
        args = self.query_args()
        names = [n for raw in args.get("fields", []) for n in raw.split(",") if n]
        request = instances.parse_request(args)
        self.write_data(await self.hub.db.run(instances.facet_counts, self.own(), request, names))


class InstanceExportHandler(ExportHandler, InstancesBase):
    """`GET|POST /api/v1/hub-instances/export?format=csv|ndjson`: every instance the list would show."""

    permissions = {"get": READ, "post": READ}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        fmt = parse_export_format(args)
        request = instances.parse_request(args, ids)
        batches = instances.export_batches(self.own(), request)
        await stream_export(self, fmt, instances.EXPORT_COLUMNS, batches, "hub-instances")


class LeasesHandler(InstancesBase):
    """`GET /api/v1/hub-instances/leases`: each singleton lease, its holder, fence and expiry."""

    permissions = {"get": READ}

    async def get(self) -> None:
        leases = await self.hub.db.run(instances.lease_list, self.own())
        self.write_page(leases, None)


class InstanceHandler(InstancesBase):
    """`GET /api/v1/hub-instances/{id}`: one instance."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(instances.instance_detail, self.own(), id))
