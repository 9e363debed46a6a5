"""Wording every format shares: single lines, clipping, the headline, where, since, the capped storm list, the link.

Plus the whole message as plain text and as HTML, for the formats that send those (Matrix, ntfy, email).
"""

from __future__ import annotations

from datetime import UTC
from html import escape

from hark_fleet.hub.notify.message import Item, Message

MAX_ITEMS = 10  # a storm lists this many items, then "and N more"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def line(value: str | None) -> str:
    """One line of text: every CR, LF and other control character becomes a space."""
    if not value:
        return ""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def since_iso(message: Message) -> str:
    since = message.since if message.since.tzinfo else message.since.replace(tzinfo=UTC)
    return since.astimezone(UTC).isoformat().replace("+00:00", "Z")


def since_text(message: Message) -> str:
    since = message.since if message.since.tzinfo else message.since.replace(tzinfo=UTC)
    return since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def where(item: Item) -> str:
    """'Stage left, channel 2': the node and channel an item is about ('' when it names neither, e.g. the hub)."""
    parts = []
    if item.node_name or item.node_id:
        parts.append(line(item.node_name or item.node_id))
    if item.channel:
        parts.append(f"channel {line(item.channel)}")
    return ", ".join(parts)


def headline(message: Message) -> str:
    """The one-line title, marked 'Resolved:' for a resolution."""
    title = line(message.title) or line(message.kind)
    return title if message.opened else f"Resolved: {title}"


def status(message: Message) -> str:
    return "opened" if message.opened else "resolved"


def listed(message: Message) -> tuple[tuple[Item, ...], int]:
    """The items to list and how many more are left off."""
    return message.items[:MAX_ITEMS], max(0, len(message.items) - MAX_ITEMS)


def context(message: Message) -> str:
    """'Site Main hall · since 2026-12-06 17:00 UTC · 50 conditions'."""
    parts = []
    if message.site:
        parts.append(f"Site {line(message.site)}")
    parts.append(f"{'since' if message.opened else 'began'} {since_text(message)}")
    if len(message.items) > 1:
        parts.append(f"{len(message.items)} conditions")
    return " · ".join(parts)


def item_text(item: Item) -> str:
    w = where(item)
    return f"{line(item.title)} ({w})" if w else line(item.title)


def link(message: Message) -> str | None:
    """The console page for the message (or its only item)."""
    if message.url:
        return message.url
    return message.items[0].url if len(message.items) == 1 else None


def plain(message: Message) -> str:
    """The whole message as plain text: headline, context, explanation, list, link."""
    out = [headline(message), context(message)]
    if message.text.strip():
        out.append(message.text.replace("\r\n", "\n").replace("\r", "\n").strip())
    shown, more = listed(message)
    for item in shown:
        out.append(f"- {item_text(item)}" + (f" {line(item.url)}" if item.url and len(message.items) > 1 else ""))
    if more:
        out.append(f"and {more} more")
    url = link(message)
    if url:
        out.append(f"Console: {line(url)}")
    return "\n".join(out)


def html_fragment(message: Message) -> str:
    """The message as HTML (every field escaped): headline and context, text, the capped list, the link."""
    parts = [f"<p><strong>{escape(headline(message))}</strong><br>{escape(context(message))}</p>"]
    if message.text:
        parts.append(f"<p>{escape(message.text.strip()).replace(chr(10), '<br>')}</p>")
    shown, more = listed(message)
    if shown:
        lis = "".join(
            f'<li><a href="{escape(i.url)}">{escape(item_text(i))}</a></li>' if i.url else f"<li>{escape(item_text(i))}</li>"
            for i in shown
        )
        parts.append(f"<ul>{lis}</ul>")
    if more:
        parts.append(f"<p>and {more} more</p>")
    url = link(message)
    if url:
        parts.append(f'<p><a href="{escape(url)}">Open in the console</a></p>')
    return "".join(parts)
