"""Slack incoming webhook body: Block Kit with a plain `text` fallback (https://api.slack.com/block-kit).

Limits kept: header text 150 characters, section text 3000, context element 2000, button text 75, at most
50 blocks. A resolution given the opening's `thread_ts` replies in its thread.
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.notify.formats._wording import clip, headline, link, listed, since_text, status, where
from hark_fleet.hub.notify.message import Message

HEADER_MAX = 150
SECTION_MAX = 3000
CONTEXT_MAX = 2000
TEXT_MAX = 3000


def escape(text: str) -> str:
    """Slack mrkdwn escaping of &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(message: Message, thread_ts: str | None = None) -> dict[str, Any]:
    title = ("✅ " if not message.opened else "") + headline(message)
    lines = []
    if message.text:
        lines.append(escape(message.text))
    shown, more = listed(message)
    if len(message.items) > 1:
        lines.append(f"*{len(message.items)} affected:*")
    for item in shown:
        place = where(item)
        entry = f"• {escape(item.title)}" + (f" ({escape(place)})" if place else "")
        if item.url and len(message.items) > 1:
            entry += f" <{item.url}|open>"
        lines.append(entry)
    if more:
        lines.append(f"…and {more} more")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": clip(title, HEADER_MAX)}}]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip("\n".join(lines), SECTION_MAX)}})
    context = f"*{status(message).capitalize()}* · {message.severity}"
    if message.site:
        context += f" · site {escape(message.site)}"
    context += f" · since {since_text(message)} · {escape(message.kind)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(context, CONTEXT_MAX)}]})
    url = link(message)
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in console"}, "url": url}],
            }
        )
    fallback = f"{title} — {message.site or 'hub'}, since {since_text(message)}" + (f" {url}" if url else "")
    out: dict[str, Any] = {"text": clip(escape(fallback), TEXT_MAX), "blocks": blocks}
    if thread_ts and not message.opened:
        out["thread_ts"] = thread_ts
    return out
