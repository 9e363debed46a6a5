"""The notifier in a real hub process, to a real loopback webhook receiver that verifies the signature: a health event
raised through the API reaches a subscribed channel once even through 503s, its resolution threads with it, a
failing channel opens the hub's notify.failed condition, and a notice still in the outbox when the hub stops is
delivered after the next start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import HubProcess, running_hub, wait_for
from tests.notify_receivers import Receivers

ENV = {"HARK_NOTIFY_BACKOFF_BASE_S": "0.2"}
SUBSCRIPTION = {"events": ["health.opened", "health.resolved"], "min_severity": "warning"}


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    with Receivers() as r:
        yield r


def allow_loopback(admin: httpx.Client, **settings: Any) -> None:
    response = admin.put("/api/v1/settings/notifications", json={"allow_private_destinations": True, **settings})
    assert response.status_code == 200, response.text


def webhook_channel(admin: httpx.Client, receivers: Receivers, name: str = "ops hook") -> dict[str, Any]:
    config, secrets = receivers.channel("webhook")
    body = {"name": name, "kind": "webhook", "config": config, "secrets": secrets, "subscription": SUBSCRIPTION}
    response = admin.post("/api/v1/notification-channels", json=body)
    assert response.status_code == 201, response.text
    channel: dict[str, Any] = response.json()["data"]
    receivers.trust_signing_secret(channel["signing_secret"])
    return channel


def raise_event(admin: httpx.Client, kind: str = "mains.lost", severity: str = "warning") -> dict[str, Any]:
    response = admin.post("/api/v1/health-events", json={"kind": kind, "severity": severity, "details": {"channel": "2"}})
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()["data"]
    return event


def test_a_health_event_reaches_a_webhook_once_through_three_503s_and_its_resolution_threads_with_it(
    tmp_path: Path, receivers: Receivers
) -> None:
    with running_hub(tmp_path, env_extra=ENV) as hub, hub.admin() as admin:
        allow_loopback(admin)
        channel = webhook_channel(admin, receivers)
        receivers.script("webhook", [503, 503, 503])
        event = raise_event(admin)
        [opening] = receivers.wait_for("webhook", 1)
        body = opening.json
        assert (body["kind"], body["opened"], body["severity"]) == ("health.opened", True, "warning")
        assert body["thread_key"] == f"health:{event['id']}"
        assert "mains lost on channel 2" in body["title"]
        assert len(receivers.requests("webhook")) == 4 and receivers.rejected() == []

        response = admin.post(f"/api/v1/health-events/{event['id']}/resolve", json={})
        assert response.status_code == 200, response.text
        [_, resolution] = receivers.wait_for("webhook", 2)
        assert (resolution.json["opened"], resolution.json["thread_key"]) == (False, body["thread_key"])

        deliveries = admin.get(f"/api/v1/notification-channels/{channel['id']}/deliveries").json()["data"]
        assert sorted(d["outcome"] for d in deliveries) == ["delivered", "delivered", "retry", "retry", "retry"]


def test_a_channel_answering_404_fails_at_once_and_opens_the_hubs_notify_failed_condition(
    tmp_path: Path, receivers: Receivers
) -> None:
    with running_hub(tmp_path, env_extra=ENV) as hub, hub.admin() as admin:
        allow_loopback(admin)
        channel = webhook_channel(admin, receivers)
        receivers.script("webhook", [404])
        raise_event(admin)

        def failed_condition() -> dict[str, Any] | None:
            rows = admin.get("/api/v1/health-events", params={"kind": "notify.failed"}).json()["data"]
            return rows[0] if rows else None

        wait_for(lambda: failed_condition() is not None, 30, "the notify.failed condition")
        condition = failed_condition()
        assert condition is not None and condition["details"]["channel_id"] == channel["id"]
        assert len(receivers.requests("webhook")) == 1  # not retried, and its own failure is not sent to it


def test_a_notice_in_the_outbox_when_the_hub_stops_is_delivered_after_the_next_start(
    tmp_path: Path, receivers: Receivers
) -> None:
    hub = HubProcess(tmp_path, env_extra=ENV)
    hub.start()
    try:
        with hub.admin() as admin:
            allow_loopback(admin, storm_window_s=10)  # the notice waits 10 s before it is routed
            webhook_channel(admin, receivers)
            event = raise_event(admin)
        assert hub.stop() == 0
        assert receivers.requests("webhook") == []
        hub.start()
        try:
            [delivered] = receivers.wait_for("webhook", 1, timeout_s=40)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{hub.log()}") from err
        assert delivered.json["thread_key"] == f"health:{event['id']}"
    finally:
        code = hub.stop()
    assert code == 0, hub.log()
