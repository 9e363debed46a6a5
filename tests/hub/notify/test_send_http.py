"""send.deliver against real loopback receivers that hold each provider to its documented format.

Every HTTP kind takes an opening, its resolution and a storm of 50 without a rejection; refused
destinations never see a request; 503/429 are retried with their Retry-After; other 4xx fail with the
provider's own message; timeouts are no response; nothing secret comes back in an attempt's text.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.notify import http_send, send, signing
from hark_fleet.hub.notify.message import Item, Message
from hark_fleet.hub.notify.outbound import Destination
from hark_fleet.hub.notify.retry import classify

from tests.notify_receivers import Answer, Receivers

HTTP_KINDS = ("webhook", "slack", "discord", "teams", "google_chat", "matrix", "telegram", "ntfy")
T0 = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
URL = "https://hub.example/#/nodes/nod_1"


def opening(opened: bool = True) -> Message:
    item = Item(title="Stage left: input silent on channel 2", node_id="nod_1", node_name="Stage left", channel="2", url=URL)
    return Message(
        kind="health.opened" if opened else "health.resolved",
        title="Stage left: input silent on channel 2",
        severity="critical",
        opened=opened,
        site="Main hall",
        since=T0,
        thread_key="health:evt_1",
        items=(item,),
        url=URL,
    )


def storm(n: int = 50) -> Message:
    items = tuple(
        Item(title=f"Box {i} went offline", node_id=f"nod_{i}", node_name=f"Box {i}", url=f"{URL}{i}") for i in range(n)
    )
    return Message(
        kind="node.offline",
        title=f"{n} boxes of Main hall went offline",
        severity="warning",
        opened=True,
        site="Main hall",
        since=T0,
        thread_key="storm:node.offline:sit_a",
        items=items,
        url="https://hub.example/#/nodes?site=sit_a",
    )


def spec_for(r: Receivers, kind: str, **secrets: Any) -> send.ChannelSpec:
    config, secret_values = r.channel(kind)
    if kind == "webhook":
        secret = signing.new_signing_secret()
        r.trust_signing_secret(secret)
        secret_values = {"signing_secret": secret}
    return send.ChannelSpec(id="chn_1", name=f"test {kind}", kind=kind, config=config, secrets={**secret_values, **secrets})


def deliver(spec: send.ChannelSpec, message: Message, **kwargs: Any) -> send.Attempt:
    options: dict[str, Any] = {"notification_id": "ntf_1", "reply_ref": None, "allow_private": True, **kwargs}
    return asyncio.run(send.deliver(spec, message, **options))


def verdict(attempt: send.Attempt) -> str:
    return classify(attempt.status, attempt.error, attempt.headers, datetime.now(UTC)).outcome


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_each_kind_takes_an_opening_its_resolution_and_a_storm_of_fifty_within_the_providers_format(
    r: Receivers, kind: str
) -> None:
    spec = spec_for(r, kind)
    first = deliver(spec, opening(), notification_id="ntf_open")
    resolved = deliver(spec, opening(opened=False), notification_id="ntf_resolved", reply_ref=first.provider_ref)
    burst = deliver(spec, storm(), notification_id="ntf_storm")

    for attempt in (first, resolved, burst):
        assert verdict(attempt) == "delivered", attempt
        assert attempt.error is None and attempt.message.startswith("HTTP 2") and not attempt.refused
    assert r.rejected() == []
    opened, resolution, many = r.accepted(kind)
    assert "Stage left" in opened.text and "Main hall" in opened.text
    assert "Resolved" in resolution.text or (kind == "webhook" and resolution.json["opened"] is False)
    assert "50" in many.text and ("and 40 more" in many.text or kind == "webhook")
    if kind in ("discord", "matrix", "telegram", "google_chat", "ntfy"):
        assert first.provider_ref, f"{kind} gives the sent message's id"


def test_a_matrix_resolution_replies_to_the_opening_event(r: Receivers) -> None:
    spec = spec_for(r, "matrix")
    first = deliver(spec, opening(), notification_id="ntf_a")
    deliver(spec, opening(opened=False), notification_id="ntf_b", reply_ref=first.provider_ref)
    _, resolution = r.accepted("matrix")
    assert resolution.json["m.relates_to"] == {"m.in_reply_to": {"event_id": first.provider_ref}}
    assert resolution.header("Authorization") == f"Bearer {r.tokens['matrix']}"


def test_a_matrix_retry_of_one_notification_is_the_same_event(r: Receivers) -> None:
    spec = spec_for(r, "matrix")
    once, again = deliver(spec, opening(), notification_id="ntf_same"), deliver(spec, opening(), notification_id="ntf_same")
    assert once.provider_ref == again.provider_ref
    assert len(r.accepted("matrix")) == 1


def test_a_telegram_resolution_replies_to_the_opening_message(r: Receivers) -> None:
    spec = spec_for(r, "telegram")
    first = deliver(spec, opening())
    deliver(spec, opening(opened=False), reply_ref=first.provider_ref)
    _, resolution = r.accepted("telegram")
    assert resolution.json["reply_parameters"]["message_id"] == int(first.provider_ref or "0")


def test_google_chat_resolution_lands_in_the_openings_thread(r: Receivers) -> None:
    spec = spec_for(r, "google_chat")
    deliver(spec, opening())
    deliver(spec, opening(opened=False))
    first, second = r.accepted("google_chat")
    assert first.query["messageReplyOption"] == ["REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"]
    assert first.json["thread"] == second.json["thread"] == {"threadKey": "health:evt_1"}


def test_the_webhook_is_signed_with_the_channels_secret_and_names_the_notification(r: Receivers) -> None:
    spec = spec_for(r, "webhook")
    deliver(spec, opening(), notification_id="ntf_sig")
    (request,) = r.accepted("webhook")
    signing.verify(
        spec.secrets["signing_secret"], request.header("X-Hark-Signature") or "", request.body, int(datetime.now(UTC).timestamp())
    )
    assert request.header("X-Hark-Notification") == "ntf_sig" and request.header("X-Hark-Event") == "health.opened"


def test_a_webhook_signed_with_another_secret_is_refused_by_the_receiver_and_fails(r: Receivers) -> None:
    spec = replace(spec_for(r, "webhook"), secrets={"signing_secret": signing.new_signing_secret()})
    attempt = deliver(spec, opening())
    assert attempt.status == 401 and verdict(attempt) == "failed"
    assert "signature" in (attempt.error or "")


def test_send_test_sends_a_clearly_labelled_test_message(r: Receivers) -> None:
    for kind in ("slack", "matrix", "ntfy"):
        attempt = asyncio.run(send.send_test(spec_for(r, kind), allow_private=True, hub_url="https://hub.example/"))
        assert verdict(attempt) == "delivered", attempt
        (request,) = r.accepted(kind)
        assert send.TEST_TITLE in request.text or send.TEST_TITLE in (request.header("Title") or "")
    assert r.rejected() == []


@pytest.mark.parametrize(
    "url, allow_private, why",
    [
        ("http://169.254.169.254/latest/meta-data", True, "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", True, "metadata"),
        ("http://169.254.10.1/hook", True, "link-local"),
        ("http://[fe80::1]/hook", True, "link-local"),
        ("http://127.0.0.1:9/hook", False, "loopback"),
        ("http://10.1.2.3/hook", False, "private"),
        ("ftp://example.org/hook", True, "scheme"),
    ],
)
def test_a_refused_destination_is_never_contacted_and_fails_at_once(
    r: Receivers, url: str, allow_private: bool, why: str
) -> None:
    spec = send.ChannelSpec(id=None, name="x", kind="slack", config={}, secrets={"webhook_url": url})
    attempt = deliver(spec, opening(), allow_private=allow_private)
    assert attempt.refused and attempt.status is None
    assert why in (attempt.error or "") and attempt.message.startswith("refused")
    assert r.requests() == []


def test_a_host_name_that_does_not_resolve_now_is_retried_not_failed(r: Receivers) -> None:
    """A resolver outage at the hub must not turn an alarm into a permanent failure."""
    spec = replace(spec_for(r, "webhook"), config={"url": "https://no-such-host.invalid/hook"})
    attempt = deliver(spec, opening())
    assert not attempt.refused and attempt.status is None and "does not resolve" in (attempt.error or "")
    assert verdict(attempt) == "retry" and attempt.message.startswith("not sent")


def test_the_receivers_own_loopback_is_refused_unless_private_destinations_are_allowed(r: Receivers) -> None:
    for kind in HTTP_KINDS:
        attempt = deliver(spec_for(r, kind), opening(), allow_private=False)
        assert attempt.refused and "loopback" in (attempt.error or ""), kind
    assert r.requests() == []


def test_a_503_is_retried_no_sooner_than_its_retry_after(r: Receivers) -> None:
    spec = spec_for(r, "slack")
    r.script("slack", [Answer(503, {"Retry-After": "120"})])
    attempt = deliver(spec, opening())
    judged = classify(attempt.status, attempt.error, attempt.headers, datetime.now(UTC))
    assert attempt.status == 503 and judged.outcome == "retry" and judged.retry_after_s == 120
    assert r.accepted("slack") == []


def test_a_receiver_answering_503_three_times_then_200_gets_the_message_once(r: Receivers) -> None:
    spec = spec_for(r, "webhook")
    r.script("webhook", [503, 503, 503, 200])
    outcomes = [verdict(deliver(spec, opening(), notification_id="ntf_x")) for _ in range(4)]
    assert outcomes == ["retry", "retry", "retry", "delivered"]
    assert len(r.accepted("webhook")) == 1 and len(r.requests("webhook")) == 4


@pytest.mark.parametrize("kind, seconds", [("matrix", "2"), ("telegram", "2"), ("discord", "1")])
def test_a_429_with_its_wait_in_the_body_becomes_a_retry_after(r: Receivers, kind: str, seconds: str) -> None:
    r.script(kind, [429])
    attempt = deliver(spec_for(r, kind), opening())
    assert attempt.status == 429 and attempt.headers["Retry-After"] == seconds
    assert verdict(attempt) == "retry"


@pytest.mark.parametrize(
    "kind, wrong, said",
    [
        ("slack", {"webhook_url": "/slack/services/T0/B0/nope"}, "no_service"),
        ("discord", {"webhook_url": "/discord/api/webhooks/1/nope"}, "Unknown Webhook"),
        ("telegram", {"bot_token": "1:nope"}, "Unauthorized"),
        ("matrix", {"access_token": "syt_nope"}, "M_UNKNOWN_TOKEN: Unrecognised access token"),
        ("ntfy", {"token": "tk_nope"}, "forbidden"),
        ("google_chat", {"webhook_url": "/google_chat/v1/spaces/AAAAhark/messages?key=k&token=t"}, "UNAUTHENTICATED"),
    ],
)
def test_a_4xx_fails_at_once_with_the_providers_message(r: Receivers, kind: str, wrong: dict[str, str], said: str) -> None:
    spec = spec_for(r, kind)
    secrets = {k: (r.base + v if v.startswith("/") else v) for k, v in wrong.items()}
    attempt = deliver(replace(spec, secrets={**spec.secrets, **secrets}), opening())
    assert attempt.status is not None and 400 <= attempt.status < 500
    assert verdict(attempt) == "failed"
    assert said in (attempt.error or "") and said in attempt.message


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_no_secret_comes_back_in_an_attempt_even_when_the_provider_echoes_it(r: Receivers, kind: str) -> None:
    spec = spec_for(r, kind)
    values = [str(v) for v in spec.secrets.values()] + [r.tokens[kind]]
    echoed = " | ".join(values).encode()
    r.script(
        kind,
        [
            Answer(
                400, {"X-Echo": echoed.decode()}, b'{"error": "bad request: ' + echoed + b'", "description": "' + echoed + b'"}'
            )
        ],
    )
    attempt = deliver(spec, opening())
    assert attempt.status == 400
    shown = f"{attempt.error} {attempt.message} {attempt.headers}"
    assert "[redacted]" in shown
    for value in values:
        assert value not in shown
    for part in r.tokens[kind].replace("?", "/").replace("&", "/").replace("=", "/").split("/"):
        if len(part) >= 16:
            assert part not in shown


def test_a_refusal_naming_the_url_does_not_show_its_secret_path(r: Receivers) -> None:
    spec = send.ChannelSpec(
        id=None, name="x", kind="slack", config={}, secrets={"webhook_url": "http://[::1/services/T0/B0/s3cretT0ken"}
    )
    attempt = deliver(spec, opening())
    assert attempt.refused and "s3cretT0ken" not in f"{attempt.error} {attempt.message}"


def test_a_provider_that_does_not_answer_in_time_is_no_response_and_retried(r: Receivers) -> None:
    r.script("ntfy", [Answer(200, delay_s=3.0)])
    attempt = deliver(spec_for(r, "ntfy"), opening(), timeout_s=0.5)
    assert attempt.status is None and "timed out" in (attempt.error or "")
    assert verdict(attempt) == "retry"
    r.wait_for("ntfy", 1)  # the slow answer lands before the next test clears the receivers


def test_a_closed_port_is_no_response_and_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = send.ChannelSpec(id=None, name="x", kind="teams", config={}, secrets={"webhook_url": f"http://127.0.0.1:{port}/x"})
    attempt = deliver(spec, opening())
    assert attempt.status is None and attempt.error and verdict(attempt) == "retry"


def test_a_redirect_is_not_followed(r: Receivers) -> None:
    r.script("teams", [Answer(302, {"Location": "http://169.254.169.254/latest"}, b"")])
    attempt = deliver(spec_for(r, "teams"), opening())
    assert attempt.status == 302 and "redirect not followed" in (attempt.error or "")
    assert verdict(attempt) == "failed"
    assert len(r.requests()) == 1


def test_a_channel_missing_a_setting_is_not_sent_and_fails_at_once(r: Receivers) -> None:
    spec = send.ChannelSpec(id=None, name="x", kind="matrix", config={"homeserver_url": r.url("matrix")}, secrets={})
    attempt = deliver(spec, opening())
    assert attempt.refused and "config.room_id" in (attempt.error or "")
    assert r.requests() == []


def test_the_connection_goes_to_the_checked_address_and_to_no_other_host(r: Receivers) -> None:
    # "hooks.example" resolves nowhere: the request reaches the receiver only through the pinned address.
    destination = Destination(scheme="http", host="hooks.example", port=r.port, addresses=("127.0.0.1",))
    url = r.url("slack").replace(f"127.0.0.1:{r.port}", f"hooks.example:{r.port}")
    body = json.dumps({"text": "pinned"}).encode()
    response = asyncio.run(http_send.send(destination, "POST", url, {"Content-Type": "application/json"}, body, 5.0))
    assert response.status == 200 and r.accepted("slack")[0].header("Host") == f"hooks.example:{r.port}"
    elsewhere = asyncio.run(http_send.send(destination, "POST", r.url("slack"), {"Content-Type": "application/json"}, body, 5.0))
    assert elsewhere.status is None and "not the checked destination" in (elsewhere.error or "")
    assert len(r.requests()) == 1


def test_https_is_verified_against_the_system_store(r: Receivers) -> None:
    spec = send.ChannelSpec(id=None, name="x", kind="slack", config={}, secrets={"webhook_url": r.https_url("slack")})
    attempt = deliver(spec, opening())
    assert attempt.status is None and "CERTIFICATE_VERIFY_FAILED" in (attempt.error or "")
    assert r.accepted("slack") == []


PINNED_TLS = """
import asyncio, json, sys
from hark_fleet.hub.notify import http_send
from hark_fleet.hub.notify.outbound import Destination
url, port = sys.argv[1], int(sys.argv[2])
message = {"text": "pinned"}
trusted = asyncio.run(http_send.send(
    Destination("https", "localhost", port, ("127.0.0.1",)), "POST", url, {"Content-Type": "application/json"},
    json.dumps(message).encode(), 5.0))
wrong = url.replace("localhost", "wrong.example")
mismatch = asyncio.run(http_send.send(
    Destination("https", "wrong.example", port, ("127.0.0.1",)), "POST", wrong, {"Content-Type": "application/json"},
    json.dumps(message).encode(), 5.0))
print(json.dumps([trusted.status, mismatch.status, mismatch.error]))
"""


def test_tls_to_a_pinned_address_still_verifies_the_urls_host_name(r: Receivers, tmp_path: Path) -> None:
    # A process trusting the test CA (SSL_CERT_FILE): the pinned 127.0.0.1 passes as localhost, not as another name.
    ca = tmp_path / "ca.pem"
    ca.write_text(r.ca_pem)
    env = {**os.environ, "SSL_CERT_FILE": str(ca)}
    command = [sys.executable, "-c", PINNED_TLS, r.https_url("slack"), str(r.https_port)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    trusted, mismatch, error = json.loads(result.stdout.strip().splitlines()[-1])
    assert trusted == 200 and len(r.accepted("slack")) == 1
    assert mismatch is None and "wrong.example" in error
