"""Notification channels in headless Chromium against a real hub and a real loopback webhook receiver: an admin allows
private destinations in the settings panel; a webhook channel is tested before it is saved (a bad URL's 400 at its
field, then a test the receiver gets), created with its signing secret shown once, tested again (the receiver verifies
the signature with the secret from the page), its subscription edited, its delivery log read, its configuration
replaced (a new secret), disabled and deleted; a viewer reads without changing; the pages pass axe and fit a phone."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hark_fleet.hub.notify import signing
from playwright.sync_api import BrowserContext, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS
from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import HubProcess, wait_for
from tests.notify_receivers import Receivers

CHANNELS = "/api/v1/notification-channels"
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A loopback HTTP server that keeps every POST it gets and answers 200."""

    server: http.server.ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    requests: list[Received] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield WebhookReceiver(server, requests)
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("notify-channels-hub"))
    process.start()
    process.ensure_site("main-hall")
    process.ensure_site("foyer")
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


@pytest.fixture
def tab(checked: BrowserContext) -> Iterator[Page]:
    page = checked.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"errors in the console's scripts: {errors}"


def assert_accessible(page: Page) -> None:
    violations = run_axe(page)
    assert not violations, describe(violations)


def verified(received: Received, secret: str) -> None:
    signing.verify(secret, received.headers["x-hark-signature"], received.body, int(time.time()))


def test_a_webhook_is_tested_before_saving_created_with_its_secret_shown_once_tested_edited_and_deleted(
    hub: HubProcess, tab: Page, receiver: WebhookReceiver
) -> None:
    page = tab
    sign_in(page, hub.url)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", name="Notification channels")).to_be_visible()
    expect(page.get_by_role("link", name="My notifications")).to_be_visible()

    # Loopback is refused until an admin allows private destinations.
    page.locator(".notify-settings-box summary").click()
    settings = page.get_by_role("form", name="Notification settings")
    settings.get_by_label("Allow private and loopback destinations").check()
    settings.get_by_label("Storm threshold").fill("1")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings.locator("#problem-storm_threshold")).to_contain_text("from 2")
    settings.get_by_label("Storm threshold").fill("4")
    settings.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").filter(has_text="Notification settings saved")).to_be_visible()
    with hub.admin() as admin:
        stored = admin.get("/api/v1/settings/notifications").json()["data"]
    assert stored["allow_private_destinations"] is True and stored["storm_threshold"] == 4
    assert_accessible(page)

    page.get_by_role("link", name="New channel").click()
    form = page.get_by_role("form", name="Notification channel")
    expect(form.get_by_label("Kind", exact=True)).to_have_value("webhook")
    expect(form.locator("input[type=password]")).to_have_count(0)  # the hub makes a webhook's only secret
    form.get_by_label("Name", exact=True).fill("Ops webhook")
    form.get_by_label("URL", exact=True).fill("ftp://example.org/hook")
    form.get_by_role("button", name="Send test").click()  # the hub's 400 shows at the field it names
    expect(form.get_by_label("URL", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#problem-config-url")).to_contain_text("http(s) URL")

    form.get_by_label("URL", exact=True).fill(receiver.url("/unsaved"))
    form.get_by_role("button", name="Send test").click()
    expect(form.locator(".notify-test")).to_contain_text("Test message delivered.")
    expect(form.locator(".notify-test")).to_contain_text("status 200")
    assert len(receiver.to("/unsaved")) == 1
    with hub.admin() as admin:
        assert admin.get(CHANNELS).json()["data"] == []  # tested, not saved

    # What it is told, chosen before it is created.
    expect(form.locator("input[name=event][value='health.opened']")).to_be_checked()
    form.locator("input[name=event][value='node.online']").uncheck()
    form.get_by_label("Minimum severity").select_option("critical")
    assert_accessible(page)
    form.get_by_label("URL", exact=True).fill(receiver.url("/saved"))
    form.get_by_role("button", name="Create channel").click()

    expect(page.get_by_role("heading", name="Ops webhook")).to_be_visible()
    box = page.locator(".secret-box")
    expect(box).to_contain_text("shown only this once")
    secret = box.locator("input.secret").input_value()
    assert secret.startswith("whsec_")
    expect(page.locator(".notify-signing")).to_contain_text("X-Hark-Signature")
    expect(page.locator(".notify-signing")).to_contain_text("300 s")
    expect(page.locator(".provider-secrets")).to_contain_text("Signing secret (never shown)")
    with hub.admin() as admin:
        channel = admin.get(CHANNELS).json()["data"][0]
    assert "node.online" not in channel["subscription"]["events"]
    assert channel["subscription"]["min_severity"] == "critical"
    channel_id = channel["id"]

    page.get_by_role("button", name="Send test").first.click()
    expect(page.locator(".notify-channel > .provider-report .notify-test")).to_contain_text("Test message delivered.")
    expect(page.locator(".provider-last-test")).to_contain_text("test delivered")
    wait_for(lambda: len(receiver.to("/saved")) == 1, 10, "the saved channel's test at the receiver")
    verified(receiver.to("/saved")[0], secret)  # the secret shown is the one the hub signs with
    log = page.locator(".notify-delivery-table")
    expect(log.locator("tbody tr[data-test=true]")).to_have_count(1)
    expect(log.locator("tbody tr").first).to_contain_text("delivered")
    expect(log.locator("tbody tr").first).to_contain_text("200")

    page.reload()  # shown once: gone on the next visit, and never in the page again
    expect(page.get_by_role("heading", name="Ops webhook")).to_be_visible()
    expect(page.locator(".secret-box")).to_have_count(0)
    assert secret not in page.content()

    subscription = page.get_by_role("form", name="Subscription")
    subscription.locator("input[name=event][value='node.online']").check()
    subscription.get_by_label("Other event kinds or patterns").fill("schedule.occurrence.missed, not a kind!")
    subscription.get_by_label("Hold notifications during quiet hours").check()
    subscription.get_by_label("Quiet from").fill("22:00")
    subscription.get_by_label("Until").fill("06:30")
    subscription.get_by_label("Time zone").select_option("Europe/London")
    subscription.get_by_role("button", name="Save subscription").click()
    expect(subscription.get_by_label("Other event kinds or patterns")).to_have_attribute("aria-invalid", "true")
    subscription.get_by_label("Other event kinds or patterns").fill("schedule.occurrence.missed")
    subscription.get_by_role("button", name="Save subscription").click()
    expect(page.get_by_role("status").filter(has_text="Subscription of “Ops webhook” saved")).to_be_visible()
    with hub.admin() as admin:
        saved = admin.get(f"{CHANNELS}/{channel_id}").json()["data"]
    assert {"node.online", "schedule.occurrence.missed"} <= set(saved["subscription"]["events"])
    assert saved["subscription"]["quiet_hours"] == {
        "start": "22:00",
        "end": "06:30",
        "time_zone": "Europe/London",
        "critical_breaks_through": True,
    }
    assert saved["version"] == 2
    expect(page.get_by_role("form", name="Subscription").get_by_label("Time zone")).to_have_value("Europe/London")

    # The configuration replaced: tested first with the saved secret, then a new signing secret shown once.
    page.locator(".notify-config summary").click()
    config = page.get_by_role("form", name="Replace configuration")
    expect(config.get_by_label("URL", exact=True)).to_have_value(receiver.url("/saved"))
    config.get_by_label("URL", exact=True).fill(receiver.url("/rotated"))
    config.get_by_role("button", name="Send test").click()
    expect(config.locator(".notify-test")).to_contain_text("Test message delivered.")
    config.get_by_role("button", name="Replace configuration").click()
    expect(page.locator(".secret-box")).to_be_visible()
    rotated = page.locator(".secret-box input.secret").input_value()
    assert rotated.startswith("whsec_") and rotated != secret
    expect(page.locator(".notify-target")).to_contain_text(str(receiver.server.server_address[1]))
    assert_accessible(page)
    page.screenshot(path=str(ARTIFACTS / "notify-channel.png"), full_page=True)

    page.get_by_role("button", name="Disable").click()
    expect(page.locator(".title-row .state").first).to_have_text("disabled")
    page.get_by_role("link", name="All channels").click()
    page.get_by_label("Enabled").select_option("true")
    expect(page.locator(".notify-channel-table caption")).to_have_text("No channel matches.")
    page.get_by_label("Enabled").select_option("false")
    row = page.locator(".notify-channel-table tbody tr", has_text="Ops webhook")
    expect(row).to_contain_text("Webhook")
    expect(row).to_contain_text("hub-wide")
    expect(row).to_contain_text("never tested")  # a replaced configuration is untested

    page.set_viewport_size({"width": 390, "height": 860})
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert page.evaluate(OVERFLOW) <= 0, "the channels page scrolls sideways on a phone"

    row.get_by_role("link", name="Ops webhook").click()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Notification channels")).to_be_visible()
    with hub.admin() as admin:
        assert admin.get(f"{CHANNELS}/{channel_id}").status_code == 404


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    with Receivers() as running:
        yield running


def test_an_email_and_a_slack_channel_are_filled_in_per_kind_and_tested_against_real_receivers(
    hub: HubProcess, page: Page, receivers: Receivers
) -> None:
    with hub.admin() as admin:
        assert admin.put("/api/v1/settings/notifications", json={"allow_private_destinations": True}).status_code == 200
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/notify/channels/new")
    form = page.get_by_role("form", name="Notification channel")
    form.get_by_label("Kind", exact=True).select_option("email")
    smtp = receivers.smtp
    form.get_by_label("Name", exact=True).fill("Ops mail")
    form.get_by_label("SMTP host").fill(smtp["host"])
    form.get_by_label("Port (optional)").fill(str(smtp["port"]))
    expect(form.get_by_label("Security (optional)")).to_have_value("starttls")
    form.get_by_label("User name (optional)").fill(smtp["username"])
    form.get_by_label("From", exact=True).fill(smtp["sender"])
    form.get_by_label("To", exact=True).fill("\n".join(smtp["recipients"]))
    form.get_by_label("Private CA (optional)").fill(smtp["ca_pem"])
    form.get_by_label("Password (optional)").fill("not-the-password")
    form.get_by_role("button", name="Send test").click()
    report = form.locator(".notify-test")
    expect(report).to_contain_text("Test message not delivered.")
    expect(report.locator(".notify-test-message")).not_to_be_empty()  # what the server said
    form.get_by_label("Password (optional)").fill(receivers.smtp_password)
    form.get_by_role("button", name="Send test").click()
    expect(report).to_contain_text("Test message delivered.")
    receivers.wait_for("email", 1)
    form.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name="Ops mail")).to_be_visible()
    expect(page.locator(".provider-secrets")).to_contain_text("Password (never shown)")
    expect(page.locator(".notify-target")).to_contain_text("2 recipients")
    assert receivers.smtp_password not in page.content()

    # An edit tested before it replaces anything: the saved password fills in the one left empty.
    page.locator(".notify-config summary").click()
    config = page.get_by_role("form", name="Replace configuration")
    expect(config.get_by_label("To", exact=True)).to_have_value("\n".join(smtp["recipients"]))
    expect(config.get_by_label("Password (optional)")).to_have_attribute("placeholder", "set: type to replace")
    config.get_by_label("To", exact=True).fill("solo@example.org")
    config.get_by_role("button", name="Send test").click()
    expect(config.locator(".notify-test")).to_contain_text("Test message delivered.")
    receivers.wait_for("email", 2)
    assert receivers.messages()[-1].rcpt_tos == ["solo@example.org"]

    page.goto(f"{hub.url}/#/notify/channels/new")
    form = page.get_by_role("form", name="Notification channel")
    form.get_by_label("Kind", exact=True).select_option("slack")
    expect(form.get_by_label("SMTP host")).to_have_count(0)
    form.get_by_label("Name", exact=True).fill("Ops Slack")
    secret = form.get_by_label("Webhook URL")
    expect(secret).to_have_attribute("type", "password")
    secret.fill(receivers.url("slack") + "x")  # a token the receiver does not know
    form.get_by_role("button", name="Send test").click()
    report = form.locator(".notify-test")
    expect(report).to_contain_text("Test message not delivered.")
    expect(report).to_contain_text("404")
    secret.fill(receivers.url("slack"))
    form.get_by_role("button", name="Send test").click()
    expect(report).to_contain_text("Test message delivered.")
    receivers.wait_for("slack", 1)
    assert receivers.rejected("slack")[0].status == 404 and len(receivers.rejected()) == 1
    form.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", name="Ops Slack")).to_be_visible()
    expect(page.locator(".secret-box")).to_have_count(0)  # only a webhook has a secret to show
    expect(page.locator(".provider-secrets")).to_contain_text("Webhook URL (never shown)")
    page.get_by_role("button", name="Send test").first.click()
    expect(page.locator(".notify-delivery-table tbody tr[data-test=true]")).to_have_count(1)
    receivers.wait_for("slack", 2)


def test_a_viewer_reads_a_channel_without_changing_it(hub: HubProcess, page: Page, receiver: WebhookReceiver) -> None:
    with hub.admin() as admin:
        made = admin.post(
            CHANNELS,
            json={
                "name": "Foyer chat",
                "kind": "slack",
                "site": "foyer",
                "config": {},
                "secrets": {"webhook_url": receiver.url("/slack")},
            },
        )
        assert made.status_code == 201, made.text
        assert admin.put("/api/v1/settings/notifications", json={"allow_private_destinations": True}).status_code == 200
        for _ in range(27):  # more than a page of the delivery log
            assert admin.post(f"{CHANNELS}/{made.json()['data']['id']}/test").status_code == 200
    sign_in_as_viewer(page, hub)
    page.goto(f"{hub.url}/#/notify/channels")
    expect(page.get_by_role("link", name="New channel")).to_have_count(0)
    page.locator(".notify-settings-box summary").click()
    expect(page.get_by_role("form", name="Notification settings").get_by_role("button", name="Save settings")).to_have_count(0)
    page.get_by_role("link", name="Foyer chat").click()
    expect(page.get_by_role("heading", name="Foyer chat")).to_be_visible()
    expect(page.locator(".provider-secrets")).to_contain_text("Webhook URL (never shown)")
    assert receiver.url("/slack") not in page.content()
    expect(page.get_by_role("button", name="Send test")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    expect(page.locator(".notify-config")).to_have_count(0)
    expect(page.get_by_role("form", name="Channel details").get_by_label("Name", exact=True)).to_be_disabled()
    expect(page.get_by_role("form", name="Subscription").get_by_role("button", name="Save subscription")).to_have_count(0)
    log = page.locator(".notify-delivery-table")
    expect(log.locator("caption")).to_have_text("25+ deliveries, newest first")
    page.get_by_role("button", name="Load more").click()
    expect(log.locator("caption")).to_have_text("27 deliveries, newest first")
    expect(log.locator("tbody tr[data-test=true]")).to_have_count(27)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
