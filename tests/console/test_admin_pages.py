"""The console's administration pages in headless Chromium against a real hub and nodes: a user's
access edited without losing roles, no self-disable, every time with its zone (and a UTC setting),
notices that leave the controls alone on a phone, and technicians' actions in the audit log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in
from tests.harness import wait_for

PASSWORD = "a patient sound engineer"
PIN = "731946"
# Chromium names Berlin's zone "CET"/"CEST" or "GMT+1"/"GMT+2", depending on the locale's data.
BERLIN = re.compile(r"\b(CET|CEST|GMT\+0?[12](:00)?)\b")
UTC_TITLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


@pytest.fixture
def berlin(browser: Browser) -> Iterator[BrowserContext]:
    """A browser whose own zone is Europe/Berlin, so local times and UTC differ."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, timezone_id="Europe/Berlin", locale="en-GB")
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def tab(berlin: BrowserContext) -> Iterator[Page]:
    """A page in Berlin whose script errors fail the test."""
    page = berlin.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"errors in the console's scripts: {errors}"


def create_user(fleet: ConsoleFleet, roles: list[str], sites: list[str] | None) -> dict:
    with fleet.hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users",
            json={"username": f"u{int(time.time() * 1000)}", "password": PASSWORD, "roles": roles, "sites": sites},
        )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def stored_user(fleet: ConsoleFleet, user_id: str) -> dict:
    with fleet.hub.admin() as admin:
        return admin.get(f"/api/v1/auth/users/{user_id}").json()["data"]


def open_users(page: Page, fleet: ConsoleFleet) -> None:
    sign_in(page, fleet.hub.url)
    page.goto(f"{fleet.hub.url}/#/users")
    expect(page.locator(".users-table tbody tr").first).to_be_visible()


def edit_access(page: Page, username: str) -> Locator:
    page.get_by_role("button", name=f"Edit access of {username}").click()
    dialog = page.get_by_role("dialog", name=f"Access of {username}")
    expect(dialog).to_be_visible()
    return dialog


def test_editing_sites_keeps_every_role_and_a_third_role_keeps_all_three(console_fleet: ConsoleFleet, tab: Page) -> None:
    user = create_user(console_fleet, ["viewer", "technician"], ["main-hall"])
    open_users(tab, console_fleet)
    row = tab.locator(f"tr[data-username='{user['username']}']")
    expect(row).to_contain_text("technician, viewer")

    dialog = edit_access(tab, user["username"])
    for role in ("viewer", "technician"):
        expect(dialog.get_by_label(role, exact=True)).to_be_checked()
    expect(dialog.get_by_label("operator", exact=True)).not_to_be_checked()
    expect(dialog.get_by_label("Only the chosen sites")).to_be_checked()
    expect(dialog.get_by_label("main-hall", exact=True)).to_be_checked()
    dialog.get_by_label("foyer", exact=True).check()  # a site offered from the fleet's nodes
    tab.screenshot(path=str(ARTIFACTS / "user-access-editor.png"))
    dialog.get_by_role("button", name="Save access").click()
    expect(dialog).to_have_count(0)
    expect(row).to_contain_text("foyer, main-hall")
    stored = stored_user(console_fleet, user["id"])
    assert sorted(stored["roles"]) == ["technician", "viewer"], stored
    assert stored["sites"] == ["foyer", "main-hall"], stored

    dialog = edit_access(tab, user["username"])
    dialog.get_by_label("operator", exact=True).check()
    dialog.get_by_role("button", name="Save access").click()
    expect(dialog).to_have_count(0)
    expect(row).to_contain_text("operator, technician, viewer")
    stored = stored_user(console_fleet, user["id"])
    assert sorted(stored["roles"]) == ["operator", "technician", "viewer"], stored
    assert stored["sites"] == ["foyer", "main-hall"], stored

    dialog = edit_access(tab, user["username"])
    dialog.get_by_label("Every site").check()
    expect(dialog.get_by_label("foyer", exact=True)).to_be_disabled()
    dialog.get_by_role("button", name="Save access").click()
    expect(row).to_contain_text("all sites")
    stored = stored_user(console_fleet, user["id"])
    assert stored["sites"] is None and len(stored["roles"]) == 3, stored


def test_a_group_is_joined_from_the_same_dialog_and_the_roles_stay(console_fleet: ConsoleFleet, tab: Page) -> None:
    name = f"Night crew {int(time.time() * 1000)}"
    with console_fleet.hub.admin() as admin:
        response = admin.post("/api/v1/auth/groups", json={"name": name, "roles": ["viewer"], "sites": ["foyer"]})
    assert response.status_code == 201, response.text
    group_id = response.json()["data"]["id"]
    user = create_user(console_fleet, ["operator", "technician"], None)
    open_users(tab, console_fleet)
    dialog = edit_access(tab, user["username"])
    dialog.get_by_label(name, exact=True).check()
    dialog.get_by_role("button", name="Save access").click()
    row = tab.locator(f"tr[data-username='{user['username']}']")
    expect(row).to_contain_text(f"groups: {name}")
    stored = stored_user(console_fleet, user["id"])
    assert stored["groups"] == [group_id] and sorted(stored["roles"]) == ["operator", "technician"], stored
    assert stored["sites"] is None, stored


def test_a_refused_change_is_explained_in_the_dialog(console_fleet: ConsoleFleet, tab: Page) -> None:
    user = create_user(console_fleet, ["viewer"], None)
    open_users(tab, console_fleet)
    dialog = edit_access(tab, user["username"])
    dialog.get_by_label("Only the chosen sites").check()
    dialog.get_by_label("Other sites").fill("not a site!")
    dialog.get_by_role("button", name="Save access").click()
    expect(dialog.get_by_role("alert")).to_contain_text("Not saved:")
    assert "{" not in dialog.get_by_role("alert").inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    assert stored_user(console_fleet, user["id"])["sites"] is None


def test_your_own_account_offers_no_disable_or_delete(console_fleet: ConsoleFleet, tab: Page) -> None:
    other = create_user(console_fleet, ["viewer"], None)
    open_users(tab, console_fleet)
    mine = tab.locator("tr[data-username='admin']")
    expect(mine).to_contain_text("you")
    expect(mine.get_by_role("button", name="Edit access of admin")).to_be_visible()
    expect(mine.get_by_role("button", name="Disable")).to_have_count(0)
    expect(mine.get_by_role("button", name="Delete")).to_have_count(0)
    theirs = tab.locator(f"tr[data-username='{other['username']}']")
    expect(theirs.get_by_role("button", name="Disable")).to_be_visible()
    expect(theirs.get_by_role("button", name="Delete")).to_be_visible()


def test_every_time_says_its_zone_and_the_me_page_switches_them_to_utc(console_fleet: ConsoleFleet, tab: Page) -> None:
    create_user(console_fleet, ["viewer"], None)
    open_users(tab, console_fleet)
    created = tab.locator(".users-table tbody tr time").first
    expect(created).to_have_text(BERLIN)
    assert UTC_TITLE.match(created.get_attribute("title") or ""), created.get_attribute("title")
    expect(tab.locator(".users-table caption")).to_have_text(re.compile(r"^\d+ users$"))

    tab.goto(f"{console_fleet.hub.url}/#/audit")
    first = tab.locator(".audit tbody tr time").first
    expect(first).to_have_text(BERLIN)
    assert UTC_TITLE.match(first.get_attribute("title") or "")

    tab.goto(f"{console_fleet.hub.url}/#/me")
    sessions = tab.locator("section time").first
    expect(sessions).to_have_text(BERLIN)
    expect(tab.get_by_label("my browser's zone (Europe/Berlin)")).to_be_checked()
    tab.get_by_label("UTC", exact=True).check()
    expect(tab.locator("section time").first).to_have_text(re.compile(r"\bUTC\b"))
    tab.screenshot(path=str(ARTIFACTS / "me-times-in-utc.png"), full_page=True)
    tab.goto(f"{console_fleet.hub.url}/#/users")
    expect(tab.locator(".users-table tbody tr time").first).to_have_text(re.compile(r"\bUTC\b"))
    tab.goto(f"{console_fleet.hub.url}/#/me")
    tab.get_by_label("my browser's zone (Europe/Berlin)").check()
    expect(tab.locator("section time").first).to_have_text(BERLIN)


def test_a_notice_on_a_phone_leaves_the_clicked_control_free(console_fleet: ConsoleFleet, tab: Page) -> None:
    user = create_user(console_fleet, ["viewer", "technician"], None)
    tab.set_viewport_size({"width": 390, "height": 844})
    open_users(tab, console_fleet)
    opener = tab.get_by_role("button", name=f"Edit access of {user['username']}")
    dialog = edit_access(tab, user["username"])
    dialog.get_by_label("operator", exact=True).check()
    dialog.get_by_role("button", name="Save access").click()
    notice = tab.locator("#notices .notice").last
    expect(notice).to_contain_text(f"{user['username']}: access saved")
    expect(tab.locator(f"tr[data-username='{user['username']}']")).to_contain_text("operator")
    toast, control = notice.bounding_box(), opener.bounding_box()
    assert toast and control
    overlap_x = min(toast["x"] + toast["width"], control["x"] + control["width"]) - max(toast["x"], control["x"])
    overlap_y = min(toast["y"] + toast["height"], control["y"] + control["height"]) - max(toast["y"], control["y"])
    assert overlap_x <= 0 or overlap_y <= 0, (toast, control)
    # Wherever a notice sits, a click on it reaches the page beneath, except on its close button.
    beneath = tab.evaluate(
        """([x, y]) => { const el = document.elementFromPoint(x, y); return el ? el.closest('#notices') === null : true; }""",
        [toast["x"] + toast["width"] / 3, toast["y"] + toast["height"] / 2],
    )
    assert beneath, "the notice takes clicks meant for the page"
    tab.screenshot(path=str(ARTIFACTS / "users-phone-notice.png"))
    overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the users page scrolls sideways by {overflow}px at 390 px"
    notice.get_by_role("button", name="Dismiss").click()
    expect(tab.locator("#notices .notice")).to_have_count(0)


def test_the_admin_pages_fit_a_phone(console_fleet: ConsoleFleet, tab: Page) -> None:
    tab.set_viewport_size({"width": 390, "height": 844})
    sign_in(tab, console_fleet.hub.url)
    for path, ready in (
        ("/users", ".users-table"),
        ("/audit", ".audit tbody tr"),
        ("/me", "section time"),
        ("/keys", "form[aria-label='New API key']"),
    ):
        tab.goto(f"{console_fleet.hub.url}/#{path}")
        expect(tab.locator(ready).first).to_be_visible()
        overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"#{path} scrolls sideways by {overflow}px at 390 px"
        tab.screenshot(path=str(ARTIFACTS / f"phone{path.replace('/', '-')}.png"), full_page=True)


def test_the_audit_log_names_the_technician_not_the_node(console_fleet: ConsoleFleet, tab: Page) -> None:
    node = console_fleet.nodes["Stage left"]
    node_id = console_fleet.node_id("Stage left")
    with console_fleet.hub.admin() as admin:
        assert admin.patch(f"/api/v1/nodes/{node_id}", json={"technician_pin": PIN}).status_code == 200
    access = node.workdir / "data" / "technician.json"
    wait_for(lambda: access.exists() and json.loads(access.read_text()).get("pin_hash"), 20, "the PIN's hash at the node")
    answer = httpx.post(f"{node.local_url}/local/v1/login", json={"pin": PIN}, timeout=10)
    assert answer.status_code == 200, answer.text

    def logged() -> bool:
        with console_fleet.hub.admin() as admin:
            rows = admin.get("/api/v1/audit-events", params={"action": "technician.login", "target_id": node_id}).json()["data"]
        return any(r["outcome"] == "success" for r in rows)

    wait_for(logged, 40, "the technician's login in the hub's audit log", interval=0.5)
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/audit")
    row = tab.locator(".audit tbody tr", has_text="technician.login").first
    expect(row).to_contain_text("Technician PIN user (at Stage left)")
    actor = row.locator(".actor")
    expect(actor).to_have_attribute("title", f"technician pin@{node_id}")
    expect(row).not_to_contain_text("(node)")
    expect(row.locator("time")).to_have_text(BERLIN)
    outcome = row.locator("td").nth(4).inner_text()  # the hub's reason names the time at the node
    assert not re.search(r"\dT\d\d:\d\d", outcome) and BERLIN.search(outcome), outcome
    tab.screenshot(path=str(ARTIFACTS / "audit-technician.png"))
