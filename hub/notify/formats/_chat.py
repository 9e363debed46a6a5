"""What the chat formats (Slack, Discord, Teams, Google Chat) share: capped storm lists, clipping, the lines of a message."""

from __future__ import annotations

from datetime import UTC

from hark_fleet.hub.notify.message import Item, Message

LIST_CAP = 10  # storm lines shown; the rest become "and N more"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def heading(message: Message) -> str:
    """The one-line title, marked when it is a resolution."""
    return message.title if message.opened else f"Resolved: {message.title}"


def since(message: Message) -> str:
    """When the condition began, in UTC, e.g. "2026-12-06 20:00 UTC"."""
    return message.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def where(item: Item) -> str:
    """The node and channel an item is about, e.g. "Stage left, channel 2" ("" for the hub)."""
    parts = [item.node_name or item.node_id or ""]
    if item.channel:
        parts.append(f"channel {item.channel}")
    return ", ".join(p for p in parts if p)


def shown(message: Message) -> tuple[tuple[Item, ...], int]:
    """The items to list and how many more are left out."""
    return message.items[:LIST_CAP], max(len(message.items) - LIST_CAP, 0)


def link(message: Message) -> str | None:
    """The console page: the message's, else its single item's."""
    if message.url:
        return message.url
    return message.items[0].url if len(message.items) == 1 else None


def status(message: Message) -> str:
    return "opened" if message.opened else "resolved"
