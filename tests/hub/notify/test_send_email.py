"""send.deliver by email to a real aiosmtpd: STARTTLS with AUTH, implicit TLS, a plain relay; SMTP replies as retries."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hark_fleet.hub.notify import send
from hark_fleet.hub.notify.retry import classify

from tests.hub.notify.test_send_http import opening, storm
from tests.notify_receivers import Answer, Receivers


def email_spec(r: Receivers, security: str = "starttls") -> send.ChannelSpec:
    config, secrets = r.email_config(security)
    return send.ChannelSpec(id="chn_mail", name="ops mail", kind="email", config=config, secrets=secrets)


def deliver(spec: send.ChannelSpec, message: Any = None, **kwargs: Any) -> send.Attempt:
    options: dict[str, Any] = {"notification_id": "ntf_1", "reply_ref": None, "allow_private": True, **kwargs}
    return asyncio.run(send.deliver(spec, message or opening(), **options))


def verdict(attempt: send.Attempt) -> str:
    return classify(attempt.status, attempt.error, attempt.headers, datetime.now(UTC)).outcome


def test_an_opening_its_resolution_and_a_storm_arrive_over_starttls_with_login(r: Receivers) -> None:
    spec = email_spec(r)
    first = deliver(spec, opening())
    resolved = deliver(spec, opening(opened=False), reply_ref=first.provider_ref)
    burst = deliver(spec, storm())
    for attempt in (first, resolved, burst):
        assert attempt.status == 250 and verdict(attempt) == "delivered", attempt
        assert attempt.message.startswith("SMTP 250")
    mails = r.messages()
    assert len(mails) == 3
    assert all(m.server == "smtp" and m.tls and m.login == "hark" for m in mails)
    assert mails[0].rcpt_tos == ["ops@example.org", "oncall@example.org"]
    opened, resolution, many = (m.message for m in mails)
    assert opened is not None and resolution is not None and many is not None
    assert opened["Subject"] == "[hark] Stage left: input silent on channel 2" and opened["Date"]
    assert opened["Message-ID"] == first.provider_ref
    assert resolution["In-Reply-To"] == opened["Message-ID"] and resolution["Subject"].startswith("[hark] Resolved:")
    plain = many.get_body(("plain",))
    assert plain is not None and "and 40 more" in plain.get_content()


def test_implicit_tls_and_a_plain_local_relay_both_deliver(r: Receivers) -> None:
    assert deliver(email_spec(r, "tls")).status == 250
    assert deliver(email_spec(r, "none")).status == 250
    tls, relay = r.messages()
    assert (tls.server, tls.tls) == ("smtps", True)
    assert (relay.server, relay.tls, relay.login) == ("relay", False, None)


def test_without_the_private_ca_the_servers_certificate_is_not_trusted(r: Receivers) -> None:
    spec = email_spec(r)
    attempt = deliver(replace(spec, config={k: v for k, v in spec.config.items() if k != "ca_pem"}))
    assert attempt.status is None and "CERTIFICATE_VERIFY_FAILED" in (attempt.error or "")
    assert r.messages() == []


def test_a_wrong_password_fails_at_once_without_showing_it(r: Receivers) -> None:
    spec = replace(email_spec(r), secrets={"password": "not-the-password-1234"})
    attempt = deliver(spec)
    assert attempt.status == 400 and verdict(attempt) == "failed"
    assert "535" in attempt.message
    assert "not-the-password-1234" not in f"{attempt.error} {attempt.message}"


@pytest.mark.parametrize("reply, outcome", [(451, "retry"), (421, "retry"), (550, "failed"), (554, "failed")])
def test_a_temporary_reply_is_retried_and_a_permanent_one_fails(r: Receivers, reply: int, outcome: str) -> None:
    r.script("email", [Answer(reply)])
    attempt = deliver(email_spec(r))
    assert verdict(attempt) == outcome
    assert str(reply) in attempt.message
    assert r.messages() == []


def test_a_server_that_does_not_answer_in_time_is_retried(r: Receivers) -> None:
    r.script("email", [Answer(250, delay_s=3.0)])
    attempt = deliver(email_spec(r), timeout_s=0.5)
    assert attempt.status is None and "timed out" in (attempt.error or "")
    assert verdict(attempt) == "retry"


def test_loopback_smtp_is_refused_unless_private_destinations_are_allowed(r: Receivers) -> None:
    attempt = deliver(email_spec(r), allow_private=False)
    assert attempt.refused and "loopback" in (attempt.error or "")


def test_send_test_mails_a_clearly_labelled_test(r: Receivers) -> None:
    attempt = asyncio.run(send.send_test(email_spec(r), allow_private=True, hub_url="https://hub.example/"))
    assert attempt.status == 250
    (mail,) = r.messages()
    assert mail.message is not None and send.TEST_TITLE in mail.message["Subject"]


def test_the_socket_of_a_sent_email_is_left_to_its_transport_so_the_next_connection_is_not_refused(r: Receivers) -> None:
    """Closing the socket under aiosmtplib's transport freed its descriptor while the loop still mapped it to that
    transport: the next connection given the same number failed with "File descriptor N is used by transport"."""
    mail = email_spec(r)
    config, secrets = r.channel("slack")
    slack = send.ChannelSpec(id="chn_slack", name="ops chat", kind="slack", config=config, secrets=secrets)

    async def alternate() -> list[send.Attempt]:
        attempts = []
        for _ in range(10):
            for spec in (mail, slack):
                options: dict[str, Any] = {"notification_id": "ntf_1", "reply_ref": None, "allow_private": True}
                attempts.append(await send.deliver(spec, opening(), **options))
        return attempts

    attempts = asyncio.run(alternate())
    assert [a.error for a in attempts if verdict(a) != "delivered"] == []
    assert len(r.messages()) == 10 and len(r.accepted("slack")) == 10
