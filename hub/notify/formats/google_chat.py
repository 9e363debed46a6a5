"""Google Chat incoming webhook body: a cardsV2 message with a `text` fallback.

https://developers.google.com/workspace/chat/api/reference/rest/v1/spaces.messages
Threading: the body carries `thread.threadKey` (the message's `thread_key`), so a resolution lands in its
opening's thread. Google Chat only honours it when the caller posts to the webhook URL with
`messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD` added to the query string; the formatter does not
touch the URL.
"""

from __future__ import annotations

from html import escape as html_escape
from typing import Any

from hark_fleet.hub.notify.formats._wording import clip, headline, link, listed, since_text, status, where
from hark_fleet.hub.notify.message import Message

TEXT_MAX = 4096  # keep the message well inside Chat's 32,000-byte limit
REPLY_OPTION = "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"


def escape(text: str) -> str:
    """Card text is a small HTML subset: escape &, < and >."""
    return html_escape(text, quote=False)


def body(message: Message) -> dict[str, Any]:
    title = ("✅ " if not message.opened else "") + headline(message)
    widgets: list[dict[str, Any]] = []
    if message.text:
        widgets.append({"textParagraph": {"text": escape(message.text)}})
    for label, value in (
        ("Status", status(message)),
        ("Severity", message.severity),
        ("Site", message.site or "hub"),
        ("Since", since_text(message)),
    ):
        widgets.append({"decoratedText": {"topLabel": label, "text": escape(value)}})
    if len(message.items) == 1 and where(message.items[0]):
        widgets.append({"decoratedText": {"topLabel": "Where", "text": escape(where(message.items[0]))}})
    shown, more = listed(message)
    if len(message.items) > 1:
        lines = [f"<b>{len(message.items)} affected:</b>"]
        for item in shown:
            place = where(item)
            lines.append(f"• {escape(item.title)}" + (f" ({escape(place)})" if place else ""))
        if more:
            lines.append(f"…and {more} more")
        widgets.append({"textParagraph": {"text": clip("<br>".join(lines), TEXT_MAX)}})
    url = link(message)
    if url:
        widgets.append({"buttonList": {"buttons": [{"text": "Open in console", "onClick": {"openLink": {"url": url}}}]}})
    fallback = f"{title} — {message.site or 'hub'}, since {since_text(message)}" + (f" {url}" if url else "")
    return {
        "text": clip(fallback, TEXT_MAX),
        "cardsV2": [
            {
                "cardId": f"{status(message)}-{message.thread_key}"[:64],
                "card": {
                    "header": {"title": escape(clip(title, 200)), "subtitle": escape(f"{message.kind} · {message.severity}")},
                    "sections": [{"widgets": widgets}],
                },
            }
        ],
        "thread": {"threadKey": message.thread_key},
    }
