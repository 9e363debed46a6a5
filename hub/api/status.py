"""The fleet's status at a glance (`GET /api/v1/status`) and this hub process's load (`GET /api/load`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee
from hark_fleet.hub.api.base import PUBLIC, BaseHandler
from hark_fleet.hub.clock import iso
from hark_fleet.hub.disk_watch import measure
from hark_fleet.hub.services import fleet_status
from hark_fleet.hub.services.fleet_status import RecordingRate
from hark_fleet.protocol.version import __version__

DB_TIMEOUT_S = 5.0


class StatusHandler(BaseHandler):
    """`GET /api/v1/status`: nodes, open events, recent recordings, backlog and storage in the caller's sites; hub state."""

    permissions = {"get": "node:read"}

    async def get(self) -> None:
        hub = self.hub
        reachable, figures = True, None
        try:
            figures = await asyncio.wait_for(hub.db.run(fleet_status.fleet_figures, self.scope), DB_TIMEOUT_S)
        except (TimeoutError, peewee.DatabaseError, peewee.InterfaceError):
            reachable = False  # the rest of the status still answers: that is when it matters most
        rate: RecordingRate = figures.pop("recording_rate") if figures else RecordingRate(0.0, 0)
        storage = await self._hub_storage(rate)
        data: dict[str, Any] = {
            "nodes": figures["nodes"] if figures else None,
            "health_events": figures["health_events"] if figures else None,
            "recordings": figures["recordings"] if figures else None,
            "upload_backlog": figures["upload_backlog"] if figures else None,
            "storage": {"hub": storage, "nodes": figures["node_storage"] if figures else None},
            "hub": {
                "version": __version__,
                "started_at": iso(datetime.fromtimestamp(hub.started_at, UTC)),
                "uptime_s": round(time.time() - hub.started_at, 1),
            },
            "broker": {
                "kind": "external" if hub.broker_kind == "external" else "embedded",
                "url": hub.public_mqtt_url,
                "connected": hub.bridge is not None and hub.bridge.connected,
            },
            "database": {"kind": "sqlite" if hub.db.is_sqlite else "postgresql", "reachable": reachable},
        }
        self.write_data(data)

    async def _hub_storage(self, rate: RecordingRate) -> dict[str, Any]:
        """The recordings' filesystem: free space and the hours it lasts at the rate recordings are captured now."""
        root: Path = getattr(self.hub.storage, "root", self.hub.config.data_dir)
        spaces = await asyncio.get_running_loop().run_in_executor(None, measure, [root])
        space = spaces[0] if spaces else None
        free = space.free_bytes if space is not None else None
        return {
            "free_bytes": free,
            "total_bytes": space.total_bytes if space is not None else None,
            "full": self.hub.disk.full,
            "recordings_in_progress": rate.recordings,
            "recording_bytes_per_s": round(rate.bytes_per_s, 1),
            "hours_left": fleet_status.hours_left(free, rate.bytes_per_s),
        }


class LoadHandler(BaseHandler):
    """`GET /api/load`: this process's load for a load balancer; no credentials, no database, no disk."""

    permissions = {"get": PUBLIC}

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write_json({"data": self.hub.load.figures()})
