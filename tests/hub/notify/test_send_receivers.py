"""The test receivers hold requests to each provider's documented rules: what breaks them is a 400, recorded as rejected."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hark_fleet.hub.notify import signing
from hark_fleet.hub.notify.formats import discord, slack, teams

from tests.hub.notify.test_send_http import opening
from tests.notify_receivers import Receivers


@pytest.fixture(scope="module")
def r() -> Iterator[Receivers]:
    with Receivers() as receivers:
        yield receivers


def post(url: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def rejected_with(r: Receivers, kind: str, status: int, body: bytes, words: str) -> None:
    assert status == 400, body
    last = r.requests(kind)[-1]
    assert last.outcome == "rejected" and any(words in p for p in last.problems), last.problems


def test_slack_refuses_a_header_over_150_characters_and_unknown_block_types(r: Receivers) -> None:
    body = slack.body(opening())
    body["blocks"][0]["text"]["text"] = "x" * 151
    rejected_with(r, "slack", *post(r.url("slack"), body), "1-150")
    rejected_with(r, "slack", *post(r.url("slack"), {"text": "x", "blocks": [{"type": "banner"}]}), "no known type")


def test_discord_refuses_eleven_embeds_and_more_than_6000_characters(r: Receivers) -> None:
    embed = discord.body(opening())["embeds"][0]
    rejected_with(r, "discord", *post(r.url("discord") + "?wait=true", {"embeds": [embed] * 11}), "at most 10")
    big = {**embed, "description": "x" * 4000}
    rejected_with(r, "discord", *post(r.url("discord") + "?wait=true", {"embeds": [big, big]}), "more than 6000")
    rejected_with(r, "discord", *post(r.url("discord"), {"embeds": [{**embed, "title": "t" * 257}]}), "title must be at most 256")


def test_teams_refuses_an_adaptive_card_newer_than_1_4_or_without_its_schema(r: Receivers) -> None:
    body = teams.body(opening())
    body["attachments"][0]["content"]["version"] = "1.5"
    rejected_with(r, "teams", *post(r.url("teams"), body), "1.4 or lower")
    del body["attachments"][0]["content"]["$schema"]
    body["attachments"][0]["content"]["version"] = "1.2"
    rejected_with(r, "teams", *post(r.url("teams"), body), "$schema")


def test_telegram_refuses_tags_it_does_not_parse_and_text_over_4096(r: Receivers) -> None:
    _, secrets = r.channel("telegram")
    url = f"{r.url('telegram')}/bot{secrets['bot_token']}/sendMessage"
    params = {"chat_id": r.telegram_chat, "parse_mode": "HTML"}
    rejected_with(r, "telegram", *post(url, {**params, "text": "<p>hi</p>"}), "Unsupported start tag")
    rejected_with(r, "telegram", *post(url, {**params, "text": "<b>" + "x" * 4097 + "</b>"}), "too long")
    status, body = post(url, {**params, "text": "<b>" + "&amp;" * 4000 + "</b>"})
    assert status == 200 and json.loads(body)["ok"] is True  # 4000 characters once parsed


def test_matrix_refuses_an_unknown_msgtype_and_a_reply_to_an_unknown_event(r: Receivers) -> None:
    config, secrets = r.channel("matrix")
    url = f"{config['homeserver_url']}/_matrix/client/v3/rooms/{r.matrix_room.replace('!', '%21')}/send/m.room.message/"
    auth = {"Authorization": f"Bearer {secrets['access_token']}"}
    rejected_with(r, "matrix", *post(url + "t1", {"msgtype": "m.html", "body": "x"}, auth, "PUT"), "msgtype")
    reply = {"msgtype": "m.notice", "body": "x", "m.relates_to": {"m.in_reply_to": {"event_id": "$nope"}}}
    rejected_with(r, "matrix", *post(url + "t2", reply, auth, "PUT"), "unknown event")
    status, body = post(url + "t3", {"msgtype": "m.notice", "body": "x"}, auth, "PUT")
    again = post(url + "t3", {"msgtype": "m.notice", "body": "x"}, auth, "PUT")
    assert status == 200 and again == (200, body)


def test_the_webhook_refuses_an_old_signature_and_a_changed_body(r: Receivers) -> None:
    secret = signing.new_signing_secret()
    r.trust_signing_secret(secret)
    body = json.dumps({"version": 1}).encode()
    old = signing.sign(secret, int(time.time()) - 3600, body)
    status, answer = post(r.url("webhook"), body, {signing.SIGNATURE_HEADER: old})
    assert status == 401 and r.requests("webhook")[-1].outcome == "rejected" and b"replay window" in answer
    fresh = signing.sign(secret, int(time.time()), body)
    status, answer = post(r.url("webhook"), body + b" ", {signing.SIGNATURE_HEADER: fresh})
    assert status == 401 and b"does not match" in answer


def test_ntfy_refuses_an_unknown_priority(r: Receivers) -> None:
    url = f"{r.url('ntfy')}/{r.ntfy_topic}"
    headers = {"Authorization": f"Bearer {r.tokens['ntfy']}", "Priority": "loud", "Content-Type": "text/plain"}
    rejected_with(r, "ntfy", *post(url, b"hello", headers), "priority")


def test_google_chat_refuses_an_empty_message(r: Receivers) -> None:
    rejected_with(r, "google_chat", *post(r.url("google_chat"), {"thread": {"threadKey": "k"}}), "cannot be empty")
