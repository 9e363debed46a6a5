"""The node page in real headless Chromium against a real hub and nodes: history charts with axes,
units and a range kept in the address, an unknown node that stops asking, an offline node's stale
values and the warning before queuing for it, and a recording in progress that ticks and grows."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in
from tests.harness import NodeProcess, wait_for

WIDTHS = [(1440, 900), (768, 1024), (390, 844)]


@pytest.fixture
def berlin_page(browser: Browser) -> Iterator[Page]:
    """A page in a browser whose zone is Berlin's (the charts name it); script errors fail the test."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Europe/Berlin")
    ctx.set_default_timeout(20_000)
    tab = ctx.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # uPlot styles its elements from script: nothing it does may be refused by the console's CSP.
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield tab
    ctx.close()
    assert not errors, f"errors in the console's scripts: {errors}"


def chart(page: Page, key: str) -> Locator:
    return page.locator(f".history-chart[data-chart='{key}']")


def points(page: Page, key: str) -> int:
    value = chart(page, key).get_attribute("data-points")
    return int(value or 0)


def wait_points(page: Page, key: str, at_least: int = 1) -> None:
    """Wait until the chart `key` plots at least that many points."""
    selector = f".history-chart[data-chart='{key}']"
    page.wait_for_function(f'() => Number(document.querySelector("{selector}")?.dataset.points) >= {at_least}')


def history_request(path: str, value: str) -> Callable[[Request], bool]:
    """A request predicate: GET .../<path>/history for the range `value`."""
    return lambda request: f"/{path}/history" in request.url and f"range={value}" in request.url


def canvas_width(page: Page, key: str) -> float:
    selector = f".history-chart[data-chart='{key}'] .uplot canvas"
    return float(page.evaluate(f'document.querySelector("{selector}").getBoundingClientRect().width'))


CHARTS_INSIDE = """() => [...document.querySelectorAll('.history-chart .uplot')]
  .every((u) => u.getBoundingClientRect().right <= document.documentElement.clientWidth)"""


def no_sideways_scroll(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def open_node(page: Page, hub_url: str, node_id: str, query: str = "") -> None:
    page.goto(f"{hub_url}/#/nodes/{node_id}{query}")
    expect(page.locator(".node-page:not(.loading)")).to_be_visible()


def test_the_last_hour_is_charted_with_axes_units_a_legend_and_the_zone(console_fleet: ConsoleFleet, berlin_page: Page) -> None:
    page = berlin_page
    hub = console_fleet.hub
    sign_in(page, hub.url)
    open_node(page, hub.url, console_fleet.node_id("Stage left"))
    expect(page.get_by_role("heading", name="Stage left")).to_be_visible()
    expect(page.get_by_role("button", name="1 h")).to_have_attribute("aria-pressed", "true")
    # The last hour is the hub's memory: the levels and heartbeats of the last seconds are there at once.
    for key in ("peak", "rms", "loudness", "usage"):
        wait_points(page, key)
        expect(chart(page, key).locator("canvas").first).to_be_visible()
    expect(chart(page, "peak").locator("figcaption")).to_have_text("Peak level per channel (highest) (dBFS)")
    expect(chart(page, "usage").locator("figcaption")).to_have_text("CPU, memory and disk used (%)")
    expect(chart(page, "temperature").locator("figcaption")).to_contain_text("(°C)")
    expect(chart(page, "clock").locator("figcaption")).to_contain_text("(ms)")
    expect(chart(page, "peak")).to_have_attribute("data-x-label", "Time (Europe/Berlin)")
    # The legend names each series: both channels of the sine node; CPU, memory and disk on one chart.
    expect(chart(page, "peak").locator(".u-legend")).to_contain_text("Ch 1 peak")
    expect(chart(page, "peak").locator(".u-legend")).to_contain_text("Ch 2 peak")
    for label in ("CPU (mean)", "Memory", "Disk used"):
        expect(chart(page, "usage").locator(".u-legend")).to_contain_text(label)
    expect(page.locator(".node-history [role=status]")).to_contain_text("Times in Europe/Berlin")
    # The plotted peak sits near the sine's -12 dBFS: the chart's data is the node's.
    summary = chart(page, "peak").locator(".visually-hidden").text_content() or ""
    assert re.search(r"Ch 1 peak from -1[12]\.\d to -1[12]\.\d dBFS", summary), summary
    # With UTC chosen on "Me" the axes are in UTC and say so.
    page.evaluate("localStorage.setItem('hark.timeZone', 'UTC')")
    page.reload()
    wait_points(page, "peak")
    expect(chart(page, "peak")).to_have_attribute("data-x-label", "Time (UTC)")
    expect(page.locator(".node-history [role=status]")).to_contain_text("Times in UTC")


def test_the_range_picker_changes_the_request_and_the_address(console_fleet: ConsoleFleet, page: Page) -> None:
    hub = console_fleet.hub
    node_id = console_fleet.node_id("Stage left")
    sign_in(page, hub.url)
    open_node(page, hub.url, node_id)
    wait_points(page, "usage")
    for label, value in (("7 d", "7d"), ("30 d", "30d"), ("24 h", "24h")):
        with (
            page.expect_request(history_request("metrics", value)) as metrics,
            page.expect_request(history_request("meters", value)),
        ):
            page.get_by_role("button", name=label, exact=True).click()
        assert metrics.value.url.startswith(f"{hub.url}/api/v1/nodes/{node_id}/metrics/history")
        expect(page.get_by_role("button", name=label, exact=True)).to_have_attribute("aria-pressed", "true")
        assert page.url.endswith(f"#/nodes/{node_id}?range={value}"), page.url
    # The range in the address is the one shown after a reload.
    page.reload()
    expect(page.get_by_role("button", name="24 h", exact=True)).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="1 h", exact=True).click()
    assert page.url.endswith(f"#/nodes/{node_id}"), page.url


def test_an_unknown_node_is_not_found_and_nothing_keeps_asking_for_it(console_fleet: ConsoleFleet, page: Page) -> None:
    hub = console_fleet.hub
    sign_in(page, hub.url)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/nodes/nope" in r.url or "node_id=nope" in r.url else None)
    page.goto(f"{hub.url}/#/nodes/nope")
    expect(page.get_by_role("heading", name="Node not found")).to_be_visible()
    expect(page.get_by_role("link", name="← Back to the fleet")).to_have_attribute("href", "#/fleet")
    assert asked == [f"{hub.url}/api/v1/nodes/nope"], asked
    # The page polls its node every 10 s: past that, still nothing more about it (no poll, no stream).
    page.wait_for_timeout(11_000)
    assert asked == [f"{hub.url}/api/v1/nodes/nope"], asked
    page.get_by_role("link", name="← Back to the fleet").click()
    expect(page.locator(".fleet-table, .fleet")).not_to_have_count(0)


def test_a_recording_in_progress_ticks_shows_its_format_and_its_ledger_grows(console_fleet: ConsoleFleet, page: Page) -> None:
    hub = console_fleet.hub
    sign_in(page, hub.url)
    open_node(page, hub.url, console_fleet.node_id("Stage left"))
    expect(page.get_by_text("Nothing is recording on this node.")).to_be_visible()
    record = page.get_by_role("form", name="Start a recording")
    record.get_by_label("Name", exact=True).fill("growing take")
    record.get_by_label("Length (seconds)").fill("40")
    page.get_by_role("button", name="Start recording").click()
    expect(page.get_by_text("Recording queued")).to_be_visible()

    live = page.locator(".recording-live", has_text="growing take")
    expect(live.locator(".state")).to_have_text("recording", timeout=30_000)
    expect(live.locator(".format")).to_have_text("WAV, 48 kHz, 24 bit, 2 channels (the source's)")
    elapsed = live.locator(".elapsed")
    expect(elapsed).to_have_text(re.compile(r"^0:\d\d$"))
    first = elapsed.text_content()
    expect(elapsed).not_to_have_text(first or "", timeout=5_000)
    rows = live.locator(".progress-ledger tbody tr")
    wait_for(lambda: rows.count() >= 2, 15, "two progress reports in the ledger")
    seen = rows.count()
    wait_for(lambda: rows.count() > seen, 15, "the ledger to grow")
    # The integrity ledger itself grows while it records: a checksummed segment every 10 s of capture.
    segments = live.locator(".segment-ledger tbody tr")
    wait_for(lambda: segments.count() >= 1, 30, "the first checksummed segment")
    expect(segments.first.locator("td").first).to_have_text("1")
    wait_for(lambda: segments.count() >= 2, 20, "a second segment")
    expect(segments.first.locator("td").first).to_have_text("2")  # newest first
    assert re.fullmatch(r"[0-9a-f]{16}…", segments.first.locator("code").inner_text())
    expect(live.locator(".gap-list")).to_have_text("none")
    expect(live).to_contain_text(re.compile(r"checksummed [2-9] segments of 10 s so far and lost 0 frames in 0 gaps"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#active-h").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "node-recording-390.png"))
    assert no_sideways_scroll(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 860})

    # The recording's own page shows the same, ticking too.
    live.get_by_role("link", name="growing take").click()
    expect(page.get_by_role("heading", name="growing take")).to_be_visible()
    panel = page.locator(".recording-live")
    expect(panel.locator(".state")).to_have_text("recording")
    expect(panel.locator(".format")).to_contain_text("2 channels")
    wait_for(lambda: panel.locator(".progress-ledger tbody tr").count() >= 2, 15, "progress reports on the recording's page")
    shown = panel.locator(".elapsed").text_content()
    expect(panel.locator(".elapsed")).not_to_have_text(shown or "", timeout=5_000)
    page.screenshot(path=str(ARTIFACTS / "recording-in-progress.png"), full_page=True)
    page.get_by_role("button", name="Stop").click()
    page.get_by_role("dialog").get_by_role("button", name="Stop").click()
    recording_id = page.url.rsplit("/", 1)[-1]
    with hub.admin() as admin:

        def ended() -> bool:
            return admin.get(f"/api/v1/recordings/{recording_id}").json()["data"]["status"] in ("uploading", "completed")

        wait_for(ended, 30, "the stopped recording to upload")
    expect(panel.locator(".state")).to_have_text(re.compile("uploading|completed"), timeout=30_000)
    expect(page.locator("audio")).to_be_attached(timeout=45_000)


def test_an_offline_node_shows_its_last_values_with_their_age_and_warns_before_queuing(
    console_fleet: ConsoleFleet, page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hub = console_fleet.hub
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": "Balcony", "site": "main-hall", "tags": ["spare"]})
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        source = "synthetic:sine?freq=1000&dbfs=-20&channels=1"
        workdir = tmp_path_factory.mktemp("balcony") / uuid.uuid4().hex[:6]
        node = NodeProcess(workdir, hub.url, data["node"]["id"], data["credential"], env_extra={"HARK_NODE_AUDIO_SOURCE": source})
        node.start()
        try:
            node_id = data["node"]["id"]
            wait_for(lambda: admin.get(f"/api/v1/nodes/{node_id}/meters").status_code == 200, 30, "Balcony's levels")
            wait_for(lambda: admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["metrics"].get("ts"), 30, "a heartbeat")
            body = {
                "msg_id": uuid.uuid4().hex,
                "ts": datetime.now(UTC).isoformat(),
                "kind": "disk.low",
                "state": "open",
                "severity": "critical",
                "details": {"free_pct": 4.2, "free_bytes": 1_300_000_000},
            }
            with hub.client(data["credential"]) as client:
                sent = client.post(f"/api/v1/nodes/{node_id}/health-events", json=body)
            assert sent.status_code == 200, sent.text
        finally:
            node.stop()
        wait_for(lambda: admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"] == "offline", 30, "Balcony offline")

    sign_in(page, hub.url)
    open_node(page, hub.url, node_id)
    expect(page.get_by_role("heading", name="Balcony")).to_be_visible()
    note = page.locator(".stale-note")
    expect(note).to_contain_text("Offline.")
    expect(note).to_contain_text(re.compile(r"Last heard (\d+ s ago|just now)"))
    expect(note.locator("time")).to_have_attribute("title", re.compile(r"UTC$"))
    # The ages move on while the page is open (they say "just now" for 5 s).
    expect(note.locator(".age")).to_have_text(re.compile(r"\d+ s ago"), timeout=15_000)
    expect(page.locator(".metric-cards.stale")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Last heartbeat, \d+ s ago|^Last heartbeat, just now"))).to_be_visible()
    last = page.locator(".last-levels")
    expect(last).to_contain_text("Last levels received")
    expect(last.locator("tbody tr")).to_have_count(1)
    expect(last.locator("tbody td").nth(1)).to_contain_text(re.compile(r"-2[01]\.\d dBFS"))

    # Its health events in words: a title for the kind, the details as a sentence, counts as words.
    event = page.locator(".health-list li[data-kind='disk.low']")
    expect(event).to_contain_text("Disk almost full — critical, open, seen 1 time since")
    expect(event).to_contain_text(re.compile(r"4\.2 %.*free.*\(1\.3 GB\)"))
    expect(event.locator("time")).to_have_attribute("title", re.compile(r"UTC$"))
    assert "disk.low" not in (event.text_content() or "") and "{" not in (event.text_content() or "")

    # A lifecycle action for an offline node: the dialog says it waits and when it expires.
    page.get_by_role("button", name="Identify").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("is offline (last heard")
    expect(dialog).to_contain_text("the job waits until the node reconnects")
    expect(dialog).to_contain_text("the job expires")
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "node-offline-warning-390.png"))
    page.set_viewport_size({"width": 1280, "height": 860})
    dialog.get_by_role("button", name="Queue identify").click()
    job = page.locator(".jobs-table tbody tr").first
    expect(job).to_have_attribute("data-state", "queued")
    expect(job.locator("td.expires time")).to_have_attribute("title", re.compile(r"UTC$"))
    with hub.admin() as admin:
        stored = admin.get(f"/api/v1/nodes/{node_id}/lifecycle-jobs").json()["data"][0]
    assert stored["state"] == "queued" and stored["expires_at"], stored

    # A recording too: warned, and not queued when cancelled.
    page.get_by_role("button", name="Start recording").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("the recording waits in the queue until the node reconnects")
    expect(dialog).to_contain_text("do not expire")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Recording queued")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "node-offline.png"), full_page=True)


def test_a_day_of_history_is_charted_from_the_stored_minutes_at_every_width(console_fleet: ConsoleFleet, page: Page) -> None:
    hub = console_fleet.hub
    node_id = console_fleet.node_id("Foyer")
    with hub.admin() as admin:
        # Two minutes of history: at least one stored and the one in progress (this waits for a minute's end).
        def two_minutes() -> bool:
            body = admin.get(f"/api/v1/nodes/{node_id}/metrics/history", params={"range": "24h"}).json()["data"]
            return len(body["points"]) >= 2

        wait_for(two_minutes, 80, "two minutes of heartbeat history", interval=1)
    sign_in(page, hub.url)
    open_node(page, hub.url, node_id, "?range=24h")
    expect(page.get_by_role("button", name="24 h", exact=True)).to_have_attribute("aria-pressed", "true")
    for key in ("usage", "peak", "rms", "loudness"):
        wait_points(page, key, 2)
    expect(page.locator(".node-history [role=status]")).to_contain_text("levels per 1 min, heartbeats per 1 min")
    expect(chart(page, "peak").locator(".u-legend")).to_contain_text("Ch 1 peak")
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function(CHARTS_INSIDE)
        assert no_sideways_scroll(page) <= 0, f"the node page scrolls sideways at {width}px"
        page.locator("#history-h").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"node-history-{width}.png"))
        page.screenshot(path=str(ARTIFACTS / f"node-{width}.png"), full_page=True)
    # A chart follows its container: narrower at 390 px than at 1440 px.
    page.set_viewport_size({"width": 1440, "height": 900})
    wait_for(lambda: canvas_width(page, "usage") > 600, 10, "a wide chart at 1440 px")
    wide = canvas_width(page, "usage")
    page.set_viewport_size({"width": 390, "height": 844})
    wait_for(lambda: canvas_width(page, "usage") < wide - 100, 10, "the chart to follow its container")
    # A week holds the same minutes in 10-minute buckets.
    page.set_viewport_size({"width": 1280, "height": 860})
    page.get_by_role("button", name="7 d", exact=True).click()
    expect(page.locator(".node-history [role=status]")).to_contain_text("levels per 10 min, heartbeats per 10 min")
    wait_points(page, "usage")


def test_an_enrolled_node_without_history_says_so(console_fleet: ConsoleFleet, page: Page) -> None:
    hub = console_fleet.hub
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": "Unboxed", "site": "foyer"})
        assert response.status_code == 201, response.text
        node_id = response.json()["data"]["node"]["id"]
    sign_in(page, hub.url)
    open_node(page, hub.url, node_id)
    expect(page.locator(".stale-note")).to_contain_text("Not connected yet.")
    expect(chart(page, "usage").locator(".chart-empty")).to_have_text("No history in this range yet")
    expect(chart(page, "usage").locator(".chart-empty")).to_be_visible()
    page.get_by_role("button", name="Identify").click()
    expect(page.get_by_role("dialog")).to_contain_text("has not connected yet: the job waits until the node reconnects")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    # From a node to its scheduled takes: the week view for this node alone.
    page.get_by_role("link", name="Scheduled takes this week").click()
    expect(page.get_by_role("heading", name="Upcoming takes")).to_be_visible()
    assert f"node_id={node_id}" in page.url
