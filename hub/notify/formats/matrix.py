"""A Matrix ``m.room.message`` event content for a notification.

Critical messages are ``m.text`` (clients notify), everything else ``m.notice``. The plain ``body`` and the
HTML ``formatted_body`` say the same; every field is HTML-escaped. A resolution given the opening's event id
replies to it (``m.relates_to`` / ``m.in_reply_to``).
"""

from __future__ import annotations

from html import escape
from typing import Any

from hark_fleet.hub.notify.formats._wording import context, headline, item_text, link, listed, plain
from hark_fleet.hub.notify.message import Message


def _html(message: Message) -> str:
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


def body(message: Message, reply_to_event_id: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": "m.text" if message.severity == "critical" else "m.notice",
        "body": plain(message),
        "format": "org.matrix.custom.html",
        "formatted_body": _html(message),
    }
    if reply_to_event_id and not message.opened:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to_event_id}}
    return content
