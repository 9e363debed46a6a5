"""Discord webhook body: one embed (https://discord.com/developers/docs/resources/webhook#execute-webhook).

Limits kept: title 256, description 4096, at most 25 fields, field name 256 and value 1024, footer 2048,
and 6000 characters over the whole embed. Colour by severity; a resolution is green.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hark_fleet.hub.notify.formats._wording import clip, headline, link, listed, since_text, status, where
from hark_fleet.hub.notify.message import Message

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
TOTAL_MAX = 6000

COLORS = {"info": 0x3498DB, "warning": 0xF1C40F, "critical": 0xE74C3C}
RESOLVED_COLOR = 0x2ECC71


def escape(text: str) -> str:
    """Discord markdown characters escaped so titles show as written."""
    for ch in "\\*_~`|>[]()":
        text = text.replace(ch, "\\" + ch)
    return text


def body(message: Message) -> dict[str, Any]:
    lines = [escape(message.text)] if message.text else []
    shown, more = listed(message)
    if len(message.items) > 1:
        lines.append(f"**{len(message.items)} affected:**")
    for item in shown:
        place = where(item)
        lines.append(f"• {escape(item.title)}" + (f" ({escape(place)})" if place else ""))
    if more:
        lines.append(f"…and {more} more")
    title = clip(("✅ " if not message.opened else "") + headline(message), TITLE_MAX)
    fields: list[dict[str, Any]] = [
        {"name": "Status", "value": status(message), "inline": True},
        {"name": "Severity", "value": message.severity, "inline": True},
        {"name": "Site", "value": clip(message.site or "hub", FIELD_VALUE_MAX), "inline": True},
        {"name": "Since", "value": since_text(message), "inline": True},
    ]
    if len(message.items) == 1 and where(message.items[0]):
        fields.append({"name": "Where", "value": clip(where(message.items[0]), FIELD_VALUE_MAX), "inline": True})
    footer = clip(message.kind, 2048)
    budget = TOTAL_MAX - len(title) - len(footer) - sum(len(str(f["name"])) + len(str(f["value"])) for f in fields)
    embed: dict[str, Any] = {
        "title": title,
        "description": clip("\n".join(lines), min(DESCRIPTION_MAX, budget)),
        "color": COLORS.get(message.severity, COLORS["info"]) if message.opened else RESOLVED_COLOR,
        "timestamp": message.since.astimezone(UTC).isoformat(),
        "fields": fields[:FIELDS_MAX],
        "footer": {"text": footer},
    }
    url = link(message)
    if url:
        embed["url"] = url
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}
