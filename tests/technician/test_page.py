"""The technician's page in headless Chromium: log in with the PIN, meters move, the test recording plays to the end;
the hub's last contact ages live, times say their zone, valid markup, empty lists say "none", the hub URL box shows
the hub, dark mode, and no sideways scrolling on a phone."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Browser, Page, Route, expect

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
        page.click("#diagnostics")
    assert download.value.suggested_filename.startswith(f"hark-diagnostics-{site.node_id}")
    page.evaluate("document.body.dataset.commissionSeconds = '2'")
    page.click("#commission")
    expect(page.locator("#action-state")).to_contain_text("passed", timeout=30_000)
    expect(page.locator("#actions")).to_contain_text("commissioning by PIN holder")
    page.screenshot(path=str(ARTIFACTS / "commissioning.png"), full_page=True)


BERLIN = re.compile(r"\b(CET|CEST|GMT\+0?[12](:00)?)\b")


def test_the_hub_last_contact_ages_live_and_times_say_their_zone(browser: Browser, site: Site) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB")
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        log_in(page, site)
        age = page.locator("#connections .since")
        expect(age).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
        first = age.inner_text()
        # It changes without a reload: the age ticks every second, the status is read again every 3 s.
        page.wait_for_function(
            "(before) => { const el = document.querySelector('#connections .since'); return el && el.textContent !== before; }",
            arg=first,
            timeout=10_000,
        )
        contact = page.locator("#connections time")
        expect(contact).to_have_text(BERLIN)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", contact.get_attribute("title") or "")
        expect(page.locator("#actions li time").first).to_have_text(BERLIN)  # the login just now
    finally:
        context.close()


def test_the_markup_is_valid_and_words_break_only_between_words(page: Page, site: Site) -> None:
    log_in(page, site)
    expect(page.locator("#identity")).to_contain_text(site.node_id)
    problems = page.evaluate(
        """() => {
        const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
        return {
          nested: document.querySelectorAll('a button, button a, a a, button button').length,
          duplicates: ids.filter((id, i) => ids.indexOf(id) !== i),
          breakAll: [...document.querySelectorAll('*')]
            .filter((el) => getComputedStyle(el).wordBreak === 'break-all').map((el) => el.id || el.tagName),
          unlabelled: [...document.querySelectorAll('input')]
            .filter((el) => !el.labels?.length && !el.getAttribute('aria-label')).map((el) => el.id),
          untyped: [...document.querySelectorAll('button:not([type])')].map((el) => el.id || el.textContent),
        };
        }"""
    )
    assert problems == {"nested": 0, "duplicates": [], "breakAll": [], "unlabelled": [], "untyped": []}, problems
    # The hub URL box shows the hub the node uses, ready to be changed.
    expect(page.locator("#hub-url")).to_have_value(site.hub.url.rstrip("/"))
    expect(page.get_by_role("link", name="Download diagnostics")).to_have_attribute("download", "")


def test_empty_lists_say_none(page: Page, site: Site) -> None:
    def without_history(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        if "data" in body:  # not the answer before logging in
            body["data"]["health"] = []
            body["data"]["actions"] = []
        route.fulfill(response=answer, body=json.dumps(body))

    page.route("**/local/v1/status", without_history)
    log_in(page, site)
    expect(page.locator("#health")).to_have_text("none")
    expect(page.locator("#actions")).to_have_text("none")


def test_the_page_fits_a_phone_in_light_and_dark(browser: Browser, site: Site) -> None:
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme=scheme)
        context.set_default_timeout(20_000)
        try:
            page = context.new_page()
            log_in(page, site)
            expect(page.locator("#meters .meter")).to_have_count(2)
            expect(page.locator("#connections .since")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390 px ({scheme})"
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            channels = [int(v) for v in re.findall(r"\d+", background)[:3]]
            assert (sum(channels) < 150) == (scheme == "dark"), (scheme, background)
            page.screenshot(path=str(ARTIFACTS / f"phone-{scheme}.png"), full_page=True)
        finally:
            context.close()
