"""The channel-map plan screen in headless Chromium against a real hub and two real nodes: a plan staged from
the form shows what changes on each node before anything is applied; applying it shows each node's answer
live (the two-input node confirms, the one-input node refuses the map and is rolled back); rolling the plan
back is shown too; a viewer sees the plan but no button to change it; and the plan's page fits a phone."""

from __future__ import annotations

import uuid

from playwright.sync_api import BrowserContext, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in, sign_in_as_viewer

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def stereo_template(fleet: ConsoleFleet) -> dict:
    body = {
        "name": f"desk-{uuid.uuid4().hex[:6]}",
        "channels": [{"input": 0, "name": "Left", "role": "L"}, {"input": 1, "name": "Right", "role": "R"}],
        "programmes": [{"name": "desk", "channels": ["Left", "Right"]}],
    }
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/settings/channel-map-templates", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def test_a_plan_is_staged_diffed_applied_with_live_node_status_and_rolled_back(
    console_fleet: ConsoleFleet, checked: BrowserContext
) -> None:
    page = checked.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    template = stereo_template(console_fleet)
    sign_in(page, console_fleet.hub.url)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Plans").click()
    expect(page.get_by_role("heading", name="Channel-map plans")).to_be_visible()

    form = page.get_by_role("form", name="Stage a plan")
    form.get_by_label("Name").fill("desk feed on both boxes")
    form.get_by_label("Template").select_option(label=f"{template['name']} (v1)")
    form.get_by_label("Nodes").select_option(label=["Stage left (main-hall)", "Foyer (foyer)"])
    form.get_by_label("Confirm within (s)").fill("5")
    form.get_by_role("button", name="Stage plan").click()

    expect(page.get_by_role("heading", name="Plan desk feed on both boxes")).to_be_visible()
    table = page.locator("table.plan-nodes")
    stage = table.locator("tr", has_text="Stage left")
    foyer = table.locator("tr", has_text="Foyer")
    expect(stage).to_contain_text("maps 2 inputs 0, 1")
    expect(stage).to_contain_text("new programme desk")
    expect(stage).to_contain_text("pending")
    expect(table.locator("caption")).to_contain_text("nothing is applied yet")
    page.screenshot(path=str(ARTIFACTS / "plan-staged.png"), full_page=True)

    page.get_by_role("button", name="Apply").click()
    page.get_by_role("dialog").get_by_role("button", name="Apply").click()
    expect(stage.locator(".state")).to_have_text("confirmed")
    expect(foyer.locator(".state")).to_have_text("failed")
    expect(foyer).to_contain_text("refused the map")
    expect(foyer).to_contain_text("rolled back")
    expect(page.locator(".facts .state")).to_have_text("partly applied")
    expect(page.get_by_role("status").filter(has_text="confirmed")).to_contain_text("1 of 2 nodes confirmed, 1 failed")
    page.screenshot(path=str(ARTIFACTS / "plan-applied.png"), full_page=True)

    page.get_by_role("button", name="Roll back").click()
    page.get_by_role("dialog").get_by_role("button", name="Roll back").click()
    expect(page.locator(".facts .state")).to_have_text("rolled back")
    expect(stage.locator(".state")).to_have_text("rolled back")
    with console_fleet.hub.admin() as admin:
        stage_id = console_fleet.node_id("Stage left")
        assigned = admin.get(f"/api/v1/settings/channel-map-assignments/{stage_id}").json()["data"]
    assert assigned["template_id"] is None

    page.set_viewport_size({"width": 390, "height": 860})
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert page.evaluate(OVERFLOW) <= 0, "the plan's page scrolls sideways on a phone"
    violations = run_axe(page)
    assert not violations, describe(violations)
    page.goto(f"{console_fleet.hub.url}/#/plans")
    expect(page.locator("table.plan-table")).to_contain_text("desk feed on both boxes")
    assert page.evaluate(OVERFLOW) <= 0, "the plans page scrolls sideways on a phone"
    violations = run_axe(page)
    assert not violations, describe(violations)
    page.screenshot(path=str(ARTIFACTS / "plans-phone.png"), full_page=True)
    assert not errors, f"errors in the console's scripts: {errors}"


def test_a_viewer_sees_plans_but_no_way_to_change_them(console_fleet: ConsoleFleet, page: Page) -> None:
    template = stereo_template(console_fleet)
    with console_fleet.hub.admin() as admin:
        body = {"name": "viewer's look", "template_id": template["id"], "target": {"sites": ["foyer"]}}
        plan = admin.post("/api/v1/settings/channel-map-plans", json=body).json()["data"]
    sign_in_as_viewer(page, console_fleet.hub)
    page.goto(f"{console_fleet.hub.url}/#/plans")
    expect(page.locator("table.plan-table")).to_contain_text("viewer's look")
    expect(page.get_by_role("form", name="Stage a plan")).to_have_count(0)
    page.goto(f"{console_fleet.hub.url}/#/plans/{plan['id']}")
    expect(page.locator("table.plan-nodes")).to_contain_text("Foyer")
    expect(page.get_by_role("button", name="Apply")).to_have_count(0)
    expect(page.get_by_text("Applying and rolling back need the permission settings:manage.")).to_be_visible()
