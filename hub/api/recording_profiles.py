"""Recording profiles (settings): list, read, create, change, delete; the built-in `default` is made at first use."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.services import recording_profiles
from hark_fleet.hub.services.recording_profiles import PROFILE_LIST

READ = "settings:read"
MANAGE = "settings:manage"


class ProfileBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""
    format: str | msgspec.UnsetType = msgspec.UNSET
    sample_rate: int | msgspec.UnsetType = msgspec.UNSET
    bit_depth: int | msgspec.UnsetType = msgspec.UNSET
    channels: int | None | msgspec.UnsetType = msgspec.UNSET
    channel_map_template_id: str | None | msgspec.UnsetType = msgspec.UNSET
    segment_s: float | msgspec.UnsetType = msgspec.UNSET
    preroll_s: float | msgspec.UnsetType = msgspec.UNSET
    max_duration_s: float | msgspec.UnsetType = msgspec.UNSET


class ProfilePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    format: str | msgspec.UnsetType = msgspec.UNSET
    sample_rate: int | msgspec.UnsetType = msgspec.UNSET
    bit_depth: int | msgspec.UnsetType = msgspec.UNSET
    channels: int | None | msgspec.UnsetType = msgspec.UNSET
    channel_map_template_id: str | None | msgspec.UnsetType = msgspec.UNSET
    segment_s: float | msgspec.UnsetType = msgspec.UNSET
    preroll_s: float | msgspec.UnsetType = msgspec.UNSET
    max_duration_s: float | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


class ProfilesHandler(HubWideWrites, ListHandler):
    """`GET /api/v1/settings/recording-profiles` and `POST` to create one (201)."""

    spec = PROFILE_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def get(self) -> None:
        await self.hub.db.run(recording_profiles.ensure_default)
        await super().get()

    async def post(self) -> None:
        body = self.parse_body(ProfileBody)
        settings = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
        name, description = settings.pop("name"), settings.pop("description")
        self.write_data(await self.hub.db.run(recording_profiles.create_profile, self.actor, name, description, settings), 201)


class ProfileFacetsHandler(FacetsHandler):
    spec = PROFILE_LIST
    permissions = {"get": READ}

    async def get(self) -> None:
        await self.hub.db.run(recording_profiles.ensure_default)
        await super().get()


class ProfileExportHandler(ExportHandler):
    spec = PROFILE_LIST
    permissions = {"get": READ, "post": READ}

    async def get(self) -> None:
        await self.hub.db.run(recording_profiles.ensure_default)
        await super().get()

    async def post(self) -> None:
        await self.hub.db.run(recording_profiles.ensure_default)
        await super().post()


class ProfileHandler(HubWideWrites):
    """`GET|PATCH|DELETE /api/v1/settings/recording-profiles/{id}` (the built-in `default` cannot be deleted)."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(recording_profiles.profile_detail, id))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(ProfilePatchBody)
        self.write_data(await self.hub.db.run(recording_profiles.update_profile, self.actor, id, changes))

    async def delete(self, id: str) -> None:
        await self.hub.db.run(recording_profiles.delete_profile, self.actor, id)
        self.write_no_content()


class ProfileActionsHandler(BaseHandler):
    """`GET /api/v1/settings/recording-profiles/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(recording_profiles.profile_detail, id)
        self.write_data(detail["actions"])
