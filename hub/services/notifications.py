"""What was sent (issue 21): the outbox's notifications as a list per caller's sites, and each channel's delivery log.

Read-only: the notifier writes `Notification` and `NotificationDelivery` rows. A notification takes the
site of what it is about; one about the hub itself (site None) is seen only by callers on every site.
A channel's delivery log is seen by whoever sees the channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.clock import iso, parse_iso
from hark_fleet.hub.db.models import Notification, NotificationChannel, NotificationDelivery
from hark_fleet.hub.services import query
from hark_fleet.hub.services.listing import Filter, ListRequest, ListSpec, export_batches, fetch_page, get_scoped, one_of

STATES = ("queued", "sending", "retrying", "delivered", "failed")
SEVERITIES = ("info", "warning", "critical")
OUTCOMES = ("delivered", "retry", "failed")

Page = tuple[list[dict[str, Any]], str | None]


def notification_to_api(row: Notification, channel_name: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel_id": row.channel_id,
        "channel_name": channel_name,
        "site": row.site,
        "kind": row.kind,
        "severity": row.severity,
        "opened": row.opened,
        "thread_key": row.thread_key,
        "title": row.title,
        "item_count": row.item_count,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at),
        "first_attempt_at": iso(row.first_attempt_at),
        "delivered_at": iso(row.delivered_at),
        "last_error": row.last_error,
        "deferred_reason": row.deferred_reason,
        "created_at": iso(row.created_at),
    }


def delivery_to_api(row: NotificationDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel_id": row.channel_id,
        "notification_id": row.notification_id,
        "attempt": row.attempt,
        "test": row.test,
        "at": iso(row.at),
        "outcome": row.outcome,
        "latency_ms": row.latency_ms,
        "response_code": row.response_code,
        "response_message": row.response_message,
    }


NOTIFICATION_LIST = ListSpec(
    model=Notification,
    serialize=notification_to_api,  # channel_name filled in per page by `with_channel_names`
    filters=(
        Filter("state", Notification.state, one_of(STATES)),
        Filter("kind", Notification.kind),
        Filter("severity", Notification.severity, one_of(SEVERITIES)),
        Filter("channel_id", Notification.channel_id),
        Filter("site", Notification.site),
        Filter("opened", Notification.opened, query.boolean),
    ),
    search=(Notification.title,),
    time_field=Notification.created_at,
    site_field=Notification.site,
    descending=True,
    export_columns=(
        "id",
        "channel_id",
        "channel_name",
        "site",
        "kind",
        "severity",
        "opened",
        "title",
        "item_count",
        "state",
        "attempts",
        "first_attempt_at",
        "delivered_at",
        "last_error",
        "deferred_reason",
        "created_at",
    ),
)

DELIVERY_LIST = ListSpec(
    model=NotificationDelivery,
    serialize=delivery_to_api,
    filters=(
        Filter("channel_id", NotificationDelivery.channel_id, facet=False),  # set from the path
        Filter("outcome", NotificationDelivery.outcome, one_of(OUTCOMES)),
        Filter("test", NotificationDelivery.test, query.boolean),
    ),
    time_field=NotificationDelivery.at,
    descending=True,
)


def channel_names(channel_ids: Iterable[str]) -> dict[str, str]:
    """The names of the channels that still exist among `channel_ids`, in one query."""
    wanted = sorted(set(channel_ids))
    if not wanted:
        return {}
    rows = NotificationChannel.select(NotificationChannel.id, NotificationChannel.name).where(NotificationChannel.id.in_(wanted))
    return {row.id: row.name for row in rows}


def with_channel_names(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = channel_names(item["channel_id"] for item in items)
    for item in items:
        item["channel_name"] = names.get(item["channel_id"])
    return items


def notification_page(request: ListRequest, scope: SiteScope) -> Page:
    items, next_cursor = fetch_page(NOTIFICATION_LIST, request, scope)
    return with_channel_names(items), next_cursor


def notification_export_batches(request: ListRequest, scope: SiteScope) -> Callable[[str | None], Page]:
    next_batch = export_batches(NOTIFICATION_LIST, request, scope)

    def batch(after: str | None) -> Page:
        rows, last = next_batch(after)
        return with_channel_names(rows), last

    return batch


def notification_detail(scope: SiteScope, notification_id: str) -> dict[str, Any]:
    """One notification in the caller's sites (else 404): its channel, what it said, and every attempt oldest first."""
    row: Notification = get_scoped(Notification, notification_id, Notification.site, scope)
    channel = NotificationChannel.get_or_none(NotificationChannel.id == row.channel_id)
    detail = notification_to_api(row, channel.name if channel is not None else None)
    message = row.message if isinstance(row.message, dict) else {}
    attempts = NotificationDelivery.select().where(NotificationDelivery.notification_id == row.id)
    detail.update(
        channel_kind=channel.kind if channel is not None else None,
        since=_time(message.get("since")),
        url=message.get("url"),
        text=message.get("text", ""),
        items=[_item(item) for item in message.get("items", ()) if isinstance(item, dict)],
        deliveries=[delivery_to_api(d) for d in attempts.order_by(NotificationDelivery.id)],
    )
    return detail


def _time(text: Any) -> str | None:
    """A message's stored time in the API's form (UTC with `Z`)."""
    try:
        return iso(parse_iso(text)) if isinstance(text, str) else None
    except ValueError:
        return None


def _item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item.get(name) for name in ("title", "node_id", "node_name", "channel", "url")}


def channel_deliveries(scope: SiteScope, channel_id: str, request: ListRequest) -> Page:
    """A page of a channel's delivery attempts, newest first; 404 when the channel is not in the caller's sites."""
    get_scoped(NotificationChannel, channel_id, NotificationChannel.site, scope)
    request = dataclasses.replace(request, filters={**request.filters, "channel_id": (channel_id,)})
    return fetch_page(DELIVERY_LIST, request, ALL_SITES)  # the channel's scope decided who may read its log
