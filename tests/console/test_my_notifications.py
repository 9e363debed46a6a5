"""My notifications in headless Chromium against a real hub: a hub condition opened through the API reaches a subscribed
webhook channel (a real loopback receiver, which verifies the signature), and the console lists the notification
(newest first, filtered by state, kind and severity) and shows what it said, its channel and its attempts; the pages
pass axe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hark_fleet.hub.notify import signing
from playwright.sync_api import BrowserContext, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS
from tests.console.test_console import sign_in
from tests.console.test_notify_channels import WebhookReceiver, receiver  # noqa: F401 - the receiver fixture
from tests.harness import HubProcess, wait_for

CHANNELS = "/api/v1/notification-channels"
NOTIFICATIONS = "/api/v1/notifications"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("my-notifications-hub"))
    process.start()
    with process.admin() as admin:
        answer = admin.put("/api/v1/settings/notifications", json={"allow_private_destinations": True, "storm_window_s": 0})
        assert answer.status_code == 200, answer.text
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def delivered(hub: HubProcess, channel_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        answer = admin.get(NOTIFICATIONS, params={"channel_id": channel_id, "state": "delivered"})
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


def test_a_hub_condition_sent_to_a_subscribed_webhook_is_listed_and_shown(
    hub: HubProcess,
    checked: BrowserContext,
    receiver: WebhookReceiver,  # noqa: F811 - the fixture
) -> None:
    with hub.admin() as admin:
        made = admin.post(
            CHANNELS,
            json={
                "name": "Hub alarms",
                "kind": "webhook",
                "config": {"url": receiver.url("/alarms")},
                "subscription": {"events": ["health.opened", "health.resolved"], "min_severity": "warning"},
            },
        )
        assert made.status_code == 201, made.text
        channel = made.json()["data"]
        opened = admin.post(
            "/api/v1/health-events",
            json={"kind": "hub.storage_full", "severity": "critical", "details": {"path": "/var/lib/hark-hub", "free_bytes": 0}},
        )
        assert opened.status_code == 201, opened.text
    wait_for(lambda: delivered(hub, channel["id"]), 30, "the notification delivered to the webhook")
    notification = delivered(hub, channel["id"])[0]
    sent = receiver.to("/alarms")
    assert len(sent) == 1
    signing.verify(channel["signing_secret"], sent[0].headers["x-hark-signature"], sent[0].body, int(time.time()))

    page: Page = checked.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/notify/channels")
    page.get_by_role("link", name="My notifications").click()
    expect(page.get_by_role("heading", name="My notifications")).to_be_visible()
    table = page.locator(".notification-table")
    row = table.locator(f"tbody tr[data-notification-id='{notification['id']}']")
    expect(row).to_contain_text(notification["title"])
    expect(row.locator(".sev")).to_have_text("critical")
    expect(row).to_contain_text("delivered")
    expect(row).to_contain_text("Hub alarms")
    expect(row).to_contain_text("health.opened")
    expect(page.locator(".notify-outbox")).to_contain_text("Nothing waiting")
    expect(page.locator(".notify-outbox")).to_contain_text("In the last 24 h: 1 delivered, 0 failed.")
    page.screenshot(path=str(ARTIFACTS / "my-notifications.png"), full_page=True)
    violations = run_axe(page)
    assert not violations, describe(violations)

    page.get_by_label("Severity").select_option("warning")
    expect(table.locator("caption")).to_have_text("No notification matches.")
    page.get_by_label("Severity").select_option("")
    page.get_by_label("State").select_option("delivered")
    page.get_by_label("Kind").select_option("health.opened")
    page.get_by_role("button", name="Filter").click()
    expect(row).to_be_visible()
    assert "state=delivered" in page.url and "kind=health.opened" in page.url

    row.get_by_role("link", name=notification["title"]).click()
    expect(page.get_by_role("heading", name=notification["title"])).to_be_visible()
    facts = page.locator(".facts")
    expect(facts).to_contain_text("Hub alarms")
    expect(facts).to_contain_text("health.opened")
    attempts = page.locator(".notify-delivery-table tbody tr")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("delivered")
    expect(attempts.first).to_contain_text("200")
    page.screenshot(path=str(ARTIFACTS / "notification.png"), full_page=True)
    violations = run_axe(page)
    assert not violations, describe(violations)
    page.get_by_role("link", name="Hub alarms").click()
    expect(page.get_by_role("heading", name="Hub alarms")).to_be_visible()
    log = page.locator(".notify-delivery-table tbody tr[data-test=false]")
    expect(log).to_have_count(1)
    expect(log.get_by_role("link", name="notification")).to_have_attribute("href", f"#/notifications/{notification['id']}")
    page.get_by_role("link", name="Its notifications").click()
    expect(page.get_by_text("Showing one channel's only")).to_be_visible()
    expect(page.locator(f".notification-table tbody tr[data-notification-id='{notification['id']}']")).to_be_visible()
    assert f"channel_id={channel['id']}" in page.url
    assert not errors, f"errors in the console's scripts: {errors}"
