"""Each HTTP provider's request for a notification, and what its answer says (the message's id, the error).

Pure: `request` builds the method, URL, headers and body from a channel's settings and a `Message`
(the bodies come from `hub.notify.formats`); `answer` reads a response: the provider's id of the sent
message (Discord's with `?wait=true`, Matrix's event_id, Telegram's message_id, Google Chat's message
name, ntfy's id), the provider's own error text, and a `Retry-After` made from the body when a provider
says it there instead (Matrix `retry_after_ms`, Telegram `parameters.retry_after`).

Webhook requests carry these headers (documented for receivers):
`X-Hark-Signature` (see `hub.notify.signing`), `X-Hark-Notification` (the notification's id, the same on
every retry, so a receiver can drop duplicates) and `X-Hark-Event` (the event kind).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from hark_fleet.hub.notify import signing
from hark_fleet.hub.notify.formats import discord, google_chat, matrix, ntfy, slack, teams, telegram, webhook
from hark_fleet.hub.notify.message import Message

TELEGRAM_API = "https://api.telegram.org"
JSON = "application/json"


class MissingSetting(ValueError):
    """A channel's configuration lacks a setting its kind needs (`config.<name>` or `secrets.<name>`)."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    provider_ref: str | None
    error: str | None  # the provider's error text (unredacted), None on success
    retry_after: str | None  # a Retry-After value taken from the body, when the headers carry none


def _need(values: Mapping[str, Any], name: str, where: str) -> str:
    value = values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MissingSetting(f"{where}.{name} is not set")
    return str(value).strip()


def _json(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def request(
    kind: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    message: Message,
    notification_id: str,
    reply_ref: str | None,
) -> Request:
    """The HTTP request that delivers `message` on a channel of `kind`."""
    if kind == "webhook":
        body = _json(webhook.body(message))
        signature = signing.sign(_need(secrets, "signing_secret", "secrets"), int(time.time()), body)
        headers = {
            "Content-Type": JSON,
            signing.SIGNATURE_HEADER: signature,
            "X-Hark-Notification": notification_id,
            "X-Hark-Event": message.kind,
        }
        return Request("POST", _need(config, "url", "config"), headers, body)
    if kind == "slack":
        # An incoming webhook answers "ok" and no message ts, so a resolution cannot thread; it says "Resolved:".
        return Request("POST", _need(secrets, "webhook_url", "secrets"), {"Content-Type": JSON}, _json(slack.body(message)))
    if kind == "discord":
        url = _with_query(_need(secrets, "webhook_url", "secrets"), wait="true")
        return Request("POST", url, {"Content-Type": JSON}, _json(discord.body(message)))
    if kind == "teams":
        return Request("POST", _need(secrets, "webhook_url", "secrets"), {"Content-Type": JSON}, _json(teams.body(message)))
    if kind == "google_chat":
        url = _with_query(_need(secrets, "webhook_url", "secrets"), messageReplyOption=google_chat.REPLY_OPTION)
        return Request("POST", url, {"Content-Type": f"{JSON}; charset=UTF-8"}, _json(google_chat.body(message)))
    if kind == "matrix":
        base = _need(config, "homeserver_url", "config").rstrip("/")
        room = quote(_need(config, "room_id", "config"), safe="")
        url = f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{quote(notification_id, safe='')}"
        headers = {"Content-Type": JSON, "Authorization": f"Bearer {_need(secrets, 'access_token', 'secrets')}"}
        return Request("PUT", url, headers, _json(matrix.body(message, reply_to_event_id=reply_ref)))
    if kind == "telegram":
        base = str(config.get("api_url") or TELEGRAM_API).strip().rstrip("/")
        url = f"{base}/bot{_need(secrets, 'bot_token', 'secrets')}/sendMessage"
        reply_to = int(reply_ref) if reply_ref and reply_ref.lstrip("-").isdigit() else None
        params = telegram.params(message, _need(config, "chat_id", "config"), reply_to_message_id=reply_to)
        return Request("POST", url, {"Content-Type": JSON}, _json(params))
    if kind == "ntfy":
        base = _need(config, "server_url", "config").rstrip("/")
        url = f"{base}/{quote(_need(config, 'topic', 'config'), safe='')}"
        headers, text = ntfy.request(message)
        headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        token = secrets.get("token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return Request("POST", url, headers, text)
    raise MissingSetting(f"kind {kind!r} is not an HTTP channel kind")


def answer(kind: str, status: int, body: bytes) -> Answer:
    """What a provider's response says: its id of the message, or its error (when not 2xx)."""
    data = _parse_json(body)
    ok = 200 <= status < 300
    ref = _reference(kind, data) if ok else None
    error = None if ok else _error_text(data, body)
    return Answer(ref, error, _retry_after(data) if status == 429 or status >= 500 else None)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _reference(kind: str, data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    value: Any = None
    if kind == "discord":
        value = data.get("id")
    elif kind == "matrix":
        value = data.get("event_id")
    elif kind == "telegram":
        result = data.get("result")
        value = result.get("message_id") if isinstance(result, dict) else None
    elif kind == "google_chat":
        value = data.get("name")
    elif kind == "ntfy":
        value = data.get("id")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _error_text(data: Any, body: bytes) -> str:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # Google: {"error": {"code", "message", "status"}}; Teams likewise
            text = " ".join(str(error[k]) for k in ("status", "code", "message") if error.get(k) not in (None, ""))
            if text:
                return text
        parts = [
            str(data[k])
            for k in ("errcode", "error", "description", "message", "code")  # Matrix, ntfy; Telegram; Discord
            if isinstance(data.get(k), str | int) and not isinstance(data.get(k), bool) and str(data.get(k))
        ]
        if parts:
            return ": ".join(parts)
    text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:500] or "(empty body)"


def _retry_after(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    seconds: Any = None
    if isinstance(data.get("retry_after_ms"), int | float):  # Matrix M_LIMIT_EXCEEDED
        seconds = data["retry_after_ms"] / 1000.0
    elif isinstance(data.get("parameters"), dict) and isinstance(data["parameters"].get("retry_after"), int | float):
        seconds = data["parameters"]["retry_after"]  # Telegram
    elif isinstance(data.get("retry_after"), int | float):  # Discord
        seconds = data["retry_after"]
    if seconds is None or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        return None
    return str(math.ceil(seconds))
