"""Webhook, Matrix, Telegram, ntfy and email formats: an opening, a resolution, a storm, hostile input, the link."""

from __future__ import annotations

import email.policy
import json
import re
from datetime import UTC, datetime
from email import message_from_bytes
from html.parser import HTMLParser

from hark_fleet.hub.notify.formats import email as email_format
from hark_fleet.hub.notify.formats import matrix, ntfy, telegram, webhook
from hark_fleet.hub.notify.message import Item, Message

URL = "https://hub.example/console/#/nodes/n1"
SINCE = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def single(**kw: object) -> Message:
    base: dict[str, object] = dict(
        kind="health.opened",
        title="Stage left: input silent on channel 2",
        severity="critical",
        opened=True,
        site="Main hall",
        since=SINCE,
        thread_key="health:n1:silence:2",
        items=(Item(title="Input silent", node_id="n1", node_name="Stage left", channel="2", url=URL),),
        url=URL,
    )
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def resolution() -> Message:
    return single(kind="health.resolved", opened=False)


def storm() -> Message:
    items = tuple(Item(title="Offline", node_id=f"n{i}", node_name=f"Box {i}", url=f"{URL}{i}") for i in range(50))
    return single(kind="node.offline", title="50 boxes of Main hall went offline", severity="warning", items=items)


EVIL_TITLE = 'Boom <script>alert(1)</script> & "q"\r\nBcc: victim@example.com\nX-Evil: 1'


def hostile() -> Message:
    return single(
        title=EVIL_TITLE,
        site="<b>Hall</b>\r\nX: y",
        items=(Item(title="<img src=x onerror=alert(1)>", node_name="Stage\nleft", channel="2</a>", url=URL + '"><x>'),),
        text="line one\n<i>two</i> & three",
    )


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def tags_of(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


# webhook


def test_webhook_opening_carries_version_where_since_and_link() -> None:
    body = webhook.body(single())
    assert body["version"] == 1
    assert body["kind"] == "health.opened" and body["opened"] is True and body["severity"] == "critical"
    assert body["site"] == "Main hall" and body["since"] == "2026-12-06T17:00:00Z"
    assert body["url"] == URL and body["thread_key"] == "health:n1:silence:2"
    assert body["items"] == [{"title": "Input silent", "node_id": "n1", "node_name": "Stage left", "channel": "2", "url": URL}]
    json.dumps(body)


def test_webhook_resolution_keeps_the_thread_key() -> None:
    body = webhook.body(resolution())
    assert body["opened"] is False and body["thread_key"] == "health:n1:silence:2"


def test_webhook_storm_lists_every_item_with_count() -> None:
    body = webhook.body(storm())
    assert body["count"] == 50 and len(body["items"]) == 50


def test_webhook_titles_are_single_lines() -> None:
    body = webhook.body(hostile())
    assert "\n" not in body["title"] and "\r" not in body["title"]
    assert "<script>" in body["title"]  # JSON carries the text as is; escaping is the receiver's job


# matrix


def test_matrix_critical_opening_is_text_with_html_and_link() -> None:
    content = matrix.body(single())
    assert content["msgtype"] == "m.text"
    assert content["format"] == "org.matrix.custom.html"
    assert "Main hall" in content["body"] and "Stage left" in content["body"] and "channel 2" in content["body"]
    assert "2026-12-06 17:00 UTC" in content["body"]
    assert URL in content["body"] and f'href="{URL}"' in content["formatted_body"]
    assert "m.relates_to" not in content


def test_matrix_resolution_replies_to_the_opening_and_is_marked() -> None:
    content = matrix.body(resolution(), reply_to_event_id="$abc:example.org")
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$abc:example.org"}}
    assert content["body"].startswith("Resolved:")
    assert matrix.body(resolution())["body"].startswith("Resolved:")
    assert "m.relates_to" not in matrix.body(resolution())


def test_matrix_storm_is_capped_with_and_n_more() -> None:
    content = matrix.body(storm())
    assert content["msgtype"] == "m.notice"
    assert "50 conditions" in content["body"] and "and 40 more" in content["body"]
    assert "Box 9" in content["body"] and "Box 10 " not in content["body"]
    assert content["formatted_body"].count("<li>") == 10 and "and 40 more" in content["formatted_body"]


def test_matrix_escapes_hostile_fields() -> None:
    html = matrix.body(hostile())["formatted_body"]
    assert "<script" not in html and "<img" not in html and "<x>" not in html and "<b>Hall" not in html
    assert {t for t, _ in tags_of(html)} <= {"p", "strong", "br", "ul", "li", "a"}


# telegram


def test_telegram_opening_params_and_link() -> None:
    p = telegram.params(single(), chat_id="-100123")
    assert p["chat_id"] == "-100123" and p["parse_mode"] == "HTML" and p["disable_web_page_preview"] is True
    assert f'<a href="{URL}">' in p["text"] and "Main hall" in p["text"] and "Stage left" in p["text"]
    assert "reply_parameters" not in p


def test_telegram_resolution_replies_and_is_marked() -> None:
    p = telegram.params(resolution(), chat_id="1", reply_to_message_id=42)
    assert p["reply_parameters"]["message_id"] == 42
    assert "Resolved:" in p["text"]


def test_telegram_storm_fits_in_4096_and_uses_only_allowed_tags() -> None:
    big = storm()
    big = Message(**{**{f: getattr(big, f) for f in big.__dataclass_fields__}, "text": "<&>" * 5000})
    text = telegram.params(big, chat_id="1")["text"]
    assert len(text) <= 4096
    assert "and 40 more" in text and URL in text
    assert {t for t, _ in tags_of(text)} <= {"b", "i", "a", "code", "pre"}
    assert not re.search(r"&[a-z]*$", text.split("\n")[2])  # no entity cut in half


def test_telegram_escapes_hostile_fields() -> None:
    text = telegram.params(hostile(), chat_id="1")["text"]
    assert "<script" not in text and "<img" not in text and "<x>" not in text
    assert {t for t, _ in tags_of(text)} <= {"b", "i", "a", "code", "pre"}
    assert all(attrs == [] or [k for k, _ in attrs] == ["href"] for _, attrs in tags_of(text))


# ntfy


def test_ntfy_opening_headers_and_body() -> None:
    headers, body = ntfy.request(single())
    assert headers["Priority"] == "5" and headers["Click"] == URL
    assert headers["Title"] == "Stage left: input silent on channel 2"
    assert "rotating_light" in headers["Tags"]
    text = body.decode()
    assert "Main hall" in text and "channel 2" in text and "2026-12-06 17:00 UTC" in text and URL in text


def test_ntfy_resolution_is_marked_and_lower_priority() -> None:
    headers, _ = ntfy.request(resolution())
    assert headers["Title"].startswith("Resolved:") and headers["Priority"] == "2"
    assert "white_check_mark" in headers["Tags"]


def test_ntfy_storm_body_is_capped() -> None:
    headers, body = ntfy.request(storm())
    assert headers["Priority"] == "4"
    assert "and 40 more" in body.decode() and body.decode().count("\n- ") == 10


def test_ntfy_headers_are_single_line_ascii() -> None:
    headers, _ = ntfy.request(single(title="Bühne links stumm\r\nX-Evil: 1"))
    for value in headers.values():
        assert value.isascii() and "\r" not in value and "\n" not in value
    assert headers["Title"].startswith("=?utf-8?")
    headers, _ = ntfy.request(hostile())
    assert all("\n" not in v and "\r" not in v for v in headers.values())


# email


def parse(mail: email.message.EmailMessage) -> email.message.EmailMessage:
    parsed = message_from_bytes(mail.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_email_opening_has_subject_alternatives_and_link() -> None:
    mail = parse(email_format.build(single(), "hark@hub.example", ["a@example.com", "b@example.com"]))
    assert mail["Subject"] == "[hark] Stage left: input silent on channel 2"
    assert mail["To"] == "a@example.com, b@example.com"
    assert mail["Message-ID"] == email_format.message_id("health:n1:silence:2")
    assert mail["In-Reply-To"] is None
    plain_part = mail.get_body(("plain",))
    html_part = mail.get_body(("html",))
    assert plain_part is not None and html_part is not None
    plain = plain_part.get_content()
    assert "Main hall" in plain and "Stage left" in plain and "2026-12-06 17:00 UTC" in plain and URL in plain
    assert f'href="{URL}"' in html_part.get_content()


def test_email_resolution_threads_with_the_opening() -> None:
    opening = parse(email_format.build(single(), "hark@hub.example", ["a@example.com"]))
    mail = parse(email_format.build(resolution(), "hark@hub.example", ["a@example.com"]))
    assert mail["Subject"].startswith("[hark] Resolved:")
    assert mail["In-Reply-To"] == opening["Message-ID"] and mail["References"] == opening["Message-ID"]
    assert mail["Message-ID"] != opening["Message-ID"]


def test_email_storm_is_capped() -> None:
    mail = parse(email_format.build(storm(), "hark@hub.example", ["a@example.com"]))
    plain_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain_part is not None and html_part is not None
    assert "and 40 more" in plain_part.get_content() and html_part.get_content().count("<li>") == 10


def test_email_header_injection_is_impossible() -> None:
    mail = email_format.build(hostile(), "hark@hub.example", ["a@example.com"])
    raw = mail.as_bytes()
    parsed = parse(mail)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert b"\nBcc:" not in raw and b"\nX-Evil:" not in raw
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "<script" not in html and "<img" not in html and "<x>" not in html
