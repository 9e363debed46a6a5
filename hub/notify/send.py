"""Deliver one notification on one channel: one attempt, its outcome, and nothing secret in what it says.

`deliver` checks the destination before every attempt (`hub.notify.outbound`: metadata and link-local
always refused, private and loopback unless allowed) and connects only to the addresses it checked
(`http_send`, `smtp_send`). It never retries: the caller judges the `Attempt` with `retry.classify`
(2xx delivered; no response, 429 and 5xx retried, honouring `Retry-After`; other 4xx failed; `refused`
failed at once). Every secret value of the channel, and the path of a webhook URL, is cut out of
`Attempt.error` and `Attempt.message`.

Threading: Matrix replies to the opening's event (`reply_ref` = its event_id), Telegram to its message
(`reply_ref` = message_id), email by Message-ID (`provider_ref`); Slack, Discord, Teams and Google Chat
resolutions say "Resolved:" and name the condition (incoming webhooks give no id to reply to, but for
Discord's with `?wait=true`, which is kept as `provider_ref`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from hark_fleet.hub.notify import http_send, provider_http, smtp_send
from hark_fleet.hub.notify.formats import email
from hark_fleet.hub.notify.message import Message
from hark_fleet.hub.notify.outbound import DestinationRefused, DestinationUnresolved

TEST_TITLE = "Test from hark: this channel works"
TEST_KIND = "notify.test"
ERROR_MAX = 500
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel as the sender needs it: its kind, its shown configuration and its (unsealed) secrets."""

    id: str | None
    name: str
    kind: str
    config: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome, in `retry.classify`'s terms (SMTP: 2xx as is, 4xx as 503, 5xx as 400)."""

    status: int | None  # HTTP status, or the SMTP outcome as above; None: no response
    error: str | None  # transport error or the provider's error message (redacted, <= 500 chars)
    headers: dict[str, str]  # response headers (Retry-After)
    latency_ms: float
    refused: bool = False  # the destination was refused (outbound policy) or the configuration is incomplete
    provider_ref: str | None = None  # the provider's id of the sent message
    message: str = ""  # short human text for the delivery log


async def deliver(
    spec: ChannelSpec,
    message: Message,
    *,
    notification_id: str,
    reply_ref: str | None,
    allow_private: bool,
    timeout_s: float = 10.0,
) -> Attempt:
    """Make one attempt at sending `message` on the channel `spec`."""
    started = time.perf_counter()
    try:
        if spec.kind == "email":
            attempt = await _deliver_email(spec, message, allow_private, timeout_s)
        else:
            attempt = await _deliver_http(spec, message, notification_id, reply_ref, allow_private, timeout_s)
    except DestinationRefused as err:
        attempt = Attempt(None, err.reason, {}, _since(started), refused=True, message=f"refused: {err.reason}")
    except DestinationUnresolved as err:  # retried like a timeout: the resolver may be back by then
        attempt = Attempt(None, err.reason, {}, _since(started), message=f"not sent: {err.reason}")
    except (ValueError, TypeError) as err:  # an incomplete or malformed configuration (MissingSetting among them)
        attempt = Attempt(None, str(err), {}, _since(started), refused=True, message=f"not sent: {err}")
    return _redacted(attempt, redactor(spec))


async def send_test(spec: ChannelSpec, *, allow_private: bool, hub_url: str | None) -> Attempt:
    """Send a clearly labelled test message on the channel (saved or not)."""
    message = Message(
        kind=TEST_KIND,
        title=TEST_TITLE,
        severity="info",
        opened=True,
        site=None,
        since=datetime.now(UTC),
        thread_key=f"test:{secrets.token_hex(8)}",
        url=hub_url or None,
        text="A test sent from the hub to check this channel's settings. Nothing needs doing.",
    )
    return await deliver(
        spec, message, notification_id=f"test_{secrets.token_hex(8)}", reply_ref=None, allow_private=allow_private
    )


async def _deliver_http(
    spec: ChannelSpec, message: Message, notification_id: str, reply_ref: str | None, allow_private: bool, timeout_s: float
) -> Attempt:
    request = provider_http.request(spec.kind, spec.config, spec.secrets, message, notification_id, reply_ref)
    destination = await http_send.checked(request.url, allow_private)
    response = await http_send.send(destination, request.method, request.url, request.headers, request.body, timeout_s)
    if response.status is None:
        return Attempt(None, response.error, {}, response.latency_ms, message=f"no response: {response.error}")
    answer = provider_http.answer(spec.kind, response.status, response.body)
    headers = dict(response.headers)
    if answer.retry_after and not any(k.lower() == "retry-after" for k in headers):
        headers["Retry-After"] = answer.retry_after
    text = f"HTTP {response.status}"
    error = answer.error
    if 300 <= response.status < 400:
        error = f"redirect not followed{': ' + error if error and error != '(empty body)' else ''}"
    if error:
        text += f": {error}"
    return Attempt(response.status, error, headers, response.latency_ms, provider_ref=answer.provider_ref, message=text)


async def _deliver_email(spec: ChannelSpec, message: Message, allow_private: bool, timeout_s: float) -> Attempt:
    smtp = smtp_send.server(spec.config, spec.secrets)
    if not smtp.host:
        raise provider_http.MissingSetting("config.host is not set")
    sender = str(spec.config.get("sender") or "").strip()
    if not sender:
        raise provider_http.MissingSetting("config.sender is not set")
    recipients = spec.config.get("recipients") or []
    if isinstance(recipients, str):
        recipients = [r.strip() for r in recipients.split(",")]
    recipients = [str(r).strip() for r in recipients if str(r).strip()]
    if not recipients:
        raise provider_http.MissingSetting("config.recipients is empty")
    destination = await smtp_send.checked(smtp, allow_private)
    mail = email.build(message, sender, recipients)
    mail["Date"] = format_datetime(datetime.now(UTC))
    result = await smtp_send.send(smtp, destination, mail, sender, recipients, timeout_s)
    ref = str(mail["Message-ID"]) if result.status is not None and 200 <= result.status < 300 else None
    return Attempt(result.status, result.error, {}, result.latency_ms, provider_ref=ref, message=result.message)


def redactor(spec: ChannelSpec) -> Callable[[str], str]:
    """A function cutting every secret value of `spec` (and a webhook URL's path) out of a text."""
    values: set[str] = set()
    for value in spec.secrets.values():
        if isinstance(value, str) and value:
            values.update({value, value.strip(), quote(value, safe=""), quote(value)})
            values.update(_url_parts(value))
    if spec.kind == "webhook" and isinstance(spec.config.get("url"), str):
        values.update(_url_parts(spec.config["url"]))
    ordered = sorted((v for v in values if v), key=len, reverse=True)
    if not ordered:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(v) for v in ordered))
    return lambda text: pattern.sub(REDACTED, text)


def _url_parts(value: str) -> set[str]:
    """The path and query of a URL, and those path segments that look like tokens (digits, or 16+ characters)."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return set()
    if not parts.scheme or not parts.netloc:
        return set()
    out = {p for p in (parts.path, parts.query) if len(p) > 1}
    out.update(s for s in parts.path.split("/") if len(s) >= 16 or (len(s) >= 4 and any(c.isdigit() for c in s)))
    return out


def _redacted(attempt: Attempt, redact: Callable[[str], str]) -> Attempt:
    error = redact(attempt.error)[:ERROR_MAX] if attempt.error else attempt.error
    headers = {name: redact(value) for name, value in attempt.headers.items()}
    return replace(attempt, error=error, message=redact(attempt.message)[:ERROR_MAX], headers=headers)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)
