"""An email for a notification: plain text and HTML alternatives, threaded by the condition's key.

Subject ``[hark] <title>`` (``[hark] Resolved: <title>`` for a resolution). The Message-ID of an opening is
derived from ``thread_key``; a resolution gets its own id and names the opening in ``In-Reply-To`` and
``References`` so mail clients thread the two. Every header value from a message field is a single line
(CR/LF and control characters become spaces), so no field can inject a header. ``Date`` is left to the
sender (the time of sending).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from email.message import EmailMessage

from hark_fleet.hub.notify.formats._wording import headline, html_fragment, line, plain
from hark_fleet.hub.notify.message import Message

DOMAIN = "hark.invalid"


def message_id(thread_key: str, opened: bool = True) -> str:
    """The Message-ID of a thread's opening (or, ``opened=False``, of its resolution)."""
    digest = hashlib.sha256(thread_key.encode("utf-8")).hexdigest()[:32]
    return f"<{'open' if opened else 'resolved'}.{digest}@{DOMAIN}>"


def _html(message: Message) -> str:
    return f"<!doctype html><html><body>{html_fragment(message)}</body></html>"


def build(message: Message, sender: str, recipients: Sequence[str]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = f"[hark] {headline(message)}"
    mail["From"] = line(sender)
    mail["To"] = ", ".join(line(r) for r in recipients)
    mail["Message-ID"] = message_id(message.thread_key, message.opened)
    if not message.opened:
        opening = message_id(message.thread_key, True)
        mail["In-Reply-To"] = opening
        mail["References"] = opening
    mail["X-Hark-Kind"] = line(message.kind)
    mail.set_content(plain(message))
    mail.add_alternative(_html(message), subtype="html")
    return mail
