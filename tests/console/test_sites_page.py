"""The Sites page in headless Chromium against a real hub: a site made in the dialog with its time zone
and location (the time there now, a map link), edited to `approved` with a user approved to see it,
its admins shown, and deleted with the node standing on it named first."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in

PASSWORD = "a patient site manager"
# Chromium names Tokyo's zone "JST" or "GMT+9", depending on the locale's data.
TOKYO = re.compile(r"\b(JST|GMT\+0?9(:00)?)\b")


@pytest.fixture
def berlin(browser: Browser) -> Iterator[BrowserContext]:
    """A browser in Europe/Berlin, so a site's own zone differs from the browser's."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB")
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def tab(berlin: BrowserContext) -> Iterator[Page]:
    page = berlin.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"errors in the console's scripts: {errors}"


def open_sites(page: Page, fleet: ConsoleFleet) -> None:
    sign_in(page, fleet.hub.url)
    page.get_by_role("link", name="Sites", exact=True).click()
    expect(page.locator(".site-table tbody tr[data-site='main-hall']")).to_be_visible()


def test_a_site_is_made_with_its_zone_and_location_approved_and_deleted_naming_its_node(
    console_fleet: ConsoleFleet, tab: Page
) -> None:
    hub = console_fleet.hub
    site_id = f"harbour-{uuid.uuid4().hex[:4]}"
    open_sites(tab, console_fleet)
    main_hall = tab.locator(".site-table tbody tr[data-site='main-hall']")
    expect(main_hall.get_by_role("link", name="1 node")).to_have_attribute("href", "#/fleet?site=main-hall")  # Stage left

    tab.get_by_role("button", name="New site").click()
    dialog = tab.get_by_role("dialog", name="New site")
    dialog.get_by_label("Id").fill(site_id)
    dialog.get_by_label("Name").fill("Harbour stage")
    dialog.get_by_label("Time zone").select_option("Asia/Tokyo")
    dialog.get_by_label("Latitude").fill("35.6586")
    dialog.get_by_label("Longitude").fill("139.7454")
    dialog.get_by_label("Elevation (m)").fill("40")
    tab.screenshot(path=str(ARTIFACTS / "site-editor.png"))
    dialog.get_by_role("button", name="Create site").click()
    expect(dialog).to_have_count(0)

    row = tab.locator(f".site-table tbody tr[data-site='{site_id}']")
    expect(row).to_contain_text("Harbour stage")
    expect(row.locator(".col-zone")).to_have_text("Asia/Tokyo")
    expect(row.locator(".col-clock time")).to_have_text(TOKYO)  # the time there now, in its own zone
    expect(row.locator(".col-location")).to_contain_text("35.6586, 139.7454 · 40 m")
    expect(row.get_by_role("link", name="Map of Harbour stage")).to_have_attribute(
        "href", re.compile(r"openstreetmap\.org/\?mlat=35\.6586&mlon=139\.7454")
    )
    expect(row.locator(".state")).to_have_text("public")
    expect(row.locator(".col-admins")).to_have_text("full admins only")
    with hub.admin() as admin:
        stored = admin.get(f"/api/v1/sites/{site_id}").json()["data"]
    assert (stored["time_zone"], stored["latitude"], stored["longitude"], stored["elevation_m"]) == (
        "Asia/Tokyo",
        35.6586,
        139.7454,
        40,
    )

    # Edit: only approved users see it now; a site admin and an approved user.
    row.get_by_role("button", name="Edit").click()
    dialog = tab.get_by_role("dialog", name="Edit Harbour stage")
    expect(dialog.get_by_label("Id")).to_be_disabled()
    dialog.get_by_label("Who sees it").select_option("approved")
    expect(dialog).to_contain_text("Only full admins, this site's admins and the users approved below see it.")
    dialog.get_by_role("button", name="Save site").click()
    expect(dialog).to_have_count(0)
    expect(row.locator(".state")).to_have_text("approved users")

    suffix = uuid.uuid4().hex[:6]
    with hub.admin() as admin:
        for username, roles in ((f"harbourmaster-{suffix}", ["admin"]), (f"guest-{suffix}", ["viewer"])):
            body = {"username": username, "password": PASSWORD, "roles": roles, "sites": [site_id]}
            assert admin.post("/api/v1/auth/users", json=body).status_code == 201
        node = admin.post("/api/v1/nodes/enroll", json={"name": "Quay box", "site": site_id}).json()["data"]["node"]
    tab.get_by_role("button", name="Filter").click()  # reload the list
    expect(row.locator(".col-admins")).to_have_text(f"harbourmaster-{suffix}")
    expect(row.locator(".col-nodes")).to_have_text("1 node")

    row.get_by_role("button", name="Approved users").click()
    approvals = tab.get_by_role("dialog", name="Approved users of Harbour stage")
    expect(approvals).to_contain_text("No user is approved yet.")
    approvals.get_by_label("User").select_option(label=f"guest-{suffix}")
    approvals.get_by_role("button", name="Approve").click()
    expect(approvals.locator(".approved-list")).to_contain_text(f"guest-{suffix}")
    tab.screenshot(path=str(ARTIFACTS / "site-approved-users.png"))
    approvals.get_by_role("button", name="Close").click()
    with hub.admin() as admin:
        approved = admin.get(f"/api/v1/sites/{site_id}").json()["data"]["approved_users"]
    assert [u["username"] for u in approved] == [f"guest-{suffix}"]

    # Delete: the node standing there and the users whose grants name it are listed first.
    row.get_by_role("button", name="Delete").click()
    confirm = tab.get_by_role("dialog", name="Delete Harbour stage?")
    expect(confirm).to_contain_text(f"node Quay box ({node['id']})")
    expect(confirm).to_contain_text(f"user guest-{suffix}")
    expect(confirm).to_contain_text("1 node stands on this site")
    tab.screenshot(path=str(ARTIFACTS / "site-delete.png"))
    confirm.get_by_role("button", name="Delete anyway").click()
    expect(row).to_have_count(0)
    with hub.admin() as admin:
        assert admin.get(f"/api/v1/sites/{site_id}").status_code == 404
        assert admin.get(f"/api/v1/nodes/{node['id']}").json()["data"]["site"] is None


def test_a_viewer_reads_the_sites_it_may_see_without_the_buttons_that_change_them(console_fleet: ConsoleFleet, tab: Page) -> None:
    hub = console_fleet.hub
    username = f"siteviewer-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        body = {"username": username, "password": PASSWORD, "roles": ["viewer"], "sites": ["foyer"]}
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    sign_in(tab, hub.url, username, PASSWORD)
    tab.get_by_role("link", name="Sites", exact=True).click()
    rows = tab.locator(".site-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", "foyer")
    expect(tab.get_by_role("button", name="New site")).to_have_count(0)
    expect(rows.first.get_by_role("button", name="Edit")).to_have_count(0)
    expect(rows.first.get_by_role("button", name="Delete")).to_have_count(0)
