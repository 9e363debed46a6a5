"""The watchdog policy editor in headless Chromium against a real hub and real nodes: a policy is created,
assigned to a node, its detectors and remediation ladder edited (steps added, reordered, removed) and saved;
a node is calibrated from the page and its measured baseline shown per channel; and a health event's
remediation steps appear on its timeline in the health inbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hark_fleet.hub.db.models import HealthEventStep
from playwright.sync_api import Browser, Page, expect

from tests.conftest import hub_database
from tests.console.conftest import ConsoleFleet
from tests.console.test_console import sign_in

POLICIES = "/api/v1/settings/watchdog-policies"


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    """A wide page whose script errors fail the test."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    ctx.close()
    assert not errors, f"errors in the console's scripts: {errors}"


def policy_named(fleet: ConsoleFleet, name: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        found = admin.get(POLICIES, params={"name": name}).json()["data"]
        assert len(found) == 1
        detail: dict[str, Any] = admin.get(f"{POLICIES}/{found[0]['id']}").json()["data"]
    return detail


def test_a_policy_is_created_assigned_and_its_detectors_and_ladder_edited(console_fleet: ConsoleFleet, tab: Page) -> None:
    name = f"Stage mics {uuid.uuid4().hex[:4]}"
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/watchdog")
    expect(tab.locator(".watchdog-table").get_by_role("link", name="default")).to_be_visible()
    tab.get_by_label("New policy").fill(name)
    tab.get_by_role("button", name="Create").click()
    expect(tab.get_by_role("heading", name=f"Watchdog policy {name}")).to_be_visible()

    tab.get_by_label("Assign to").select_option("node")
    tab.locator("select[name=assign_node]").select_option(console_fleet.node_id("Stage left"))
    tab.get_by_role("button", name="Add", exact=True).click()
    expect(tab.locator(".wd-assignments")).to_contain_text("node Stage left")

    tab.locator("input[name='silence.threshold_dbfs']").fill("-70")
    flatline = tab.locator("fieldset.wd-detector[data-detector=flatline]")
    flatline.get_by_role("button", name="Add step").click()
    flatline.get_by_role("button", name="Add step").click()
    flatline.get_by_role("button", name="Add step").click()
    flatline.locator("select[name='flatline.steps[1].action']").select_option("restart-agent")
    flatline.locator("select[name='flatline.steps[2].action']").select_option("reboot")
    flatline.get_by_role("button", name="Move step 2 down").click()  # restart-audio, reboot, restart-agent
    flatline.get_by_role("button", name="Remove step 2").click()  # restart-audio, restart-agent
    flatline.locator("input[name='flatline.steps[1].wait_s']").fill("30")
    flatline.locator("input[name='flatline.max_per_hour']").fill("1")
    flatline.get_by_label("Also while recording").check()
    tab.get_by_role("button", name="Save").click()
    expect(tab.locator("#notices")).to_contain_text("Saved: version 2")

    saved = policy_named(console_fleet, name)
    assert saved["assignments"] == [{"node_id": console_fleet.node_id("Stage left"), "nodes": 1}]
    assert saved["detectors"]["silence"]["threshold_dbfs"] == -70.0
    ladder = saved["detectors"]["flatline"]["remediation"]
    assert ladder["steps"] == [{"action": "restart-audio", "wait_s": 60.0}, {"action": "restart-agent", "wait_s": 30.0}]
    assert (ladder["max_per_hour"], ladder["during_recording"]) == (1, True)
    assert saved["detectors"]["silence"]["remediation"] is None  # no steps: no ladder


def test_a_node_is_calibrated_from_the_page_and_its_baseline_shown_per_channel(console_fleet: ConsoleFleet, tab: Page) -> None:
    name = f"Foyer floor {uuid.uuid4().hex[:4]}"
    with console_fleet.hub.admin() as admin:
        created = admin.post(POLICIES, json={"name": name, "assignments": [{"node_id": console_fleet.node_id("Foyer")}]})
        assert created.status_code == 201, created.text
        policy_id = created.json()["data"]["id"]
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/watchdog/{policy_id}")
    row = tab.locator(f".wd-node-table tr[data-node-id='{console_fleet.node_id('Foyer')}']")
    expect(row).to_contain_text("Not calibrated.")
    row.get_by_label("Calibration seconds for Foyer").fill("2")
    row.get_by_role("button", name="Calibrate").click()
    expect(tab.locator("#notices")).to_contain_text("Foyer: calibrated.", timeout=30_000)
    baseline = tab.locator(f".wd-node-table tr[data-node-id='{console_fleet.node_id('Foyer')}'] .wd-baseline")
    expect(baseline).to_be_visible()
    expect(baseline.locator("tbody tr")).to_have_count(1)  # the Foyer's one channel
    expect(baseline.locator("tbody tr td").nth(1)).to_contain_text("dBFS")
    stored = policy_named(console_fleet, name)
    assert stored["version"] == 2 and console_fleet.node_id("Foyer") in stored["baselines"]


def test_a_health_events_timeline_shows_its_remediation_steps(console_fleet: ConsoleFleet, tab: Page) -> None:
    node_id = console_fleet.node_id("Stage left")
    kind = f"audio.test_{uuid.uuid4().hex[:4]}"
    with console_fleet.hub.admin() as admin:
        created = admin.post("/api/v1/health-events", json={"kind": kind, "severity": "warning", "node_id": node_id})
        assert created.status_code == 201, created.text
        event_id = created.json()["data"]["id"]
    start = datetime.now(UTC).replace(tzinfo=None)
    with hub_database(console_fleet.hub):
        for i, (outcome, reason) in enumerate(
            (("started", None), ("succeeded", None), ("skipped", "rate limit: 1 per hour reached"))
        ):
            HealthEventStep.create(
                id=f"hes_{uuid.uuid4().hex[:12]}",
                event_id=event_id,
                node_id=node_id,
                at=start + timedelta(seconds=1 + i),
                type="remediation",
                detector="flatline",
                step=0 if i < 2 else 1,
                action="restart-audio",
                outcome=outcome,
                reason=reason,
                output="",
            )
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/health")
    row = tab.locator(f"tr[data-event-id='{event_id}']")
    row.locator("summary", has_text="Timeline").click()
    timeline = row.locator(".tl-list")
    expect(timeline.locator("li")).to_have_count(4)
    expect(timeline.locator("li").first).to_contain_text("Opened")
    expect(timeline.locator("li").nth(1)).to_contain_text("Step 1: Restart audio")
    expect(timeline.locator("li").nth(3)).to_contain_text("Step 2: Restart audio")
    expect(timeline.locator("li").nth(3)).to_contain_text("skipped")
    expect(timeline.locator("li").nth(3)).to_contain_text("rate limit: 1 per hour reached")
