"""What a notification says, before any provider's format: what happened, where, since when, and a link.

The formatters (`hub.notify.formats`) turn one `Message` into each provider's request body. A `Message`
is either one condition or a storm (several of one kind at one site, `items`), an opening or a resolution;
a resolution names the opening's `thread_key` so providers that can thread (Slack, Matrix, Google Chat)
reply to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class Item:
    """One condition in a message: the node (or the hub) it is about, and what it says."""

    title: str  # e.g. "Stage left: input silent on channel 2"
    node_id: str | None = None
    node_name: str | None = None
    channel: str | None = None
    url: str | None = None  # the console page of the node or event


@dataclass(frozen=True, slots=True)
class Message:
    """One notification to send: an opening or a resolution, of one condition or a storm of them."""

    kind: str  # the event kind, e.g. "health.opened", "node.offline"
    title: str  # one line: "3 boxes of Main hall went offline"
    severity: Severity
    opened: bool  # False: a resolution
    site: str | None
    since: datetime  # when the condition began (UTC)
    thread_key: str  # the opening's key; a resolution carries the same to thread with it
    items: tuple[Item, ...] = field(default_factory=tuple)  # one for a single condition, several for a storm
    url: str | None = None  # the console page to look at
    text: str = ""  # an optional longer explanation


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, for the outbox row (`Notification.message`)."""
    return {
        "kind": message.kind,
        "title": message.title,
        "severity": message.severity,
        "opened": message.opened,
        "site": message.site,
        "since": message.since.isoformat(),
        "thread_key": message.thread_key,
        "items": [
            {"title": i.title, "node_id": i.node_id, "node_name": i.node_name, "channel": i.channel, "url": i.url}
            for i in message.items
        ],
        "url": message.url,
        "text": message.text,
    }


def message_from_dict(data: dict[str, Any]) -> Message:
    """The message `message_to_dict` made."""
    since = datetime.fromisoformat(data["since"])
    return Message(
        kind=data["kind"],
        title=data["title"],
        severity=data["severity"],
        opened=bool(data["opened"]),
        site=data.get("site"),
        since=since if since.tzinfo else since.replace(tzinfo=UTC),
        thread_key=data["thread_key"],
        items=tuple(Item(**item) for item in data.get("items", ())),
        url=data.get("url"),
        text=data.get("text", ""),
    )
