"""What was sent (my notifications), each channel's delivery log, and the notification settings (issue 21)."""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler, stream_export
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.notify import kinds, subscriptions
from hark_fleet.hub.services import notifications, notify_outbox, notify_settings
from hark_fleet.hub.services.listing import parse_export_format, parse_list_request
from hark_fleet.hub.services.notifications import DELIVERY_LIST, NOTIFICATION_LIST

READ = "notify:read"


def settings_document() -> dict[str, Any]:
    """The settings and, for the console's editors, the event kinds, health kinds and channel kinds there are."""
    return {
        **notify_settings.to_api(notify_settings.load()),
        "event_kinds": _described(subscriptions.KNOWN_EVENTS),
        "health_kinds": _described(subscriptions.KNOWN_HEALTH_KINDS),
        "kinds": kinds.kinds_to_api(),
    }


def _described(known: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "description": description} for name, description in known.items()]


class NotifySettingsHandler(HubWideWrites):
    """`GET|PUT /api/v1/settings/notifications`: shared by every site, so changing it needs settings:manage everywhere."""

    permissions = {"get": "settings:read", "put": "settings:manage"}

    async def get(self) -> None:
        self.write_data(await self.hub.db.run(settings_document))

    async def put(self) -> None:
        values = self.parse_body(dict[str, Any])
        await self.hub.db.run(notify_settings.update, self.actor, values)
        self.hub.notifier.nudge()
        self.write_data(await self.hub.db.run(settings_document))


class NotificationsHandler(ListHandler):
    """`GET /api/v1/notifications`: what was sent about the caller's sites, newest first."""

    spec = NOTIFICATION_LIST
    permissions = {"get": READ}

    async def get(self) -> None:
        request = parse_list_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(notifications.notification_page, request, self.scope)
        self.write_page(items, next_cursor)


class NotificationOverviewHandler(BaseHandler):
    """`GET /api/v1/notifications/overview`: the outbox in figures for the caller's sites (and, for a caller
    who sees every site, how many sends are in flight and how many notices the intake had to drop)."""

    permissions = {"get": READ}

    async def get(self) -> None:
        figures = await self.hub.db.run(notify_outbox.overview, None, self.scope)
        if self.scope.sites is None and not self.scope.hidden:
            live = self.hub.notifier.overview()
            figures = {**figures, "in_flight": live.get("in_flight", 0), "dropped_notices": live.get("dropped_notices", 0)}
        self.write_data(figures)


class NotificationFacetsHandler(FacetsHandler):
    spec = NOTIFICATION_LIST
    permissions = {"get": READ}


class NotificationExportHandler(ExportHandler):
    spec = NOTIFICATION_LIST
    permissions = {"get": READ, "post": READ}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        fmt = parse_export_format(args)
        request = parse_list_request(self.spec, args, ids)
        batches = notifications.notification_export_batches(request, self.scope)
        await stream_export(self, fmt, self.spec.export_columns, batches, "notifications")


class NotificationHandler(BaseHandler):
    """`GET /api/v1/notifications/{id}`: one notification, its channel, what it said and every attempt."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(notifications.notification_detail, self.scope, id))


class ChannelDeliveriesHandler(BaseHandler):
    """`GET /api/v1/notification-channels/{id}/deliveries`: the channel's delivery attempts, newest first."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        args = self.query_args()
        if "channel_id" in args:
            raise InvalidRequest(
                "Some query parameters are invalid.", fields={"channel_id": "unknown filter (the path names the channel)"}
            )
        request = parse_list_request(DELIVERY_LIST, args)
        items, next_cursor = await self.hub.db.run(notifications.channel_deliveries, self.scope, id, request)
        self.write_page(items, next_cursor)
