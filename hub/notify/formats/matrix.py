"""A Matrix ``m.room.message`` event content for a notification.

Critical messages are ``m.text`` (clients notify), everything else ``m.notice``. The plain ``body`` and the
HTML ``formatted_body`` say the same; every field is HTML-escaped. A resolution given the opening's event id
replies to it (``m.relates_to`` / ``m.in_reply_to``).
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.notify.formats._wording import html_fragment, plain
from hark_fleet.hub.notify.message import Message


def body(message: Message, reply_to_event_id: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": "m.text" if message.severity == "critical" else "m.notice",
        "body": plain(message),
        "format": "org.matrix.custom.html",
        "formatted_body": html_fragment(message),
    }
    if reply_to_event_id and not message.opened:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to_event_id}}
    return content
