"""Microsoft Teams Workflows webhook body: a message carrying an Adaptive Card 1.4.

https://learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/cards-reference#adaptive-card
Text is plain (TextBlock markdown is a small subset; titles are shown as written).
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.notify.formats._wording import headline, link, listed, since_text, status, where
from hark_fleet.hub.notify.message import Message

COLORS = {"info": "Accent", "warning": "Warning", "critical": "Attention"}


def body(message: Message) -> dict[str, Any]:
    color = COLORS.get(message.severity, "Default") if message.opened else "Good"
    blocks: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": ("✅ " if not message.opened else "") + headline(message),
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
        }
    ]
    if message.text:
        blocks.append({"type": "TextBlock", "text": message.text, "wrap": True})
    facts = [
        {"title": "Status", "value": status(message)},
        {"title": "Severity", "value": message.severity},
        {"title": "Site", "value": message.site or "hub"},
        {"title": "Since", "value": since_text(message)},
        {"title": "Event", "value": message.kind},
    ]
    if len(message.items) == 1 and where(message.items[0]):
        facts.insert(3, {"title": "Where", "value": where(message.items[0])})
    blocks.append({"type": "FactSet", "facts": facts})
    shown, more = listed(message)
    if len(message.items) > 1:
        blocks.append({"type": "TextBlock", "text": f"{len(message.items)} affected:", "weight": "Bolder", "wrap": True})
        for item in shown:
            place = where(item)
            blocks.append(
                {
                    "type": "TextBlock",
                    "text": f"- {item.title}" + (f" ({place})" if place else ""),
                    "wrap": True,
                    "spacing": "None",
                }
            )
        if more:
            blocks.append({"type": "TextBlock", "text": f"…and {more} more", "isSubtle": True, "wrap": True, "spacing": "None"})
    content: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": blocks,
    }
    url = link(message)
    if url:
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open in console", "url": url}]
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}],
    }
