"""Telegram Bot API ``sendMessage`` parameters for a notification.

``parse_mode`` is HTML using only tags Telegram allows (``b``, ``i``, ``a href``, ``code``, ``pre``); every
field is HTML-escaped. ``text`` stays within Telegram's 4096 characters: a storm lists a capped number of
items then "and N more", and a long explanation is cut. A resolution given the opening's message id replies
to it (``reply_parameters``, allowed to send even if that message is gone).
"""

from __future__ import annotations

from html import escape
from typing import Any

from hark_fleet.hub.notify.formats._wording import clip, context, headline, item_text, link, listed
from hark_fleet.hub.notify.message import Message

MAX_TEXT = 4096


def _text(message: Message) -> str:
    head = f"<b>{escape(clip(headline(message), 300))}</b>\n<i>{escape(context(message))}</i>"
    url = link(message)
    tail = f'\n<a href="{escape(url)}">Open in the console</a>' if url and len(url) <= 2000 else ""
    shown, more = listed(message)
    lines = [f"• {escape(clip(item_text(i), 200))}" for i in shown]
    if more:
        lines.append(f"and {more} more")
    items = "\n" + "\n".join(lines) if lines else ""
    room = MAX_TEXT - len(head) - len(tail) - len(items) - 2
    explanation = ""
    if message.text.strip() and room > 20:
        # Cut before escaping so an entity is never split.
        raw = message.text.strip()
        while len(escape(raw)) > room:
            raw = raw[: max(0, len(raw) - max(1, len(escape(raw)) - room))]
        explanation = "\n" + escape(raw)
    return head + explanation + items + tail


def params(message: Message, chat_id: str, reply_to_message_id: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chat_id": chat_id,
        "text": _text(message),
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    if reply_to_message_id is not None and not message.opened:
        out["reply_parameters"] = {"message_id": reply_to_message_id, "allow_sending_without_reply": True}
    return out
