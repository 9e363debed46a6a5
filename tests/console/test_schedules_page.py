"""The schedules screen in headless Chromium against a real hub and its real nodes: a weekday schedule built
with the presets and a raw RRULE, previewed live in the site's zone and UTC (a bad rule named at its field,
an exception taken from the preview), saved and edited; a clash answered 409 shown with its takes and saved
by skipping; a dawn schedule at a polar site told why there is no sunrise; the week view of a site; skip
next, unskip and run now on a real node, the take's recording linked from the history; a viewer reads only;
and the pages fit a phone and pass axe."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in, sign_in_as_viewer

BERLIN = ZoneInfo("Europe/Berlin")
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
# Sites of this module: a meadow near Berlin, and Longyearbyen, where the sun does not rise for weeks in
# winter nor set in summer. Their boxes are enrolled only (a schedule's targets need not be running).
SITES = {
    "dawn-meadow": {"time_zone": "Europe/Berlin", "latitude": 52.52, "longitude": 13.405},
    "polar-station": {"time_zone": "Arctic/Longyearbyen", "latitude": 78.2232, "longitude": 15.6267},
}
BOXES = {"Meadow box": ("dawn-meadow", ["roof"]), "Meadow mast": ("dawn-meadow", ["mast"]), "Polar box": ("polar-station", [])}


@pytest.fixture(scope="module")
def boxes(console_fleet: ConsoleFleet) -> dict[str, str]:
    """This module's sites and enrolled boxes; box name -> node id."""
    hub = console_fleet.hub
    for site, fields in SITES.items():
        hub.ensure_site(site, **fields)
    ids = {}
    with hub.admin() as admin:
        for name, (site, tags) in BOXES.items():
            response = admin.post("/api/v1/nodes/enroll", json={"name": name, "site": site, "tags": tags})
            assert response.status_code == 201, response.text
            ids[name] = response.json()["data"]["node"]["id"]
    return ids


@pytest.fixture
def berlin(browser: Browser) -> Iterator[BrowserContext]:
    """A browser in Berlin (en-GB), which axe may run in (the console's CSP refuses inline scripts otherwise)."""
    ctx = browser.new_context(
        viewport={"width": 1440, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB", bypass_csp=True
    )
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


def a_monday_ahead(weeks: int = 1) -> date:
    """A Monday 8 to 14 days from today (`weeks` 1): after the dispatch lead window, within the 31 days conflicts look at."""
    today = datetime.now(BERLIN).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 or 7) + timedelta(days=7 * weeks)


def a_polar_night_day() -> date:
    """Today if Longyearbyen is in its polar night (no sunrise from late October to mid-February), else the next 15 November."""
    today = datetime.now(BERLIN).date()
    if today.month in (11, 12, 1):
        return today
    return date(today.year if today.month < 11 else today.year + 1, 11, 15)


def utc_text(day: date, clock: str, zone: ZoneInfo = BERLIN) -> str:
    """The console's UTC form of a local wall time: "2027-01-11 08:00 UTC"."""
    local = datetime.fromisoformat(f"{day.isoformat()}T{clock}").replace(tzinfo=zone)
    return f"{local.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def make_schedule(fleet: ConsoleFleet, **body: object) -> dict:
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    schedule: dict = response.json()["data"]
    return schedule


def assert_accessible(page: Page, what: str) -> None:
    violations = run_axe(page)
    assert not violations, f"{what}:\n{describe(violations)}"


def test_a_weekday_schedule_is_built_with_presets_previewed_live_in_the_sites_zone_saved_and_edited(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page
) -> None:
    monday = a_monday_ahead()
    sign_in(tab, console_fleet.hub.url)
    tab.get_by_role("navigation", name="Sections").get_by_role("link", name="Schedules").click()
    expect(tab.get_by_role("heading", name="Schedules")).to_be_visible()
    tab.get_by_role("link", name="New schedule").click()
    form = tab.get_by_role("form", name="Schedule")
    form.get_by_label("Name", exact=True).fill("Weekday mornings")
    form.get_by_role("checkbox", name="Meadow box (dawn-meadow)").check()
    expect(form.get_by_label("Time zone")).to_have_value("Europe/Berlin")  # the site's, unless chosen
    expect(form).to_contain_text("dawn-meadow's zone is Europe/Berlin.")
    expect(form).to_contain_text("Records on 1 node now: Meadow box.")

    form.get_by_label("Starts").fill(f"{monday.isoformat()}T09:00")
    form.get_by_label("Duration").fill("30")
    form.get_by_label("Unit").select_option("minutes")
    form.get_by_label("Repeats").select_option("weekdays")
    expect(form.get_by_label("RRULE")).to_have_value("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")

    preview = tab.locator(".schedule-preview")
    rows = preview.locator("tbody tr")
    expect(preview.get_by_role("status")).to_contain_text("The next 10 occurrences")
    expect(rows).to_have_count(10)
    expect(rows.nth(0)).to_contain_text("09:00")
    expect(rows.nth(0)).to_contain_text(utc_text(monday, "09:00"))
    expect(rows.nth(5)).to_contain_text(utc_text(monday + timedelta(days=7), "09:00"))  # the weekend left out
    expect(preview.locator("thead")).to_contain_text("At the site (Europe/Berlin)")

    # A raw rule is read back into the builder; a rule the hub refuses is named at its field, live.
    rrule = form.get_by_label("RRULE")
    rrule.fill("FREQ=WEEKLY;BYDAY=MO,WE")
    expect(form.get_by_label("Repeats")).to_have_value("weekly")
    expect(form.get_by_role("checkbox", name="Wed")).to_be_checked()
    expect(form.get_by_role("checkbox", name="Tue")).not_to_be_checked()
    expect(rows.nth(1)).to_contain_text(utc_text(monday + timedelta(days=2), "09:00"))
    rrule.fill("FREQ=SOMETIMES")
    expect(preview.get_by_role("status")).to_contain_text("1 problem to fix")
    expect(rrule).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-problem").filter(has_text="RRULE")).to_be_visible()
    tab.screenshot(path=str(ARTIFACTS / "schedule-rrule-problem.png"), full_page=True)
    form.get_by_label("Repeats").select_option("weekdays")
    expect(rrule).not_to_have_attribute("aria-invalid", "true")
    expect(rows).to_have_count(10)

    # An exception taken from the preview; a validity window in the site's zone.
    tuesday = monday + timedelta(days=1)
    except_tuesday = preview.get_by_role("button", name=f"Except {tuesday.isoformat()} 09:00")
    except_tuesday.focus()
    tab.keyboard.press("Enter")  # keyboard-operable
    expect(form.locator(".schedule-exdates")).to_contain_text(f"{tuesday.isoformat()} 09:00:00")
    expect(rows.nth(1)).to_contain_text(utc_text(monday + timedelta(days=2), "09:00"))
    until = monday + timedelta(days=28)
    form.get_by_label("Valid until (local time)").fill(f"{until.isoformat()}T00:00")
    form.get_by_role("button", name="Add metadata").click()
    form.get_by_label("Metadata key").fill("project")
    form.get_by_label("Value").fill("meadow")
    form.get_by_label("Schedule tags").fill("birds, mornings")
    expect(rows.nth(0)).to_contain_text(utc_text(monday, "09:00"))
    tab.screenshot(path=str(ARTIFACTS / "schedule-form.png"), full_page=True)
    assert_accessible(tab, "the schedule form")

    form.get_by_role("button", name="Create schedule").click()
    expect(tab.get_by_role("heading", name="Schedule Weekday mornings")).to_be_visible()
    facts = tab.locator(".schedule-page .facts")
    expect(facts).to_contain_text("Weekdays at 09:00, for 30 min")
    expect(facts).to_contain_text("Europe/Berlin")
    expect(facts).to_contain_text(f"{tuesday.isoformat()} 09:00")
    schedule_id = tab.url.rsplit("/", 1)[-1]
    with console_fleet.hub.admin() as admin:
        stored = admin.get(f"/api/v1/schedules/{schedule_id}").json()["data"]
    assert stored["target"] == {"node_ids": [boxes["Meadow box"]]}
    assert (stored["time_zone"], stored["start_local"], stored["duration_s"]) == (
        "Europe/Berlin",
        f"{monday.isoformat()}T09:00:00",
        1800,
    )
    assert stored["rrule"] == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    assert stored["exdates"] == [f"{tuesday.isoformat()}T09:00:00"]
    expected_until = datetime.fromisoformat(f"{until.isoformat()}T00:00").replace(tzinfo=BERLIN).astimezone(UTC)
    assert datetime.fromisoformat(stored["valid_until"].replace("Z", "+00:00")) == expected_until
    assert (stored["metadata"], stored["tags"], stored["on_conflict"]) == ({"project": "meadow"}, ["birds", "mornings"], "reject")
    assert stored["next_occurrence"]["start_utc"].startswith(f"{monday.isoformat()}T08:00:00")

    # Edit: the form comes back as saved; a longer take is version 2.
    tab.get_by_role("link", name="Edit").click()
    form = tab.get_by_role("form", name="Schedule")
    expect(form.get_by_label("Repeats")).to_have_value("weekdays")
    expect(form.get_by_label("Duration")).to_have_value("30")
    expect(form.get_by_label("Valid until (local time)")).to_have_value(f"{until.isoformat()}T00:00")
    with console_fleet.hub.admin() as admin:  # someone else changes it meanwhile
        answer = admin.patch(f"/api/v1/schedules/{schedule_id}", json={"version": 1, "description": "mornings at the meadow"})
        assert answer.status_code == 200, answer.text
    form.get_by_label("Duration").fill("45")
    form.get_by_role("button", name="Save schedule").click()
    expect(form.get_by_role("alert").filter(has_text="Not saved")).to_contain_text("changed meanwhile")
    tab.reload()
    form = tab.get_by_role("form", name="Schedule")
    expect(form.get_by_label("Description")).to_have_value("mornings at the meadow")
    form.get_by_label("Duration").fill("45")
    form.get_by_role("button", name="Save schedule").click()
    expect(facts).to_contain_text("Weekdays at 09:00, for 45 min")
    expect(facts).to_contain_text("v3")


def test_a_clash_is_shown_with_its_takes_and_saved_by_skipping_them(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page
) -> None:
    monday = a_monday_ahead()
    other = make_schedule(
        console_fleet,
        name=f"Mast mornings {uuid.uuid4().hex[:4]}",
        target={"node_ids": [boxes["Meadow mast"]]},
        start_local=f"{monday.isoformat()}T09:00:00",
        duration_s=3600,
        rrule="FREQ=DAILY",
    )
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/schedules/new")
    form = tab.get_by_role("form", name="Schedule")
    form.get_by_label("Name", exact=True).fill("Overlapping mast")
    form.get_by_role("radio", name="Every node on a site with some tags").check()
    form.get_by_label("Site", exact=True).select_option("dawn-meadow")
    form.get_by_label("Node tags").fill("mast")
    expect(form).to_contain_text("Records on 1 node now: Meadow mast.")
    form.get_by_label("Starts").fill(f"{monday.isoformat()}T09:30")
    form.get_by_label("Repeats").select_option("daily")
    expect(tab.locator(".schedule-preview tbody tr")).to_have_count(10)
    form.get_by_role("button", name="Create schedule").click()

    clash = tab.get_by_role("region", name="This schedule clashes with another")
    expect(clash.get_by_role("link", name=other["name"])).to_have_attribute("href", f"#/schedules/{other['id']}")
    expect(clash).to_contain_text("on Meadow mast")
    first = clash.locator("tbody tr").first
    expect(first).to_contain_text("09:30")  # this one's take
    expect(first).to_contain_text("09:00")  # the other's
    expect(first).to_contain_text(utc_text(monday, "09:30"))
    expect(clash.locator("tbody tr")).to_have_count(5)
    tab.screenshot(path=str(ARTIFACTS / "schedule-conflict.png"), full_page=True)
    assert_accessible(tab, "the conflict panel")

    clash.get_by_role("button", name="Save, skipping clashing takes").click()
    expect(tab.get_by_role("heading", name="Schedule Overlapping mast")).to_be_visible()
    expect(tab.locator(".schedule-page .facts")).to_contain_text("Skip a clashing take on that node")
    expect(tab.locator(".schedule-page .facts")).to_contain_text("every node on dawn-meadow tagged mast — now Meadow mast")

    # Disabled, it has no next take to skip, and says so by the button; enabled again; deleted.
    tab.get_by_role("button", name="Disable").click()
    expect(tab.locator(".schedule-page .facts .state").first).to_have_text("disabled")
    skip = tab.get_by_role("button", name="Skip next")
    expect(skip).to_be_disabled()
    expect(skip).to_have_accessible_description("the schedule is disabled")
    tab.get_by_role("button", name="Enable").click()
    expect(tab.locator(".schedule-page .facts .state").first).to_have_text("enabled")
    expect(skip).to_be_enabled()
    tab.get_by_role("button", name="Delete").click()
    tab.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(tab.get_by_role("heading", name="Schedules")).to_be_visible()
    expect(tab.locator("table.schedule-table")).not_to_contain_text("Overlapping mast")
    expect(tab.locator("table.schedule-table")).to_contain_text(other["name"])


def test_a_dawn_schedule_previews_sunrise_and_a_polar_site_says_why_it_has_none(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page
) -> None:
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/schedules/new")
    form = tab.get_by_role("form", name="Schedule")
    form.get_by_label("Name", exact=True).fill("Dawn chorus")
    form.get_by_role("checkbox", name="Polar box (polar-station)").check()
    expect(form.get_by_label("Time zone")).to_have_value("Arctic/Longyearbyen")
    form.get_by_role("radio", name="At a solar event").check()
    form.get_by_label("Solar event", exact=True).select_option("sunrise")
    form.get_by_label("Offset (minutes)").fill("-30")
    form.get_by_label("Starts").fill(f"{a_polar_night_day().isoformat()}T00:00")  # the first day; the sun sets the time
    form.get_by_label("Duration").fill("1")  # an hour: ends before the meadow box's weekday mornings at 09:00
    expect(form.get_by_label("RRULE")).to_have_value("FREQ=DAILY;COUNT=1")  # once: one day's sunrise
    form.get_by_label("Repeats").select_option("daily")
    expect(form.get_by_label("RRULE")).to_have_value("FREQ=DAILY")
    preview = tab.locator(".schedule-preview")
    # At 78 degrees north the sun does not rise for weeks around midwinter: each day says so.
    absent = preview.locator(".schedule-absent")
    expect(absent).to_contain_text(re.compile(r"no sunrise on \d{4}-\d\d-\d\d at 78\.2N: the sun stays down \(polar night\)"))
    expect(absent).to_contain_text(re.compile(r"and \d+ more days without one"))
    tab.screenshot(path=str(ARTIFACTS / "schedule-polar.png"), full_page=True)

    form.get_by_role("checkbox", name="Polar box (polar-station)").uncheck()
    form.get_by_role("checkbox", name="Meadow box (dawn-meadow)").check()
    form.get_by_label("Time zone").select_option("Europe/Berlin")
    expect(preview.locator(".schedule-absent")).to_be_hidden()
    expect(preview.locator("tbody tr")).to_have_count(10)
    expect(preview.locator("tbody tr").first.locator(".col-note")).to_contain_text(re.compile(r"sunrise \d\d:\d\d - 30 min"))
    form.get_by_label("Offset (minutes)").fill("-900")
    expect(form.get_by_label("Offset (minutes)")).to_have_attribute("aria-invalid", "true")
    expect(preview.get_by_role("status")).to_contain_text("problem")
    form.get_by_label("Offset (minutes)").fill("-30")
    expect(preview.locator("tbody tr")).to_have_count(10)
    form.get_by_role("button", name="Create schedule").click()
    expect(tab.get_by_role("heading", name="Schedule Dawn chorus")).to_be_visible()
    expect(tab.locator(".schedule-page .facts")).to_contain_text("30 min before sunrise, every day, for 1 h")


def test_the_week_view_shows_a_sites_takes_day_by_day_in_its_zone(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page
) -> None:
    monday = a_monday_ahead(weeks=2)
    name = f"Noon meadow {uuid.uuid4().hex[:4]}"
    schedule = make_schedule(
        console_fleet,
        name=name,
        target={"selector": {"site": "dawn-meadow", "tags": ["roof"]}},
        start_local=f"{monday.isoformat()}T12:00:00",
        duration_s=900,
        rrule="FREQ=DAILY",
        on_conflict="allow",
    )
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/schedules/week?site=dawn-meadow&from={monday.isoformat()}")
    days = tab.locator(".schedule-day")
    expect(days).to_have_count(7)
    expect(tab.get_by_role("status").filter(has_text="takes for dawn-meadow")).to_contain_text("times in Europe/Berlin")
    for i in range(7):
        take = days.nth(i).locator(".schedule-take", has_text=name)
        expect(take).to_contain_text("12:00–12:15")
        expect(take.get_by_role("link", name=name)).to_have_attribute("href", f"#/schedules/{schedule['id']}")
        expect(take).to_contain_text("Meadow box")
    tab.screenshot(path=str(ARTIFACTS / "schedule-week.png"), full_page=True)
    assert_accessible(tab, "the week view")
    tab.get_by_label("Node", exact=True).select_option(label="Meadow mast (dawn-meadow)")
    expect(tab.get_by_label("Site", exact=True)).to_have_value("")
    expect(tab.get_by_role("status").filter(has_text="takes for Meadow mast")).to_be_visible()
    expect(days.first).not_to_contain_text(name)  # the noon schedule records on the roof box only
    tab.get_by_label("Site", exact=True).select_option("dawn-meadow")
    tab.get_by_role("button", name="Next week").click()
    expect(tab.get_by_label("First day")).to_have_value((monday + timedelta(days=7)).isoformat())
    expect(days.first.locator(".schedule-take", has_text=name)).to_contain_text("12:00–12:15")


def test_skip_next_unskip_and_run_now_on_a_real_node_with_the_recording_linked(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page
) -> None:
    foyer = console_fleet.node_id("Foyer")
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    schedule = make_schedule(
        console_fleet,
        name="Foyer at six",
        target={"node_ids": [foyer]},
        start_local=f"{tomorrow.isoformat()}T06:00:00",
        duration_s=600,
        rrule="FREQ=DAILY",
        metadata={"room": "foyer"},
    )
    sign_in(tab, console_fleet.hub.url)
    tab.goto(f"{console_fleet.hub.url}/#/schedules/{schedule['id']}")
    expect(tab.get_by_role("heading", name="Schedule Foyer at six")).to_be_visible()
    takes = tab.locator("table.schedule-occurrences tbody tr")
    first = takes.filter(has_text=f"{tomorrow.isoformat()} 06:00 UTC")
    state = first.locator(".col-state")
    expect(state).to_have_text(re.compile("^(planned|dispatched)$"))  # dispatched ahead within the lead window (24 h)

    tab.get_by_role("button", name="Skip next").click()
    tab.get_by_role("dialog").get_by_role("button", name="Skip it").click()
    expect(state).to_have_text("skipped")
    expect(tab.get_by_role("status").filter(has_text="is skipped")).to_be_visible()
    first.get_by_role("button", name=re.compile("^Unskip the take at")).click()
    expect(state).to_have_text(re.compile("^(planned|dispatched)$"))

    tab.get_by_role("button", name="Run now").click()
    dialog = tab.get_by_role("dialog", name="Run Foyer at six now?")
    dialog.get_by_label("Length (minutes)").fill("0.05")  # 3 s
    dialog.get_by_role("button", name="Run now").click()
    now_row = takes.filter(has_text="run now")
    expect(now_row).to_have_count(1, timeout=20_000)
    expect(now_row.locator(".col-state")).to_have_text("completed", timeout=60_000)
    link = now_row.locator(".schedule-recordings a")
    expect(link).to_have_text("Foyer")
    expect(link).to_have_attribute("href", re.compile(r"^#/recordings/rec_"))
    tab.screenshot(path=str(ARTIFACTS / "schedule-history.png"), full_page=True)
    assert_accessible(tab, "a schedule's page")
    link.click()
    expect(tab.locator(".recording-page .facts").first).to_contain_text("completed")
    expect(tab.locator(".recording-page")).to_contain_text("foyer")


def test_a_viewer_reads_schedules_without_the_buttons_that_change_them(
    console_fleet: ConsoleFleet, boxes: dict[str, str], page: Page
) -> None:
    schedule = make_schedule(
        console_fleet,
        name="Read-only hours",
        target={"node_ids": [boxes["Polar box"]]},
        start_local="2030-06-01T10:00:00",
        duration_s=60,
        rrule="FREQ=HOURLY;INTERVAL=2",
        on_conflict="allow",
    )
    sign_in_as_viewer(page, console_fleet.hub)
    page.get_by_role("link", name="Schedules").click()
    row = page.locator(f"table.schedule-table tr[data-schedule-id='{schedule['id']}']")
    expect(row).to_contain_text("Every 2 hours from 10:00, for 1 min")
    expect(page.get_by_role("link", name="New schedule")).to_have_count(0)
    page.get_by_label("Site", exact=True).select_option("polar-station")  # an option from the counts (facets)
    expect(page.locator("table.schedule-table tbody tr")).to_have_count(1)
    expect(page.get_by_label("Site", exact=True).locator("option:checked")).to_have_text("polar-station (1)")
    expect(page.get_by_role("link", name="Export CSV")).to_have_attribute(
        "href", re.compile(r"/api/v1/schedules/export\?.*site=polar-station.*format=csv")
    )
    row.get_by_role("link", name="Read-only hours").click()
    expect(page.get_by_text("Changing schedules needs the permission schedule:manage.")).to_be_visible()
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)
    page.goto(f"{console_fleet.hub.url}/#/schedules/new")
    expect(page.get_by_role("alert")).to_contain_text("it needs the permission schedule:manage")


@pytest.mark.parametrize(
    ("address", "scheme"),
    [
        ("/#/schedules", "light"),
        ("/#/schedules/week?site=dawn-meadow", "light"),
        ("/#/schedules/new", "light"),
        ("/#/schedules/new", "dark"),
        ("/#/schedules/{id}", "light"),
    ],
)
def test_the_schedules_pages_fit_a_phone_and_pass_axe(
    console_fleet: ConsoleFleet, boxes: dict[str, str], tab: Page, address: str, scheme: str
) -> None:
    if "{id}" in address:
        schedule = make_schedule(
            console_fleet,
            name="Phone check",
            target={"node_ids": [boxes["Polar box"]]},
            # 8 days ahead: its takes fall in the page's default window (the next two weeks) on any day at any
            # hour (a Monday two weeks ahead at 03:00 lay outside it from Monday 00:00 to 03:00 Berlin time)
            start_local=f"{(datetime.now(BERLIN).date() + timedelta(days=8)).isoformat()}T03:00:00",
            duration_s=60,
            rrule="FREQ=DAILY",
            on_conflict="allow",
        )
        address = address.format(id=schedule["id"])
    sign_in(tab, console_fleet.hub.url)
    tab.emulate_media(color_scheme="dark" if scheme == "dark" else "light")
    tab.set_viewport_size({"width": 390, "height": 860})
    tab.goto(f"{console_fleet.hub.url}{address}")
    expect(
        tab.locator(".schedule-table tbody tr, .schedule-day, .schedule-preview tbody tr, .schedule-occurrences tbody tr").first
    ).to_be_visible()
    tab.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert tab.evaluate(OVERFLOW) <= 0, f"{address} scrolls sideways on a phone"
    assert_accessible(tab, f"{address} ({scheme})")
    name = "schedule-detail" if "/sch_" in address else address.strip("/#").split("?")[0].replace("/", "-")
    tab.screenshot(path=str(ARTIFACTS / f"{name}-phone-{scheme}.png"), full_page=True)
