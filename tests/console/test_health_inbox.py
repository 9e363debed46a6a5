"""The health inbox in real headless Chromium against a real hub and two real nodes: problems in words,
filters kept in the address, each lifecycle action and a bulk one seen through the API, live updates,
a read-only user, and the page at phone and tablet widths."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Locator, Page, Route, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet, report_hub_storage_full
from tests.console.test_console import sign_in
from tests.harness import wait_for

READER_PASSWORD = "a patient reader 2025"


def now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report(fleet: ConsoleFleet, name: str, kind: str, severity: str, details: dict[str, Any], state: str = "open") -> dict:
    """A node's own health report, sent with its credential as the agent sends it; returns the event."""
    node = fleet.nodes[name]
    body = {"msg_id": uuid.uuid4().hex, "ts": now_iso(), "kind": kind, "state": state, "severity": severity, "details": details}
    with fleet.hub.client(node.credential) as client:
        answer = client.post(f"/api/v1/nodes/{node.node_id}/health-events", json=body)
    assert answer.status_code == 200, answer.text
    with fleet.hub.admin() as admin:
        events = admin.get("/api/v1/health-events", params={"node_id": node.node_id, "kind": kind}).json()["data"]
    assert events, f"no {kind} event on {name}"
    return events[0]


def event_state(fleet: ConsoleFleet, event_id: str) -> dict:
    with fleet.hub.admin() as admin:
        answer = admin.get(f"/api/v1/health-events/{event_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def wait_state(fleet: ConsoleFleet, event_id: str, state: str) -> dict:
    return wait_for(
        lambda: (e := event_state(fleet, event_id))["state"] == state and e, 10, f"event {event_id} to be {state}", interval=0.1
    )


def row(page: Page, event_id: str) -> Locator:
    """The event's table row, or its card on a phone."""
    return page.locator(f'.health-inbox [data-event-id="{event_id}"]')


def open_inbox(page: Page, fleet: ConsoleFleet) -> None:
    sign_in(page, fleet.hub.url)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Health").click()
    expect(page.get_by_role("heading", name="Health", exact=True)).to_be_visible()
    expect(page.locator(".health-table caption")).not_to_have_text("Loading…")
    expect(page.locator(".health-count")).not_to_have_text("Loading…")


def local_input_time(page: Page, offset_s: float) -> tuple[str, str]:
    """A datetime-local value `offset_s` from now in the browser's zone, and the same time in UTC."""
    return tuple(
        page.evaluate(
            """(offset) => { const d = new Date(Date.now() + offset * 1000); d.setSeconds(0, 0);
            return [new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16), d.toISOString()]; }""",
            offset_s,
        )
    )


def no_sideways_scroll(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_open_events_read_as_words_and_the_filters_live_in_the_address(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    foyer = fleet.node_id("Foyer")
    disk = report(fleet, "Foyer", "disk.low", "critical", {"free_pct": 4.2, "free_bytes": 1_300_000_000})
    disk = report(fleet, "Foyer", "disk.low", "critical", {"free_pct": 4.1, "free_bytes": 1_280_000_000})
    assert disk["count"] == 2
    clipping = report(fleet, "Stage left", "audio.clipping", "warning", {"clipped_samples": {"L": 12, "R": 3}})
    hub_event = report_hub_storage_full(fleet.hub)

    page.set_viewport_size({"width": 1440, "height": 1000})
    open_inbox(page, fleet)
    disk_row = row(page, disk["id"])
    expect(disk_row).to_contain_text("Disk almost full")
    expect(disk_row).to_contain_text("4.1 % free (1.3 GB)")
    expect(disk_row).to_contain_text("seen 2 times")
    expect(disk_row.get_by_role("link", name="Foyer")).to_have_attribute("href", f"#/nodes/{foyer}")
    expect(disk_row.locator(".sev")).to_have_text("critical")
    expect(disk_row.locator(".hi-state .state")).to_have_text("open")
    # Times say their zone, with UTC on hover.
    first_seen = disk_row.locator(".hi-first time")
    expect(first_seen).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    assert re.search(r"[A-Z]{2,5}|GMT|UTC|[+-]\d", first_seen.inner_text()), first_seen.inner_text()
    expect(row(page, clipping["id"])).to_contain_text("Clipping")
    expect(row(page, clipping["id"])).to_contain_text("the input is clipping on channels L, R (15 clipped samples in one frame)")
    hub_row = row(page, hub_event["id"])
    expect(hub_row.locator(".hi-node")).to_have_text("Hub")
    expect(hub_row.get_by_role("button", name="Resolve Hub data disk full on the hub")).to_be_visible()
    expect(hub_row).to_contain_text("Hub data disk full")
    expect(hub_row).to_contain_text("/var/lib/hark-hub has 0 MiB free")
    listed = page.locator(".health-table tbody").inner_text()
    assert "disk.low" not in listed and "audio.clipping" not in listed and "{" not in listed, listed
    expect(page.get_by_role("button", name="Acknowledge Disk almost full on Foyer")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "health-1440.png"), full_page=True)

    # Severity and node filters change the list and the address.
    page.get_by_label("Severity").select_option("critical")
    expect(row(page, clipping["id"])).to_have_count(0)
    expect(disk_row).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/health\?.*severity=critical"))
    for severity in page.locator(".health-table tbody .sev").all_inner_texts():
        assert severity == "critical", severity
    page.get_by_label("Node").select_option(foyer)
    expect(hub_row).to_have_count(0)
    expect(disk_row).to_be_visible()
    expect(page).to_have_url(re.compile(rf"node={foyer}"))

    # A reload (or a bookmark) brings the same view back.
    page.reload()
    expect(page.get_by_label("Severity")).to_have_value("critical")
    expect(page.get_by_label("Node")).to_have_value(foyer)
    expect(disk_row).to_be_visible()
    expect(hub_row).to_have_count(0)
    expect(row(page, clipping["id"])).to_have_count(0)

    # Text finds problems by their title as well as their kind.
    page.get_by_role("button", name="Clear filters").first.click()
    expect(page).not_to_have_url(re.compile(r"severity="))
    page.get_by_label("Search problems").fill("almost full")
    expect(disk_row).to_be_visible()
    expect(row(page, clipping["id"])).to_have_count(0)
    expect(page).to_have_url(re.compile(r"q=almost"))
    page.get_by_label("Search problems").fill("nothing like this")
    expect(page.locator(".health-empty")).to_have_text(re.compile("No health event matches these filters."))
    expect(page.locator(".health-table tbody tr")).to_have_count(0)


def test_acknowledge_suppress_resolve_and_reopen_change_the_event(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    event = report(fleet, "Stage left", "temperature.high", "warning", {"temperature_c": 83.4})
    page.set_viewport_size({"width": 1440, "height": 1000})
    open_inbox(page, fleet)
    line = row(page, event["id"])
    expect(line).to_contain_text("Running hot")
    expect(line).to_contain_text("the board is at 83.4 °C")
    expect(line.get_by_role("button", name="Reopen Running hot on Stage left")).to_have_count(0)

    page.get_by_role("button", name="Acknowledge Running hot on Stage left").click()
    acknowledged = wait_state(fleet, event["id"], "acknowledged")
    assert acknowledged["acknowledged_by"] == "admin", acknowledged
    expect(line).to_have_attribute("data-state", "acknowledged")
    expect(line).to_contain_text("acknowledged by admin")
    expect(line.get_by_role("button", name="Acknowledge Running hot on Stage left")).to_have_count(0)

    # Escape leaves the suppress dialog without a change, back on the button that opened it.
    suppress = line.get_by_role("button", name="Suppress Running hot on Stage left")
    suppress.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(suppress).to_be_focused()
    assert event_state(fleet, event["id"])["state"] == "acknowledged"

    # Suppress until a time: a past one is refused in words, a future one is sent in UTC.
    suppress.click()
    dialog = page.get_by_role("dialog", name="Suppress Running hot on Stage left")
    expect(dialog).to_be_visible()
    past, _ = local_input_time(page, -3600)
    dialog.get_by_label("Suppress until").fill(past)
    dialog.get_by_role("button", name="Suppress", exact=True).click()
    expect(dialog.get_by_role("alert")).to_have_text("Choose a time in the future.")
    value, until_utc = local_input_time(page, 2 * 3600)
    dialog.get_by_label("Suppress until").fill(value)
    dialog.get_by_role("button", name="Suppress", exact=True).click()
    expect(dialog).to_have_count(0)
    suppressed = wait_state(fleet, event["id"], "suppressed")
    assert datetime.fromisoformat(suppressed["suppressed_until"]) == datetime.fromisoformat(until_utc), (suppressed, until_utc)
    expect(line).to_have_count(0)  # the default view is what still needs someone: open or acknowledged

    page.get_by_label("State").select_option("suppressed")
    expect(page).to_have_url(re.compile(r"state=suppressed"))
    expect(line).to_contain_text("suppressed until")
    line.get_by_role("button", name="Resolve Running hot on Stage left").click()
    wait_state(fleet, event["id"], "resolved")
    expect(line).to_have_count(0)

    page.get_by_label("State").select_option("resolved")
    line.get_by_role("button", name="Reopen Running hot on Stage left").click()
    reopened = wait_state(fleet, event["id"], "open")
    assert reopened["acknowledged_by"] is None and reopened["suppressed_until"] is None, reopened
    expect(line).to_have_count(0)
    page.get_by_label("State").select_option("")
    expect(line).to_have_attribute("data-state", "open")
    expect(line.get_by_role("button", name="Acknowledge Running hot on Stage left")).to_be_visible()


def test_bulk_actions_apply_to_the_selected_events_and_say_what_failed(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    backlog = report(fleet, "Foyer", "outbox.high", "warning", {"depth": 8123, "capacity": 10000})
    battery = report(fleet, "Stage left", "power.on_battery", "warning", {"source": "ups", "percent": 80, "minutes_left": 42})
    page.set_viewport_size({"width": 1440, "height": 1000})
    open_inbox(page, fleet)
    expect(row(page, backlog["id"])).to_contain_text("8,123 of 10,000 messages waiting to be sent to the hub")
    expect(row(page, battery["id"])).to_contain_text("80 % left, about 42 min")

    bulk = page.get_by_role("group", name="Selected health events")
    expect(bulk.get_by_role("button", name="Acknowledge selected")).to_be_hidden()  # offered once something is selected
    page.get_by_role("checkbox", name="Select Telemetry backlog growing on Foyer").check()
    page.get_by_role("checkbox", name="Select Running on battery on Stage left").check()
    expect(bulk).to_contain_text("2 selected.")
    expect(bulk.get_by_role("button", name="Reopen selected")).to_be_hidden()  # neither is resolved
    bulk.get_by_role("button", name="Acknowledge selected").click()
    expect(bulk.get_by_role("status").filter(has_text="acknowledged")).to_have_text("2 events acknowledged.")
    wait_state(fleet, backlog["id"], "acknowledged")
    wait_state(fleet, battery["id"], "acknowledged")
    expect(row(page, backlog["id"])).to_have_attribute("data-state", "acknowledged")

    # Live: a problem a node reports now appears without a reload.
    silence = report(fleet, "Foyer", "audio.silence", "warning", {"channels": ["0"]})
    expect(row(page, silence["id"])).to_contain_text("Silence")
    expect(row(page, silence["id"])).to_contain_text("no signal on channel 0")

    # One of two resolves is refused by the hub (someone resolved it meanwhile): the summary says which and why.
    page.get_by_role("checkbox", name="Select Telemetry backlog growing on Foyer").check()
    page.get_by_role("checkbox", name="Select Running on battery on Stage left").check()

    def resolve_one_first(route: Route) -> None:
        with fleet.hub.admin() as admin:
            assert admin.post(f"/api/v1/health-events/{battery['id']}/resolve", json={}).status_code == 200
        route.continue_()

    page.route("**/api/v1/health-events/bulk-lifecycle", resolve_one_first)
    bulk.get_by_role("button", name="Resolve selected").click()
    summary = bulk.locator(".health-summary")
    expect(summary).to_contain_text("1 event resolved.")
    expect(summary).to_contain_text("1 not: Running on battery on Stage left:")
    expect(summary).to_contain_text("already resolved")
    page.unroute("**/api/v1/health-events/bulk-lifecycle")
    wait_state(fleet, backlog["id"], "resolved")
    expect(row(page, backlog["id"])).to_have_count(0)

    # Select all on the page, then act on everything it allows.
    page.get_by_label("Severity").select_option("warning")
    page.get_by_label("Node").select_option(fleet.node_id("Foyer"))
    expect(row(page, silence["id"])).to_be_visible()
    expect(page.locator(".health-table tbody .hi-node", has_text="Stage left")).to_have_count(0)
    expect(page.locator(".health-table tbody .sev", has_text="critical")).to_have_count(0)
    bulk.get_by_label("Select all shown").check()
    shown = page.locator(".health-table tbody tr").count()
    expect(bulk).to_contain_text(f"{shown} selected.")
    bulk.get_by_role("button", name="Suppress selected…").click()
    dialog = page.get_by_role("dialog")
    value, _ = local_input_time(page, 3600)
    dialog.get_by_label("Suppress until").fill(value)
    dialog.get_by_role("button", name="Suppress", exact=True).click()
    expect(summary).to_contain_text("suppressed.")
    wait_state(fleet, silence["id"], "suppressed")


def test_a_reader_without_health_acknowledge_sees_the_events_but_no_actions(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    event = report(fleet, "Foyer", "clock.unsynced", "warning", {"offset_ms": 1500.0, "quality": "ntp"})
    username = f"reader{int(time.time() * 1000)}"
    with fleet.hub.admin() as admin:
        answer = admin.post("/api/v1/auth/users", json={"username": username, "password": READER_PASSWORD, "roles": ["viewer"]})
        assert answer.status_code == 201, answer.text
    sign_in(page, fleet.hub.url, username, READER_PASSWORD)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Health").click()
    line = row(page, event["id"])
    expect(line).to_contain_text("Clock not synchronised")
    expect(line).to_contain_text("time source: ntp, offset +1500 ms")
    expect(
        page.locator(".health-inbox").get_by_role("button", name=re.compile("^(Acknowledge|Suppress|Resolve|Reopen)"))
    ).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("group", name="Selected health events")).to_have_count(0)


def test_the_inbox_fits_a_phone_as_cards_and_a_tablet_with_aligned_columns(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    event = report(
        fleet,
        "Foyer",
        "audio.no_device",
        "critical",
        {"message": "no input device named 'USB Audio CODEC'", "source": "sounddevice:USB Audio CODEC"},
    )
    page.set_viewport_size({"width": 390, "height": 844})
    open_inbox(page, fleet)
    card = row(page, event["id"])
    expect(card).to_contain_text("No audio interface")
    expect(card).to_contain_text("sounddevice:USB Audio CODEC could not be opened")
    assert no_sideways_scroll(page) <= 0, f"the page scrolls sideways by {no_sideways_scroll(page)}px on a phone"
    expect(page.locator(".health-table")).to_be_hidden()  # a list of cards instead, each labelling its facts
    expect(page.get_by_role("list", name="Health events").get_by_role("listitem")).not_to_have_count(0)
    expect(card.get_by_role("heading", name="No audio interface")).to_be_visible()
    expect(card.locator("dt", has_text="Node")).to_be_visible()
    expect(card.locator("dt:text-is('Node') + dd")).to_have_text("Foyer")
    box = card.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    button = card.get_by_role("button", name="Acknowledge No audio interface on Foyer")
    expect(button).to_be_visible()
    button_box = button.bounding_box()
    assert button_box is not None and button_box["x"] + button_box["width"] <= 390, button_box
    page.screenshot(path=str(ARTIFACTS / "health-390.png"), full_page=True)

    page.set_viewport_size({"width": 768, "height": 1000})
    expect(page.locator(".health-table thead")).to_be_visible()
    expect(page.locator(".health-cards")).to_be_hidden()
    expect(row(page, event["id"])).to_have_js_property("tagName", "TR")
    assert no_sideways_scroll(page) <= 0, f"the page scrolls sideways by {no_sideways_scroll(page)}px at 768 px"
    lefts = page.evaluate(
        """(id) => {
        const visible = (el) => getComputedStyle(el).display !== 'none';
        const heads = [...document.querySelectorAll('.health-table thead th')].filter(visible);
        const cells = [...document.querySelector(`.health-table tr[data-event-id="${id}"]`).cells].filter(visible);
        const lefts = (list) => list.map((e) => Math.round(e.getBoundingClientRect().left));
        return { heads: lefts(heads), cells: lefts(cells) };
        }""",
        event["id"],
    )
    assert lefts["heads"] == lefts["cells"], lefts
    page.screenshot(path=str(ARTIFACTS / "health-768.png"), full_page=True)


def test_more_events_than_a_page_load_on_demand(console_fleet: ConsoleFleet, page: Page) -> None:
    fleet = console_fleet
    stage = fleet.node_id("Stage left")
    with fleet.hub.admin() as admin:
        for i in range(55):
            answer = admin.post(
                "/api/v1/health-events",
                json={"kind": "site.mains_check", "severity": "info", "node_id": stage, "details": {"round": i}},
            )
            assert answer.status_code == 201, answer.text
    sign_in(page, fleet.hub.url)
    page.goto(f"{fleet.hub.url}/#/health?kind=site.mains_check")
    rows = page.locator(".health-table tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("Site mains check")  # an unknown kind still reads as words
    expect(rows.first).to_contain_text("round: 54")
    expect(page.locator(".health-table caption")).to_have_text("50 events shown (more below), newest first")
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(55)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    expect(page.locator(".health-table caption")).to_have_text("55 events, newest first")
