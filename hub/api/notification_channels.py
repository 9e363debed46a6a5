"""Notification channels (issue 21): list, facets, export, detail, actions, create, change, delete, config, tests.

Reads need `notify:read`, writes `notify:manage`, both within the caller's sites (a channel's `site`; a
hub-wide channel only for unlimited callers, 404 for others). After a change the notifier is nudged so it
routes with the new channel at once.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.services import notification_channels
from hark_fleet.hub.services.notification_channels import CHANNEL_LIST, MANAGE, READ

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType
Id = Annotated[str, msgspec.Meta(max_length=40)]
SiteId = Annotated[str, msgspec.Meta(max_length=100)]
Kind = Annotated[str, msgspec.Meta(max_length=20)]


class ChannelBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: Kind
    name: str | None = None  # required to save; a test without saving may leave it out
    site: SiteId | None = None
    description: str = ""
    enabled: bool = True
    config: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    subscription: dict[str, Any] | None = None


class ChannelTestBody(ChannelBody, forbid_unknown_fields=True):
    channel_id: Id | None = None  # a saved channel whose secrets fill in those left out (testing an edit)


class ChannelPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | Unset = UNSET
    description: str | Unset = UNSET
    enabled: bool | Unset = UNSET
    site: SiteId | None | Unset = UNSET
    subscription: dict[str, Any] | None | Unset = UNSET
    version: int | Unset = UNSET  # the version last read: 409 if it moved on
    # Named only to answer a 400 pointing at PUT .../config (or, for kind, at a new channel).
    kind: Any | Unset = UNSET
    config: Any | Unset = UNSET
    secrets: Any | Unset = UNSET


class ConfigBody(msgspec.Struct, forbid_unknown_fields=True):
    config: dict[str, Any] = {}
    secrets: dict[str, Any] = {}


def _as_dict(body: msgspec.Struct) -> dict[str, Any]:
    return msgspec.structs.asdict(body)


class ChannelWrites(BaseHandler):
    def nudge(self) -> None:
        """The notifier routes with the changed channel at once rather than on its next pass."""
        self.hub.notifier.nudge()

    async def send_test(self, spec: Any) -> dict[str, Any]:
        from hark_fleet.hub.notify.send import send_test

        allow_private = await self.hub.db.run(notification_channels.allow_private_destinations)
        attempt = await send_test(spec, allow_private=allow_private, hub_url=self.hub.public_url)
        return notification_channels.test_result(attempt)


class ChannelsHandler(ChannelWrites, ListHandler):
    """`GET /api/v1/notification-channels` and `POST` to create one (201; a webhook's signing secret shown once)."""

    spec = CHANNEL_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = _as_dict(self.parse_body(ChannelBody))
        created = await self.hub.db.run(notification_channels.create_channel, self.actor, self.hub.secrets, self.scope, body)
        self.nudge()
        self.write_data(created, 201)


class ChannelFacetsHandler(FacetsHandler):
    spec = CHANNEL_LIST
    permissions = {"get": READ}


class ChannelExportHandler(ExportHandler):
    spec = CHANNEL_LIST
    permissions = {"get": READ, "post": READ}


class ChannelHandler(ChannelWrites):
    """`GET|PATCH|DELETE /api/v1/notification-channels/{id}`."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(notification_channels.channel_detail, self.scope, id, self.principal))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(ChannelPatchBody)
        self.write_data(await self.hub.db.run(notification_channels.update_channel, self.actor, self.scope, id, changes))
        self.nudge()

    async def delete(self, id: str) -> None:
        await self.hub.db.run(notification_channels.delete_channel, self.actor, self.scope, id)
        self.nudge()
        self.write_no_content()


class ChannelActionsHandler(BaseHandler):
    """`GET /api/v1/notification-channels/{id}/actions`: what the caller may do to this channel now."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(notification_channels.channel_detail, self.scope, id, self.principal)
        self.write_data(detail["actions"])


class ChannelConfigHandler(ChannelWrites):
    """`PUT /api/v1/notification-channels/{id}/config`: replace config and secrets whole (webhook: a new signing secret)."""

    permissions = {"put": MANAGE}

    async def put(self, id: str) -> None:
        body = _as_dict(self.parse_body(ConfigBody))
        changed = await self.hub.db.run(notification_channels.replace_config, self.actor, self.hub.secrets, self.scope, id, body)
        self.nudge()
        self.write_data(changed)


class ChannelTestUnsavedHandler(ChannelWrites):
    """`POST /api/v1/notification-channels/test`: send a test message to a configuration without saving it."""

    permissions = {"post": MANAGE}

    async def post(self) -> None:
        body = _as_dict(self.parse_body(ChannelTestBody))
        spec = await self.hub.db.run(notification_channels.unsaved_spec, self.scope, self.hub.secrets, body)
        answer = await self.send_test(spec)
        await self.hub.db.run(notification_channels.audit_unsaved_test, self.actor, spec.kind, body.get("channel_id"), answer)
        self.write_data(answer)


class ChannelTestHandler(ChannelWrites):
    """`POST /api/v1/notification-channels/{id}/test`: send a test message to the saved channel; kept as `last_test`."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        spec = await self.hub.db.run(notification_channels.saved_spec, self.scope, self.hub.secrets, id)
        answer = await self.send_test(spec)
        last = await self.hub.db.run(notification_channels.store_test, self.actor, self.scope, id, answer, utcnow())
        self.write_data({**answer, "at": last["at"]})
