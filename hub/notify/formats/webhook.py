"""hark's own webhook JSON for a notification.

The body (``"version": 1``) is::

    {
      "version": 1,
      "kind": "health.opened",          # the event kind
      "title": "3 boxes of Main hall went offline",
      "severity": "info" | "warning" | "critical",
      "opened": true,                   # false for a resolution
      "site": "Main hall" | null,
      "since": "2026-12-06T17:00:00Z",  # when the condition began, ISO 8601 UTC
      "url": "https://hub/console/..." | null,
      "thread_key": "…",                # a resolution carries its opening's key
      "text": "",                       # an optional longer explanation
      "count": 3,                       # len(items); a storm has several
      "items": [{"title": ..., "node_id": ..., "node_name": ..., "channel": ..., "url": ...}, ...]
    }

Every item is listed (JSON consumers do their own capping); titles are single lines. Fields may be added
in version 1; a change of meaning bumps ``version``.

The request is ``POST`` with ``Content-Type: application/json`` and these headers:
``X-Hark-Signature`` (HMAC-SHA256 over timestamp and body; how to verify it is in `hub.notify.signing`),
``X-Hark-Notification`` (the notification's id: the same on every retry, so a receiver can drop
duplicates) and ``X-Hark-Event`` (the event kind). Any 2xx answer is a delivery; 429 and 5xx are retried
(honouring ``Retry-After``); another 4xx fails at once; redirects are not followed.
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.notify.formats._wording import line, since_iso
from hark_fleet.hub.notify.message import Message

VERSION = 1


def body(message: Message) -> dict[str, Any]:
    return {
        "version": VERSION,
        "kind": message.kind,
        "title": line(message.title),
        "severity": message.severity,
        "opened": message.opened,
        "site": message.site,
        "since": since_iso(message),
        "url": message.url,
        "thread_key": message.thread_key,
        "text": message.text,
        "count": len(message.items),
        "items": [
            {
                "title": line(item.title),
                "node_id": item.node_id,
                "node_name": item.node_name,
                "channel": item.channel,
                "url": item.url,
            }
            for item in message.items
        ],
    }
