"""Testing notification channels (issue 21) against real loopback receivers: a test without saving reaches every kind
in its provider's documented format, a provider's refusal is a 200 that says why, a saved webhook signs with the
secret shown once (and only with the new one after PUT .../config), and loopback is refused until an admin allows
private destinations."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hark_fleet.hub.notify import signing

from tests.harness import HubProcess
from tests.notify_receivers import Answer, Receivers, receivers

CHANNELS = "/api/v1/notification-channels"
SETTINGS = "/api/v1/settings/notifications"
HTTP_KINDS = ("slack", "discord", "teams", "google_chat", "matrix", "telegram", "ntfy")

notify_receivers = pytest.fixture(scope="module")(receivers)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def allow_private(hub: HubProcess, allowed: bool) -> None:
    with hub.admin() as admin:
        response = admin.put(SETTINGS, json={"allow_private_destinations": allowed})
    assert response.status_code == 200, response.text


@pytest.fixture
def loopback(hub: HubProcess, notify_receivers: Receivers) -> Iterator[Receivers]:
    """The receivers, emptied, with the hub allowed to send to loopback."""
    allow_private(hub, True)
    notify_receivers.clear()
    yield notify_receivers


def create(admin: httpx.Client, kind: str, config: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    response = admin.post(CHANNELS, json={"name": unique(kind), "kind": kind, "config": config, "secrets": secrets})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def secret_values(secrets: dict[str, Any]) -> list[str]:
    return [str(v) for v in secrets.values()]


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_an_unsaved_channel_of_each_kind_reaches_its_receiver_in_the_documented_format(
    hub: HubProcess, loopback: Receivers, kind: str
) -> None:
    config, secrets = loopback.channel(kind)
    with hub.admin() as admin:
        before = len(admin.get(CHANNELS, params={"limit": 200}).json()["data"])
        response = admin.post(f"{CHANNELS}/test", json={"kind": kind, "config": config, "secrets": secrets})
        assert response.status_code == 200, response.text
        answer = response.json()["data"]
        assert answer["ok"] is True and 200 <= answer["status_code"] < 300, answer
        assert answer["latency_ms"] >= 0 and answer["message"]
        assert len(admin.get(CHANNELS, params={"limit": 200}).json()["data"]) == before  # nothing saved
    assert len(loopback.wait_for(kind, 1)) == 1 and loopback.rejected() == []
    assert all(s not in response.text for s in secret_values(secrets))


def test_an_unsaved_email_channel_is_sent_over_starttls_with_its_login(hub: HubProcess, loopback: Receivers) -> None:
    config, secrets = loopback.channel("email")
    with hub.admin() as admin:
        response = admin.post(f"{CHANNELS}/test", json={"kind": "email", "config": config, "secrets": secrets})
    assert response.status_code == 200 and response.json()["data"]["ok"] is True, response.text
    mail = loopback.wait_for("email", 1)[0]
    assert mail.tls and mail.login == config["username"]  # type: ignore[union-attr]
    assert sorted(mail.rcpt_tos) == sorted(config["recipients"])  # type: ignore[union-attr]
    assert secrets["password"] not in response.text and secrets["password"] not in hub.log()


def test_a_provider_refusing_the_test_is_a_200_that_says_why(hub: HubProcess, loopback: Receivers) -> None:
    config, secrets = loopback.channel("slack")
    wrong = {"webhook_url": secrets["webhook_url"] + "-revoked"}
    with hub.admin() as admin:
        refused = admin.post(f"{CHANNELS}/test", json={"kind": "slack", "config": config, "secrets": wrong})
        assert refused.status_code == 200, refused.text
        answer = refused.json()["data"]
        assert (answer["ok"], answer["status_code"]) == (False, 404) and "no_service" in answer["message"]
        assert "-revoked" not in refused.text  # the secret URL is never echoed

        loopback.script("discord", [Answer(503)])
        channel = create(admin, "discord", *loopback.channel("discord"))
        unavailable = admin.post(f"{CHANNELS}/{channel['id']}/test").json()["data"]
        assert (unavailable["ok"], unavailable["status_code"]) == (False, 503)
        assert admin.get(f"{CHANNELS}/{channel['id']}").json()["data"]["last_test"]["status_code"] == 503
        passed = admin.post(f"{CHANNELS}/{channel['id']}/test").json()["data"]
        assert (passed["ok"], passed["status_code"]) == (True, 200)
        last = admin.get(f"{CHANNELS}/{channel['id']}").json()["data"]["last_test"]
        assert last == passed and last["at"].endswith("Z")
        deliveries = admin.get(f"{CHANNELS}/{channel['id']}/deliveries")
    assert deliveries.status_code == 200, deliveries.text
    attempts = deliveries.json()["data"]
    assert [(d["test"], d["outcome"]) for d in attempts] == [(True, "delivered"), (True, "failed")]  # newest first


def verified_with(received: Any, secret: str) -> bool:
    try:
        signing.verify(secret, received.header(signing.SIGNATURE_HEADER), received.body, int(time.time()))
    except signing.SignatureInvalid:
        return False
    return True


def test_a_webhook_signs_with_the_secret_shown_once_and_only_the_new_one_after_put_config(
    hub: HubProcess, loopback: Receivers
) -> None:
    config, _ = loopback.channel("webhook")
    with hub.admin() as admin:
        channel = create(admin, "webhook", config, {})
        first = channel["signing_secret"]
        loopback.trust_signing_secret(first)
        tested = admin.post(f"{CHANNELS}/{channel['id']}/test").json()["data"]
        assert tested["ok"] is True, tested
        sent = loopback.wait_for("webhook", 1)[-1]
        assert verified_with(sent, first)
        assert sent.json["version"] == 1  # type: ignore[union-attr]

        # an edit tested before saving signs with the saved secret
        edited = admin.post(f"{CHANNELS}/test", json={"kind": "webhook", "config": config, "channel_id": channel["id"]})
        assert edited.json()["data"]["ok"] is True, edited.text
        assert verified_with(loopback.wait_for("webhook", 2)[-1], first)

        rotated = admin.put(f"{CHANNELS}/{channel['id']}/config", json={"config": config})
        second = rotated.json()["data"]["signing_secret"]
        loopback.trust_signing_secret(second)
        assert admin.post(f"{CHANNELS}/{channel['id']}/test").json()["data"]["ok"] is True
        latest = loopback.wait_for("webhook", 3)[-1]
        assert verified_with(latest, second) and not verified_with(latest, first)
    assert loopback.rejected() == []
    events = json.dumps(admin_audit(hub, channel["id"]))
    assert first not in events and second not in events and first not in hub.log() and second not in hub.log()


def admin_audit(hub: HubProcess, target_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        events: list[dict[str, Any]] = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return events


def test_loopback_is_refused_until_an_admin_allows_private_destinations(hub: HubProcess, loopback: Receivers) -> None:
    config, secrets = loopback.channel("ntfy")
    body = {"kind": "ntfy", "config": config, "secrets": secrets}
    allow_private(hub, False)
    with hub.admin() as admin:
        refused = admin.post(f"{CHANNELS}/test", json=body)
        assert refused.status_code == 200, refused.text
        answer = refused.json()["data"]
        assert (answer["ok"], answer["status_code"]) == (False, None) and "refused" in answer["message"]
        assert loopback.requests("ntfy") == []
        allow_private(hub, True)
        allowed = admin.post(f"{CHANNELS}/test", json=body).json()["data"]
    assert allowed["ok"] is True and len(loopback.wait_for("ntfy", 1)) == 1
