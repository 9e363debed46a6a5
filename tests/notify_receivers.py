"""Real loopback receivers for notifications (issue 21): one HTTP server per provider kind's documented API, and SMTP.

    with Receivers() as r:
        r.trust_signing_secret(secret)            # the webhook's signing secret the hub showed once
        config, secrets = r.channel("slack")      # a channel's config and secrets pointing here
        r.script("webhook", [503, 503, 503, 200]) # the next answers (ints or Answer(status, headers, body, delay_s))
        ...
        r.wait_for("slack", 1)                    # poll until one request was accepted (generous deadline)
        r.accepted("slack"), r.rejected()         # what was accepted; what broke the provider's rules (400, recorded)
        r.smtp, r.smtp_secrets, r.messages()      # the STARTTLS SMTP server's channel config, its password, mail received

Every request is checked against the provider's documented format before anything else: Slack Block Kit
(blocks, their types and text limits), Discord embeds (at most 10; title 256, description 4096, 25 fields,
6000 in all), Teams Workflows (an Adaptive Card attachment, version 1.4 or lower, `$schema`), Google Chat
(`text` or `cardsV2`), Matrix (`PUT .../rooms/{room}/send/m.room.message/{txn}`, Bearer token, msgtype/body/
format/formatted_body, replies to known events; the same txn twice gives the same event_id), Telegram
(`POST /bot<token>/sendMessage`, chat_id, text within 4096 after HTML parsing, parse_mode and its tags),
hark's webhook (`X-Hark-Signature` verified with `hub.notify.signing.verify`, the version 1 body) and ntfy
(`POST /<topic>`, Title, Priority and Tags headers). A request that breaks the rules is answered 400 in the
provider's error shape and recorded as rejected, so a test can assert `r.rejected() == []`; a wrong token
gets the provider's 401/403/404 (also recorded as rejected). A valid request is answered with the provider's
real response shape, unless a scripted answer is queued for that kind.

The HTTP server and the SMTP servers run on one event loop in a background thread, on 127.0.0.1 and free
ports; a hub under test must allow private destinations. SMTP: aiosmtpd with STARTTLS required and AUTH
LOGIN/PLAIN (`r.smtp`), implicit TLS (`r.smtps`), and a plain local relay without TLS or AUTH
(`r.smtp_relay`), all with a throwaway CA and certificate for `localhost` and 127.0.0.1 made with
`cryptography` (`r.ca_pem`). Scripted SMTP answers (`r.script("email", [451, 250])`) are the reply to DATA.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: N811
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hark_fleet.hub.notify import signing
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

KINDS = ("webhook", "slack", "discord", "teams", "google_chat", "matrix", "telegram", "ntfy", "email")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Answer:
    """A scripted answer: the status, extra headers, a body (None: the provider's own for that status), a delay."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay_s: float = 0.0


@dataclass
class Received:
    """One request a receiver got, and what became of it."""

    kind: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    outcome: str  # accepted | rejected | scripted | duplicate
    status: int
    problems: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class Invalid(Exception):
    """The request breaks the provider's rules: answered 400 (or `status`) and recorded as rejected."""

    def __init__(self, problems: list[str] | str, status: int = 400) -> None:
        super().__init__("; ".join([problems] if isinstance(problems, str) else problems))
        self.problems = [problems] if isinstance(problems, str) else problems
        self.status = status


# --- the providers' rules ---------------------------------------------------------------------

SLACK_BLOCK_TYPES = {"header", "section", "context", "actions", "divider", "image", "rich_text", "input", "file", "video"}
TELEGRAM_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
}
CHAT_WIDGETS = {
    "textParagraph",
    "decoratedText",
    "buttonList",
    "image",
    "divider",
    "grid",
    "columns",
    "chipList",
    "selectionInput",
}
CARD_ELEMENTS = {"TextBlock", "FactSet", "Image", "ImageSet", "Container", "ColumnSet", "ActionSet", "RichTextBlock", "Table"}
CARD_ACTIONS = {"Action.OpenUrl", "Action.Submit", "Action.ShowCard", "Action.ToggleVisibility", "Action.Execute"}
NTFY_PRIORITIES = {"1", "2", "3", "4", "5", "min", "low", "default", "high", "max", "urgent"}


def _need(condition: bool, problem: str, problems: list[str]) -> None:
    if not condition:
        problems.append(problem)


def _text_obj(value: Any, where: str, limit: int, problems: list[str], types: tuple[str, ...] = ("plain_text", "mrkdwn")) -> None:
    if not isinstance(value, dict) or value.get("type") not in types:
        problems.append(f"{where} must be a text object of type {' or '.join(types)}")
        return
    text = value.get("text")
    _need(isinstance(text, str) and 0 < len(text) <= limit, f"{where}.text must be 1-{limit} characters", problems)


def check_slack(body: Any) -> list[str]:
    """Slack incoming webhook with Block Kit (https://api.slack.com/reference/block-kit/blocks)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["invalid_payload"]
    blocks = body.get("blocks")
    text = body.get("text")
    _need(isinstance(text, str) and bool(text) or isinstance(blocks, list), "no_text", problems)
    if text is not None:
        _need(isinstance(text, str) and len(text) <= 40000, "text must be a string of at most 40000 characters", problems)
    if blocks is None:
        return problems
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return [*problems, "invalid_blocks: blocks must be a list of 1-50 blocks"]
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
            problems.append(f"invalid_blocks: {where} has no known type")
            continue
        if "block_id" in block:
            _need(isinstance(block["block_id"], str) and len(block["block_id"]) <= 255, f"{where}.block_id too long", problems)
        kind = block["type"]
        if kind == "header":
            _text_obj(block.get("text"), f"{where}.text", 150, problems, ("plain_text",))
        elif kind == "section":
            if "text" in block:
                _text_obj(block["text"], f"{where}.text", 3000, problems)
            fields = block.get("fields")
            if fields is not None:
                ok = isinstance(fields, list) and 0 < len(fields) <= 10
                _need(ok, f"{where}.fields must be 1-10 text objects", problems)
                for j, f in enumerate(fields if ok else []):
                    _text_obj(f, f"{where}.fields[{j}]", 2000, problems)
            _need("text" in block or fields is not None, f"{where} needs text or fields", problems)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                problems.append(f"{where}.elements must be 1-10 elements")
                continue
            for j, e in enumerate(elements):
                if isinstance(e, dict) and e.get("type") == "image":
                    continue
                _text_obj(e, f"{where}.elements[{j}]", 2000, problems)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                problems.append(f"{where}.elements must be 1-25 elements")
                continue
            for j, e in enumerate(elements):
                if not isinstance(e, dict) or e.get("type") != "button":
                    continue
                _text_obj(e.get("text"), f"{where}.elements[{j}].text", 75, problems, ("plain_text",))
                if "url" in e:
                    _need(isinstance(e["url"], str) and 0 < len(e["url"]) <= 3000, f"{where}.elements[{j}].url", problems)
    return problems


def _embed_total(embed: dict[str, Any]) -> int:
    total = len(str(embed.get("title", ""))) + len(str(embed.get("description", "")))
    total += sum(
        len(str(f.get("name", ""))) + len(str(f.get("value", ""))) for f in embed.get("fields") or [] if isinstance(f, dict)
    )
    total += len(str((embed.get("footer") or {}).get("text", ""))) + len(str((embed.get("author") or {}).get("name", "")))
    return total


def check_discord(body: Any) -> list[str]:
    """Discord execute webhook (https://discord.com/developers/docs/resources/webhook#execute-webhook) and embed limits."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    content, embeds = body.get("content"), body.get("embeds")
    _need(bool(content) or bool(embeds), "Cannot send an empty message (content or embeds required)", problems)
    if content is not None:
        _need(isinstance(content, str) and len(content) <= 2000, "content must be at most 2000 characters", problems)
    if embeds is None:
        return problems
    if not isinstance(embeds, list) or len(embeds) > 10:
        return [*problems, "embeds must be a list of at most 10"]
    total = 0
    for i, embed in enumerate(embeds):
        where = f"embeds[{i}]"
        if not isinstance(embed, dict):
            problems.append(f"{where} must be an object")
            continue
        for key, limit in (("title", 256), ("description", 4096)):
            if key in embed:
                _need(
                    isinstance(embed[key], str) and len(embed[key]) <= limit, f"{where}.{key} must be at most {limit}", problems
                )
        fields = embed.get("fields") or []
        _need(isinstance(fields, list) and len(fields) <= 25, f"{where}.fields must be at most 25", problems)
        for j, f in enumerate(fields if isinstance(fields, list) else []):
            ok = isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("value"), str)
            ok = ok and 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
            _need(ok, f"{where}.fields[{j}] needs a name (1-256) and a value (1-1024)", problems)
        if "footer" in embed:
            text = (embed["footer"] or {}).get("text") if isinstance(embed["footer"], dict) else None
            _need(isinstance(text, str) and len(text) <= 2048, f"{where}.footer.text must be at most 2048", problems)
        if "color" in embed:
            color = embed["color"]
            _need(isinstance(color, int) and 0 <= color <= 0xFFFFFF, f"{where}.color must be 0-16777215", problems)
        if "timestamp" in embed:
            try:
                dt.datetime.fromisoformat(str(embed["timestamp"]).replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"{where}.timestamp is not ISO 8601")
        if "url" in embed:
            _need(str(embed["url"]).startswith(("http://", "https://")), f"{where}.url is not a URL", problems)
        total += _embed_total(embed)
    _need(total <= 6000, f"embeds total {total} characters, more than 6000", problems)
    return problems


def _version_ok(version: Any) -> bool:
    match = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return bool(match) and (int(match[1]), int(match[2])) <= (1, 4) if match else False


def _card_elements(elements: Any, where: str, problems: list[str]) -> None:
    if not isinstance(elements, list):
        problems.append(f"{where} must be a list")
        return
    for i, element in enumerate(elements):
        here = f"{where}[{i}]"
        if not isinstance(element, dict) or element.get("type") not in CARD_ELEMENTS:
            problems.append(f"{here} has no known element type")
            continue
        if element["type"] == "TextBlock":
            _need(isinstance(element.get("text"), str), f"{here}.text is required", problems)
        elif element["type"] == "FactSet":
            facts = element.get("facts")
            ok = isinstance(facts, list) and all(
                isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str) for f in facts
            )
            _need(ok, f"{here}.facts must be a list of title/value strings", problems)
        elif element["type"] == "Container":
            _card_elements(element.get("items"), f"{here}.items", problems)


def check_teams(body: Any) -> list[str]:
    """Teams Workflows webhook: a message with one Adaptive Card attachment, card version 1.4 or lower."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    _need(body.get("type") == "message", "type must be 'message'", problems)
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*problems, "attachments must be a non-empty list"]
    first = attachments[0]
    if not isinstance(first, dict):
        return [*problems, "attachments[0] must be an object"]
    _need(first.get("contentType") == "application/vnd.microsoft.card.adaptive", "attachments[0].contentType", problems)
    card = first.get("content")
    if not isinstance(card, dict):
        return [*problems, "attachments[0].content must be an Adaptive Card"]
    _need(card.get("type") == "AdaptiveCard", "content.type must be AdaptiveCard", problems)
    _need(_version_ok(card.get("version")), f"content.version {card.get('version')!r} is not 1.4 or lower", problems)
    schema = card.get("$schema")
    _need(isinstance(schema, str) and "adaptivecards.io/schemas/adaptive-card.json" in schema, "content.$schema", problems)
    _card_elements(card.get("body", []), "content.body", problems)
    for i, action in enumerate(card.get("actions") or []):
        ok = isinstance(action, dict) and action.get("type") in CARD_ACTIONS
        ok = ok and (action.get("type") != "Action.OpenUrl" or str(action.get("url", "")).startswith(("http://", "https://")))
        _need(ok, f"content.actions[{i}] is not a valid action", problems)
    return problems


def check_google_chat(body: Any, query: dict[str, list[str]]) -> list[str]:
    """Google Chat incoming webhook (spaces.messages.create): `text` or `cardsV2`."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["Invalid JSON payload received."]
    text, cards = body.get("text"), body.get("cardsV2")
    _need(bool(text) or bool(cards), "Message cannot be empty (text or cardsV2)", problems)
    if text is not None:
        _need(isinstance(text, str) and len(text.encode()) <= 32000, "text must be at most 32000 bytes", problems)
    option = next(iter(query.get("messageReplyOption") or []), None)
    if option is not None:
        allowed = {"MESSAGE_REPLY_OPTION_UNSPECIFIED", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD", "REPLY_MESSAGE_OR_FAIL"}
        _need(option in allowed, f"Invalid value for messageReplyOption: {option}", problems)
    for i, entry in enumerate(cards or []):
        where = f"cardsV2[{i}]"
        card = entry.get("card") if isinstance(entry, dict) else None
        if not isinstance(card, dict):
            problems.append(f"{where}.card is required")
            continue
        header = card.get("header")
        if header is not None:
            _need(isinstance(header, dict) and isinstance(header.get("title"), str), f"{where}.card.header.title", problems)
        sections = card.get("sections")
        if not isinstance(sections, list) or not sections:
            problems.append(f"{where}.card.sections must be a non-empty list")
            continue
        for j, section in enumerate(sections):
            for k, widget in enumerate((section or {}).get("widgets") or []):
                here = f"{where}.card.sections[{j}].widgets[{k}]"
                keys = set(widget) & CHAT_WIDGETS if isinstance(widget, dict) else set()
                if len(keys) != 1:
                    problems.append(f"{here} must hold exactly one widget")
                    continue
                (name,) = keys
                if name in ("textParagraph", "decoratedText"):
                    _need(isinstance(widget[name].get("text"), str), f"{here}.{name}.text is required", problems)
                if name == "buttonList":
                    for b in widget[name].get("buttons") or []:
                        url = ((b.get("onClick") or {}).get("openLink") or {}).get("url", "")
                        _need(isinstance(b.get("text"), str) and str(url).startswith("http"), f"{here} button", problems)
    thread = body.get("thread")
    if thread is not None:
        _need(isinstance(thread, dict) and isinstance(thread.get("threadKey", thread.get("name")), str), "thread", problems)
    return problems


def check_matrix(body: Any, known_events: set[str]) -> list[str]:
    """An m.room.message event content (https://spec.matrix.org/v1.11/client-server-api/#mroommessage)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["Content not JSON."]
    _need(body.get("msgtype") in {"m.text", "m.notice", "m.emote"}, "msgtype must be m.text, m.notice or m.emote", problems)
    _need(isinstance(body.get("body"), str) and bool(body.get("body")), "body must be a non-empty string", problems)
    if "format" in body or "formatted_body" in body:
        _need(body.get("format") == "org.matrix.custom.html", "format must be org.matrix.custom.html", problems)
        _need(isinstance(body.get("formatted_body"), str), "formatted_body must be a string", problems)
    relates = body.get("m.relates_to")
    if relates is not None:
        event_id = ((relates or {}).get("m.in_reply_to") or {}).get("event_id") if isinstance(relates, dict) else None
        _need(
            isinstance(event_id, str) and event_id in known_events, f"m.in_reply_to names an unknown event {event_id!r}", problems
        )
    return problems


class _TelegramHTML(HTMLParser):
    """Telegram's HTML parse mode: only its tags, properly nested; the text it leaves, for the 4096 limit."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.problems.append(f'can\'t parse entities: Unsupported start tag "{tag}"')
        if tag == "a" and not any(k == "href" and v for k, v in attrs):
            self.problems.append("can't parse entities: <a> without href")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"can't parse entities: Can't find end tag corresponding to start tag \"{tag}\"")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_telegram(params: Any, chat_id: str, known_messages: set[int]) -> tuple[list[str], str]:
    """sendMessage (https://core.telegram.org/bots/api#sendmessage): chat_id, text 1-4096 after parsing, parse_mode."""
    if not isinstance(params, dict):
        return ["Bad Request: message text is empty"], ""
    problems: list[str] = []
    if str(params.get("chat_id", "")) != chat_id:
        return ["Bad Request: chat not found"], ""
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["Bad Request: message text is empty"], ""
    mode = params.get("parse_mode")
    shown = text
    if mode is not None and mode not in ("HTML", "MarkdownV2", "Markdown"):
        problems.append(f"Bad Request: unsupported parse_mode {mode!r}")
    if mode == "HTML":
        parser = _TelegramHTML()
        parser.feed(text)
        parser.close()
        problems.extend(f"Bad Request: {p}" for p in parser.problems)
        if parser.stack:
            problems.append(f"Bad Request: can't parse entities: unclosed tags {parser.stack}")
        shown = "".join(parser.text)
    _need(len(shown) <= 4096, f"Bad Request: message is too long ({len(shown)} characters)", problems)
    reply = params.get("reply_parameters")
    if reply is not None:
        ok = isinstance(reply, dict) and isinstance(reply.get("message_id"), int)
        _need(ok, "Bad Request: reply_parameters.message_id must be an integer", problems)
        if ok and reply["message_id"] not in known_messages and not reply.get("allow_sending_without_reply"):
            problems.append("Bad Request: message to be replied not found")
    return problems, shown


def check_webhook(body: Any) -> list[str]:
    """hark's webhook body, version 1 (hub/notify/formats/webhook.py)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems: list[str] = []
    _need(body.get("version") == 1, "version must be 1", problems)
    for key in ("kind", "title", "thread_key", "since"):
        _need(isinstance(body.get(key), str) and bool(body.get(key)), f"{key} must be a non-empty string", problems)
    _need(body.get("severity") in ("info", "warning", "critical"), "severity", problems)
    _need(isinstance(body.get("opened"), bool), "opened must be true or false", problems)
    items = body.get("items")
    _need(isinstance(items, list) and body.get("count") == len(items), "count must equal the number of items", problems)
    return problems


def _header_text(value: str) -> str:
    return str(make_header(decode_header(value))) if "=?" in value else value


def check_ntfy(headers: dict[str, str], body: bytes) -> list[str]:
    """ntfy publish (https://docs.ntfy.sh/publish/): Title, Priority, Tags, Click headers; a message of at most 4096 bytes."""
    problems: list[str] = []
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("title", "tags", "click", "priority"):
        value = lower.get(name) or lower.get(f"x-{name}")
        if value is None:
            continue
        _need(
            value.isascii() and "\n" not in value and "\r" not in value,
            f"invalid request: {name} header is not one line",
            problems,
        )
        if name == "priority":
            _need(value.strip().lower() in NTFY_PRIORITIES, "invalid request: priority header invalid", problems)
        if name == "click":
            _need(
                _header_text(value).startswith(("http://", "https://", "mailto:")), "invalid request: click URL invalid", problems
            )
    _need(0 < len(body) <= 4096, "invalid request: message must be 1-4096 bytes", problems)
    return problems


# --- the HTTP side -----------------------------------------------------------------------------


def _error_body(kind: str, status: int, problem: str) -> bytes:
    """The provider's own error shape for `status`."""
    if kind == "slack":
        return problem.encode()
    if kind == "discord":
        body: dict[str, Any] = {"message": problem, "code": 50035 if status == 400 else 0}
        if status == 429:
            body = {"message": "You are being rate limited.", "retry_after": 1.0, "global": False}
        return json.dumps(body).encode()
    if kind == "teams":
        return json.dumps(
            {"error": {"code": "InvalidRequestContent" if status == 400 else f"Http{status}", "message": problem}}
        ).encode()
    if kind == "google_chat":
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}
        return json.dumps({"error": {"code": status, "message": problem, "status": statuses.get(status, "UNAVAILABLE")}}).encode()
    if kind == "matrix":
        codes = {400: "M_BAD_JSON", 401: "M_UNKNOWN_TOKEN", 403: "M_FORBIDDEN", 429: "M_LIMIT_EXCEEDED"}
        body = {"errcode": codes.get(status, "M_UNKNOWN"), "error": problem}
        if status == 429:
            body["retry_after_ms"] = 2000
        return json.dumps(body).encode()
    if kind == "telegram":
        body = {"ok": False, "error_code": status, "description": problem}
        if status == 429:
            body["parameters"] = {"retry_after": 2}
        return json.dumps(body).encode()
    if kind == "ntfy":
        return json.dumps(
            {"code": status * 100 + 1, "http": status, "error": problem, "link": "https://ntfy.sh/docs/publish/"}
        ).encode()
    return json.dumps({"error": problem}).encode()


_REASONS = {
    400: "invalid",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
_DEFAULT_PROBLEMS = {
    ("slack", 404): "no_service",
    ("slack", 403): "action_prohibited",
    ("slack", 429): "rate_limited",
    ("discord", 404): "Unknown Webhook",
    ("discord", 401): "Invalid Webhook Token",
    ("telegram", 401): "Unauthorized",
    ("telegram", 403): "Forbidden: bot was kicked from the group chat",
    ("telegram", 429): "Too Many Requests: retry after 2",
    ("matrix", 403): "You are not in this room.",
    ("ntfy", 403): "forbidden",
}


class _ProviderHandler(RequestHandler):
    """Every provider endpoint: check, record, answer (or play the scripted answer)."""

    def initialize(self, receivers: Receivers, kind: str) -> None:
        self.receivers = receivers
        self.kind = kind

    def check_xsrf_cookie(self) -> None:
        return None

    async def post(self, *args: str) -> None:
        await self._handle(*args)

    async def put(self, *args: str) -> None:
        await self._handle(*args)

    async def _handle(self, *args: str) -> None:
        r = self.receivers
        req = self.request
        record = Received(
            kind=self.kind,
            method=req.method or "",
            path=req.path,
            query=parse_qs(req.query, keep_blank_values=True),
            headers=dict(req.headers.get_all()),
            body=req.body or b"",
            outcome="accepted",
            status=200,
        )
        scripted = r._next_answer(self.kind)
        failing = scripted is not None and not 200 <= scripted.status < 300
        try:
            # A scripted failure still checks the request, but keeps nothing (no event, no txn, no message id).
            status, headers, body = r._respond(self.kind, record, args, dry=failing)
        except Invalid as err:
            if scripted is not None:
                r._unshift(self.kind, scripted)
            record.outcome, record.status, record.problems = "rejected", err.status, err.problems
            content_type = "text/plain" if self.kind == "slack" else "application/json"
            status, headers, body = err.status, {"Content-Type": content_type}, _error_body(self.kind, err.status, str(err))
        else:
            if scripted is not None and scripted.delay_s:
                await asyncio.sleep(scripted.delay_s)
            if scripted is not None and failing:
                record.outcome = "scripted"
                problem = _DEFAULT_PROBLEMS.get((self.kind, scripted.status), _REASONS.get(scripted.status, "unavailable"))
                status = scripted.status
                body = scripted.body if scripted.body is not None else _error_body(self.kind, status, problem)
                headers = {"Content-Type": "text/plain" if self.kind == "slack" else "application/json"}
            if scripted is not None:
                headers = {**headers, **scripted.headers}
            record.status = status
        r._record(record)
        self._write(status, headers, body)

    def _write(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.set_status(status, _REASONS.get(status) or None)
        for name, value in headers.items():
            self.set_header(name, value)
        if body and status not in (204, 304):
            self.write(body)
        self.finish()


# --- the SMTP side -----------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[str, ssl.SSLContext]:
    """A throwaway CA (its PEM) and a server context for `localhost` and 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hark test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = directory / "smtp.pem", directory / "smtp.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return ca_pem, context


class _MailHandler:
    def __init__(self, receivers: Receivers, server: str) -> None:
        self.receivers = receivers
        self.server = server

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        scripted = self.receivers._next_answer("email")
        if scripted is not None and scripted.delay_s:
            await asyncio.sleep(scripted.delay_s)
        if scripted is not None and scripted.status != 250:
            code = scripted.status
            text = (
                scripted.body.decode() if scripted.body else ("4.3.0 Try again later" if code < 500 else "5.7.1 Message rejected")
            )
            self.receivers._record_mail(None, envelope, self.server, session, f"{code}")
            return f"{code} {text}"
        content = envelope.content if isinstance(envelope.content, bytes) else (envelope.content or "").encode()
        mail = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.receivers._record_mail(mail, envelope, self.server, session, "250")
        return "250 2.0.0 Ok: queued as " + secrets.token_hex(5).upper()


@dataclass
class Mail:
    """One email the SMTP receiver got: the parsed message, the envelope, and how it came (tls, auth)."""

    message: EmailMessage | None
    mail_from: str
    rcpt_tos: list[str]
    server: str  # smtp | smtps | relay
    tls: bool
    login: str | None
    reply: str


# --- the receivers -----------------------------------------------------------------------------


class Receivers:
    """Loopback receivers for every channel kind; a context manager (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._mail: list[Mail] = []
        self._scripts: dict[str, deque[Answer]] = {kind: deque() for kind in KINDS}
        self._secrets: list[str] = []
        self._matrix_txns: dict[tuple[str, str], str] = {}
        self._matrix_events: set[str] = set()
        self._telegram_messages: set[int] = set()
        self._chat_threads: dict[str, str] = {}
        token = secrets.token_urlsafe(18)
        self.tokens = {
            "slack": f"T0HARK/B0HARK/{token}",
            "discord": f"1234567890/{secrets.token_urlsafe(24)}",
            "teams": f"workflows/{secrets.token_hex(16)}/triggers/manual/paths/invoke?sig={secrets.token_urlsafe(16)}",
            "google_chat": f"AAAAhark/messages?key={secrets.token_urlsafe(12)}&token={secrets.token_urlsafe(16)}",
            "matrix": f"syt_{secrets.token_urlsafe(24)}",
            "telegram": f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}",
            "ntfy": f"tk_{secrets.token_hex(14)}",
            "webhook": secrets.token_urlsafe(12),
        }
        self.matrix_room = "!hark:localhost"
        self.telegram_chat = "-1001234567890"
        self.ntfy_topic = "hark-alerts"
        self.smtp_user, self.smtp_password = "hark", secrets.token_urlsafe(12)
        self.port = 0
        self.https_port = 0  # the same endpoints over TLS, with the throwaway CA's certificate (`ca_pem`)
        self.smtp_port = self.smtps_port = self.relay_port = 0
        self.ca_pem = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stop: Callable[[], Any] | None = None

    # lifecycle

    def __enter__(self) -> Receivers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="hark-receivers-")
        self.ca_pem, tls = make_certificates(Path(self._tmp.name))
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                closers = loop.run_until_complete(self._serve(tls))
            except BaseException as err:  # noqa: BLE001 - handed to the starting thread
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            for close in closers:
                with suppress(Exception):
                    close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="notify-receivers", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _serve(self, tls: ssl.SSLContext) -> list[Callable[[], Any]]:
        routes: list[Any] = [
            (r"/slack/services/(.+)", _ProviderHandler, {"receivers": self, "kind": "slack"}),
            (r"/discord/api/webhooks/([^/]+)/([^/]+)", _ProviderHandler, {"receivers": self, "kind": "discord"}),
            (r"/teams/(.+)", _ProviderHandler, {"receivers": self, "kind": "teams"}),
            (r"/google_chat/v1/spaces/([^/]+)/messages", _ProviderHandler, {"receivers": self, "kind": "google_chat"}),
            (
                r"/matrix/_matrix/client/v3/rooms/([^/]+)/send/m\.room\.message/([^/]+)",
                _ProviderHandler,
                {"receivers": self, "kind": "matrix"},
            ),
            (r"/telegram/bot([^/]+)/sendMessage", _ProviderHandler, {"receivers": self, "kind": "telegram"}),
            (r"/webhook/hook/([^/]+)", _ProviderHandler, {"receivers": self, "kind": "webhook"}),
            (r"/ntfy/([^/]+)", _ProviderHandler, {"receivers": self, "kind": "ntfy"}),
        ]
        app = Application(routes)
        server = HTTPServer(app, max_body_size=4 * 1024 * 1024)
        sockets = bind_sockets(0, HOST)
        secure = HTTPServer(app, max_body_size=4 * 1024 * 1024, ssl_options=tls)
        secure_sockets = bind_sockets(0, HOST)
        secure.add_sockets(secure_sockets)
        self.https_port = secure_sockets[0].getsockname()[1]
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()

        def smtp_factory(name: str, starttls: bool) -> Callable[[], SMTPServer]:
            return lambda: SMTPServer(
                _MailHandler(self, name),
                hostname="localhost",
                tls_context=tls if starttls else None,
                require_starttls=starttls,
                authenticator=self._authenticate,
                auth_required=starttls,
                auth_require_tls=True,
                loop=loop,
            )

        smtp = await loop.create_server(smtp_factory("smtp", True), HOST, 0)
        smtps = await loop.create_server(smtp_factory("smtps", False), HOST, 0, ssl=tls)
        relay = await loop.create_server(smtp_factory("relay", False), HOST, 0)
        self.smtp_port = smtp.sockets[0].getsockname()[1]
        self.smtps_port = smtps.sockets[0].getsockname()[1]
        self.relay_port = relay.sockets[0].getsockname()[1]
        return [server.stop, secure.stop, smtp.close, smtps.close, relay.close]

    def _authenticate(self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.smtp_user
            and data.password.decode() == self.smtp_password
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    # what a test configures

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, kind: str) -> str:
        """The URL a channel of `kind` is configured with (the webhook URL, homeserver, api_url or server_url)."""
        return {
            "slack": f"{self.base}/slack/services/{self.tokens['slack']}",
            "discord": f"{self.base}/discord/api/webhooks/{self.tokens['discord']}",
            "teams": f"{self.base}/teams/{self.tokens['teams']}",
            "google_chat": f"{self.base}/google_chat/v1/spaces/{self.tokens['google_chat']}",
            "matrix": f"{self.base}/matrix",
            "telegram": f"{self.base}/telegram",
            "ntfy": f"{self.base}/ntfy",
            "webhook": f"{self.base}/webhook/hook/{self.tokens['webhook']}",
        }[kind]

    def https_url(self, kind: str) -> str:
        """`url(kind)` over TLS at `localhost`, its certificate signed by the throwaway CA (`ca_pem`)."""
        return self.url(kind).replace(self.base, f"https://localhost:{self.https_port}")

    def channel(self, kind: str, security: str = "starttls") -> tuple[dict[str, Any], dict[str, Any]]:
        """(config, secrets) of a channel of `kind` that delivers here (webhook: no secret; the hub makes it)."""
        if kind in ("slack", "discord", "teams", "google_chat"):
            return {}, {"webhook_url": self.url(kind)}
        if kind == "matrix":
            return {"homeserver_url": self.url(kind), "room_id": self.matrix_room}, {"access_token": self.tokens["matrix"]}
        if kind == "telegram":
            return {"chat_id": self.telegram_chat, "api_url": self.url(kind)}, {"bot_token": self.tokens["telegram"]}
        if kind == "ntfy":
            return {"server_url": self.url(kind), "topic": self.ntfy_topic}, {"token": self.tokens["ntfy"]}
        if kind == "webhook":
            return {"url": self.url(kind)}, {}
        if kind == "email":
            return self.email_config(security)
        raise KeyError(kind)

    def email_config(self, security: str = "starttls") -> tuple[dict[str, Any], dict[str, Any]]:
        port = {"starttls": self.smtp_port, "tls": self.smtps_port, "none": self.relay_port}[security]
        config: dict[str, Any] = {
            "host": "localhost",
            "port": port,
            "security": security,
            "sender": "hark@example.org",
            "recipients": ["ops@example.org", "oncall@example.org"],
        }
        if security != "none":
            config["ca_pem"] = self.ca_pem
        if security == "starttls":
            config["username"] = self.smtp_user
            return config, {"password": self.smtp_password}
        return config, {}

    @property
    def smtp(self) -> dict[str, Any]:
        """An email channel's config for the STARTTLS server (AUTH required: add `smtp_secrets`)."""
        return self.email_config("starttls")[0]

    @property
    def smtp_secrets(self) -> dict[str, Any]:
        return {"password": self.smtp_password}

    def trust_signing_secret(self, secret: str) -> None:
        """A webhook signing secret to verify `X-Hark-Signature` with (several may be trusted at once)."""
        with self._lock:
            self._secrets.append(secret)

    def script(self, kind: str, answers: list[int | Answer]) -> None:
        """Queue the next answers of `kind` (a 2xx is the provider's real answer; email: the reply code to DATA)."""
        with self._lock:
            self._scripts[kind].extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    # what a test reads

    def requests(self, kind: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if kind is None or r.kind == kind]

    def accepted(self, kind: str) -> list[Received]:
        return [r for r in self.requests(kind) if r.outcome == "accepted"]

    def rejected(self, kind: str | None = None) -> list[Received]:
        return [r for r in self.requests(kind) if r.outcome == "rejected"]

    def messages(self) -> list[Mail]:
        """Every email received and accepted."""
        with self._lock:
            return [m for m in self._mail if m.message is not None]

    def wait_for(self, kind: str, count: int, timeout_s: float = 30.0) -> list[Received] | list[Mail]:
        """Poll until `count` accepted requests (or emails) of `kind` arrived; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            got: list[Any] = self.messages() if kind == "email" else self.accepted(kind)
            if len(got) >= count or time.monotonic() > deadline:
                assert len(got) >= count, (
                    f"{kind}: {len(got)} of {count} arrived; rejected: {[r.problems for r in self.rejected()]}"
                )
                return got
            time.sleep(0.05)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._mail.clear()
            for queue in self._scripts.values():
                queue.clear()

    # inside the loop thread

    def _next_answer(self, kind: str) -> Answer | None:
        with self._lock:
            queue = self._scripts[kind]
            return queue.popleft() if queue else None

    def _unshift(self, kind: str, answer: Answer) -> None:
        with self._lock:
            self._scripts[kind].appendleft(answer)

    def _record(self, record: Received) -> None:
        with self._lock:
            self._received.append(record)

    def _record_mail(self, mail: EmailMessage | None, envelope: Envelope, server: str, session: Session, reply: str) -> None:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        entry = Mail(
            mail,
            envelope.mail_from or "",
            list(envelope.rcpt_tos),
            server,
            session.ssl is not None or server == "smtps",
            login,
            reply,
        )
        with self._lock:
            self._mail.append(entry)

    def _json_body(self, record: Received, kind: str) -> Any:
        content_type = (record.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Invalid(f"Content-Type must be application/json, not {content_type or 'none'}")
        try:
            return json.loads(record.body)
        except ValueError as err:
            raise Invalid(f"body is not JSON: {err}") from err

    def _respond(self, kind: str, record: Received, args: tuple[str, ...], dry: bool) -> tuple[int, dict[str, str], bytes]:
        """Check the request; the provider's success answer (keeping nothing when `dry`), or raise `Invalid`."""
        as_json = {"Content-Type": "application/json"}
        if kind == "slack":
            if args[0] != self.tokens["slack"]:
                raise Invalid("no_service", 404)
            problems = check_slack(self._json_body(record, kind))
            if problems:
                raise Invalid(problems)
            return 200, {"Content-Type": "text/html"}, b"ok"
        if kind == "discord":
            if "/".join(args) != self.tokens["discord"]:
                raise Invalid("Unknown Webhook", 404)
            body = self._json_body(record, kind)
            problems = check_discord(body)
            if problems:
                raise Invalid(problems)
            if (record.query.get("wait") or ["false"])[0] != "true":
                return 204, {}, b""
            snowflake = str(secrets.randbelow(10**18) + 10**18)
            message = {
                "id": snowflake,
                "type": 0,
                "content": body.get("content", ""),
                "channel_id": "1100000000000000000",
                "webhook_id": self.tokens["discord"].split("/")[0],
                "embeds": body.get("embeds", []),
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            }
            return 200, as_json, json.dumps(message).encode()
        if kind == "teams":
            path, _, query = self.tokens["teams"].partition("?")
            if args[0] != path or record.query.get("sig") != parse_qs(query)["sig"]:
                raise Invalid("DirectApiAuthorizationRequired: the request is not signed", 401)
            problems = check_teams(self._json_body(record, kind))
            if problems:
                raise Invalid(problems)
            return 202, {}, b""
        if kind == "google_chat":
            space = args[0]
            key_token = self.tokens["google_chat"].split("?", 1)[1]
            expected = parse_qs(key_token)
            if space != self.tokens["google_chat"].split("/")[0] or any(record.query.get(k) != v for k, v in expected.items()):
                raise Invalid("Request had invalid authentication credentials.", 401)
            body = self._json_body(record, kind)
            problems = check_google_chat(body, record.query)
            if problems:
                raise Invalid(problems)
            if dry:
                return 200, as_json, b"{}"
            key = ((body.get("thread") or {}).get("threadKey")) if isinstance(body.get("thread"), dict) else None
            with self._lock:
                thread = self._chat_threads.setdefault(
                    key or secrets.token_hex(6), f"spaces/{space}/threads/{secrets.token_hex(6)}"
                )
            message = {
                "name": f"spaces/{space}/messages/{secrets.token_hex(8)}",
                "sender": {"name": "users/1234", "type": "BOT"},
                "text": body.get("text", ""),
                "cardsV2": body.get("cardsV2", []),
                "createTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                "thread": {"name": thread, **({"threadKey": key} if key else {})},
                "space": {"name": f"spaces/{space}", "type": "ROOM"},
            }
            return 200, as_json, json.dumps(message).encode()
        if kind == "matrix":
            room, txn = args
            auth = record.header("Authorization") or ""
            if not auth:
                raise Invalid("Missing access token", 401)
            if auth != f"Bearer {self.tokens['matrix']}":
                raise Invalid("Unrecognised access token", 401)
            if room != self.matrix_room:
                raise Invalid(_DEFAULT_PROBLEMS[("matrix", 403)], 403)
            with self._lock:
                known = set(self._matrix_events)
                repeat = self._matrix_txns.get((auth, txn))
            if repeat is not None:
                record.outcome = "duplicate"
                return 200, as_json, json.dumps({"event_id": repeat}).encode()
            problems = check_matrix(self._json_body(record, kind), known)
            if problems:
                raise Invalid(problems)
            if dry:
                return 200, as_json, b"{}"
            event_id = f"${secrets.token_urlsafe(32)}"
            with self._lock:
                self._matrix_txns[(auth, txn)] = event_id
                self._matrix_events.add(event_id)
            return 200, as_json, json.dumps({"event_id": event_id}).encode()
        if kind == "telegram":
            if args[0] != self.tokens["telegram"]:
                raise Invalid("Unauthorized", 401)
            content_type = (record.header("Content-Type") or "").split(";")[0].strip().lower()
            if content_type == "application/x-www-form-urlencoded":
                params: Any = {k: v[0] for k, v in parse_qs(record.text).items()}
            else:
                params = self._json_body(record, kind)
            with self._lock:
                known_messages = set(self._telegram_messages)
            problems, shown = check_telegram(params, self.telegram_chat, known_messages)
            if problems:
                raise Invalid(problems)
            if dry:
                return 200, as_json, b"{}"
            with self._lock:
                message_id = len(self._telegram_messages) + 101
                self._telegram_messages.add(message_id)
            result = {
                "message_id": message_id,
                "from": {
                    "id": int(self.tokens["telegram"].split(":")[0]),
                    "is_bot": True,
                    "first_name": "hark",
                    "username": "hark_test_bot",
                },
                "chat": {"id": int(self.telegram_chat), "title": "On call", "type": "supergroup"},
                "date": int(time.time()),
                "text": shown,
            }
            return 200, as_json, json.dumps({"ok": True, "result": result}).encode()
        if kind == "webhook":
            if args[0] != self.tokens["webhook"]:
                raise Invalid("unknown hook", 404)
            header = record.header(signing.SIGNATURE_HEADER)
            if not header:
                raise Invalid(f"no {signing.SIGNATURE_HEADER} header", 401)
            with self._lock:
                trusted = list(self._secrets)
            reasons = []
            for secret in trusted:
                try:
                    signing.verify(secret, header, record.body, int(time.time()))
                    break
                except signing.SignatureInvalid as err:
                    reasons.append(err.reason)
            else:
                raise Invalid(f"signature: {'; '.join(reasons) or 'no signing secret trusted'}", 401)
            problems = check_webhook(self._json_body(record, kind))
            if problems:
                raise Invalid(problems)
            return 200, as_json, b'{"received":true}'
        if kind == "ntfy":
            if args[0] != self.ntfy_topic:
                raise Invalid("forbidden", 403)
            if (record.header("Authorization") or "") != f"Bearer {self.tokens['ntfy']}":
                raise Invalid("forbidden", 403)
            problems = check_ntfy(record.headers, record.body)
            if problems:
                raise Invalid(problems)
            lower = {k.lower(): v for k, v in record.headers.items()}
            now = int(time.time())
            published: dict[str, Any] = {
                "id": secrets.token_urlsafe(9)[:12],
                "time": now,
                "expires": now + 43200,
                "event": "message",
                "topic": args[0],
                "message": record.text,
            }
            if "title" in lower:
                published["title"] = _header_text(lower["title"])
            if "priority" in lower:
                published["priority"] = int(lower["priority"]) if lower["priority"].isdigit() else 3
            if "tags" in lower:
                published["tags"] = [t.strip() for t in _header_text(lower["tags"]).split(",") if t.strip()]
            if "click" in lower:
                published["click"] = _header_text(lower["click"])
            return 200, as_json, json.dumps(published).encode()
        raise Invalid(f"unknown kind {kind}", 404)


def receivers() -> Iterator[Receivers]:
    """A fixture body: `notify_receivers = pytest.fixture(receivers)` in a conftest or test module."""
    with Receivers() as r:
        yield r
