"""An ntfy publish request (``POST`` to the topic URL) for a notification: headers and plain-text body.

Headers: ``Title``, ``Priority`` (critical 5, warning 4, info 3; a resolution 2), ``Tags`` (emoji short
codes ntfy renders, plus the event kind), ``Click`` (the console page). Header values are single-line ASCII:
a value with non-ASCII characters is RFC 2047 encoded (ntfy decodes ``=?UTF-8?B?...?=``), so no field can
inject a header.
"""

from __future__ import annotations

from email.header import Header

from hark_fleet.hub.notify.formats._wording import headline, line, link, plain
from hark_fleet.hub.notify.message import Message

PRIORITY = {"critical": 5, "warning": 4, "info": 3}
TAG = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}


def _ascii(value: str) -> str:
    value = line(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=10_000).encode(linesep=" ").replace("\r", " ").replace("\n", " ")


def request(message: Message) -> tuple[dict[str, str], bytes]:
    tags = ["white_check_mark" if not message.opened else TAG[message.severity], line(message.kind)]
    headers = {
        "Title": _ascii(headline(message)),
        "Priority": str(PRIORITY[message.severity] if message.opened else 2),
        "Tags": ",".join(_ascii(t).replace(",", " ") for t in tags if t),
    }
    url = link(message)
    if url:
        headers["Click"] = _ascii(url)
    return headers, plain(message).encode("utf-8")
