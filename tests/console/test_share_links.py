"""Share links in real headless Chromium against a real hub (issue 23): a user makes a link on the recording page
(shown once), a browser with no account opens it, gives the password, plays and seeks the recording; wrong passwords
are refused and then locked out; once revoked the link's page says so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.console.test_console import sign_in
from tests.harness import HubProcess, wait_for
from tests.hub.api.test_recording_upload import completed_recording

PASSWORD = "river at dawn 7"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for this module (the recording is written through the API and the database; no nodes run)."""
    process = HubProcess(tmp_path_factory.mktemp("share-links-hub"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


@pytest.fixture
def stranger(browser: Browser) -> Iterator[BrowserContext]:
    """A browser context with no account and no cookies of the console."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def current_time(tab: Page) -> float:
    return float(tab.evaluate("document.querySelector('audio').currentTime"))


def test_a_link_made_in_the_console_plays_without_an_account_and_stops_when_revoked(
    hub: HubProcess, page: Page, browser: Browser, stranger: BrowserContext
) -> None:
    take, _ = completed_recording(hub, seconds=6.0, name="Stage take 3")
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/recordings/{take.recording_id}")
    section = page.get_by_role("region", name="Share")
    expect(section).to_contain_text("No share links yet.")
    section.get_by_role("button", name="Create share link").click()
    dialog = page.get_by_role("dialog", name="Share this recording")
    dialog.get_by_label("Password (optional)").fill("short")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.get_by_role("alert")).to_have_text("A password has at least 8 characters.")
    dialog.get_by_label("Password (optional)").fill(PASSWORD)
    dialog.get_by_label("Label (optional)").fill("for the producer")
    dialog.get_by_role("button", name="Create link").click()
    created = page.get_by_role("dialog", name="Link created")
    box = created.get_by_role("textbox", name="Share link")
    url = box.input_value()
    assert url.startswith(hub.url + "/s/"), url
    expect(created.get_by_role("button", name="Copy")).to_be_visible()
    created.get_by_role("button", name="Done").click()
    expect(created).to_have_count(0)
    row = section.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("for the producer")
    expect(row.locator(".state")).to_have_text("active")
    expect(page.locator(f"text={url.rsplit('/', 1)[1]}")).to_have_count(0)  # shown once: not in the list

    visitor = stranger.new_page()
    audio_statuses: list[int] = []
    visitor.on("response", lambda r: audio_statuses.append(r.status) if r.url.endswith("/audio") else None)
    visitor.goto(url)
    visitor.get_by_label("Password").fill("not the password")
    visitor.get_by_role("button", name="Open").click()
    expect(visitor.get_by_role("alert")).to_have_text("The password is wrong.")
    visitor.get_by_label("Password").fill(PASSWORD)
    visitor.get_by_role("button", name="Open").click()
    expect(visitor.get_by_role("heading", name="Stage take 3")).to_be_visible()
    expect(visitor.locator("text=Downloading is not allowed")).to_be_visible()
    visitor.evaluate("document.querySelector('audio').play()")
    wait_for(lambda: current_time(visitor) > 0.3, 15, "the shared recording to play")
    visitor.evaluate("document.querySelector('audio').currentTime = 4.0")
    wait_for(lambda: current_time(visitor) > 4.2, 15, "the player to seek to 4 s and play on")
    assert 206 in audio_statuses, audio_statuses  # the player fetched ranges

    attacker = browser.new_context()  # another visitor: the lockout is per link, whoever tries
    try:
        tab = attacker.new_page()
        tab.goto(url)
        for _ in range(10):
            tab.get_by_label("Password").fill("guess guess")
            tab.get_by_role("button", name="Open").click()
            expect(tab.get_by_role("alert")).to_have_text("The password is wrong.")
        tab.get_by_label("Password").fill(PASSWORD)
        tab.get_by_role("button", name="Open").click()
        expect(tab.get_by_role("heading", name="Too many wrong passwords")).to_be_visible()
    finally:
        attacker.close()

    row.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog", name="Revoke this link?").get_by_role("button", name="Revoke").click()
    expect(row.locator(".state")).to_have_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    response = visitor.goto(url)
    assert response is not None and response.status == 410
    expect(visitor.get_by_role("heading", name="This link no longer works")).to_be_visible()
    expect(visitor.locator("main")).to_contain_text("revoked")
