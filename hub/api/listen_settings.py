"""The live listen and share link settings (issue 23): listeners allowed, the grace for a gone client, link lifetimes."""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.services import listen_settings


def settings_document() -> dict[str, Any]:
    return listen_settings.to_api(listen_settings.load())


class ListenSettingsHandler(HubWideWrites):
    """`GET|PUT /api/v1/settings/listen`: shared by every site, so changing it needs settings:manage everywhere."""

    permissions = {"get": "settings:read", "put": "settings:manage"}

    async def get(self) -> None:
        self.write_data(await self.hub.db.run(settings_document))

    async def put(self) -> None:
        values = self.parse_body(dict[str, Any])
        self.write_data(await self.hub.db.run(listen_settings.update, self.actor, values))
