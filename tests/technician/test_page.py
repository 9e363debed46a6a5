"""The technician's page in headless Chromium: log in with the PIN, meters move, the test recording plays to the end."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.node.local.technician_site import PIN, Site
from tests.technician.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def log_in(page: Page, site: Site) -> None:
    page.goto(f"{site.node.local_url}/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#pin", PIN)
    page.click("#login button[type=submit]")
    expect(page.locator("#panel")).to_be_visible()


def test_the_page_logs_in_with_the_pin_shows_the_node_and_its_meters_move(page: Page, site: Site) -> None:
    page.goto(f"{site.node.local_url}/")
    page.fill("#pin", "000000")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Wrong")
    page.screenshot(path=str(ARTIFACTS / "login-refused.png"))
    log_in(page, site)
    expect(page.locator("#identity")).to_contain_text(site.node_id)
    expect(page.locator("#connections")).to_contain_text("yes")
    meters = page.locator("#meters .meter")
    expect(meters).to_have_count(2)
    first = int(page.locator("#meter-count").inner_text().split()[0])
    page.wait_for_function(f"parseInt(document.getElementById('meter-count').textContent) > {first + 5}")
    width = meters.first.locator(".bar > div").evaluate("el => parseFloat(el.style.width)")
    assert 60 < width < 100  # a -12 dBFS sine on a 60 dB scale
    page.screenshot(path=str(ARTIFACTS / "status-and-meters.png"), full_page=True)


def test_the_test_recording_plays_to_the_end(page: Page, site: Site) -> None:
    log_in(page, site)
    page.evaluate("document.body.dataset.testSeconds = '2'")
    page.click("#record")
    expect(page.locator("#record-state")).to_have_text("played to the end", timeout=30_000)
    duration = page.locator("#player").evaluate("el => el.duration")
    assert abs(duration - 2.0) <= 0.1, duration
    page.screenshot(path=str(ARTIFACTS / "test-recording-played.png"), full_page=True)


def test_identify_diagnostics_and_a_commissioning_report_from_the_page(page: Page, site: Site) -> None:
    log_in(page, site)
    page.click("#identify")
    # identify also plays a 5 s tone when the box has an audio output (PulseAudio, in a full test run)
    expect(page.locator("#action-state")).to_contain_text("identify: logged an IDENTIFY line", timeout=20_000)
    with page.expect_download() as download:
        page.click("#diagnostics button")
    assert download.value.suggested_filename.startswith(f"hark-diagnostics-{site.node_id}")
    page.evaluate("document.body.dataset.commissionSeconds = '2'")
    page.click("#commission")
    expect(page.locator("#action-state")).to_contain_text("passed", timeout=30_000)
    expect(page.locator("#actions")).to_contain_text("commissioning by PIN holder")
    page.screenshot(path=str(ARTIFACTS / "commissioning.png"), full_page=True)
