"""The fleet page as a triage view, in headless Chromium against a real hub: two running nodes
(one made degraded by a critical event), one that went silent (offline) and one never connected
(pending). Totals, problems first, sorting and grouping kept in the address, the reasons of each
row, bulk actions that reach the hub, phone cards and tablet columns, and 200 nodes."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import VIEWER_PASSWORD, sign_in
from tests.harness import wait_for


@dataclass
class Triage:
    """The console fleet plus the nodes added for triage, by name."""

    fleet: ConsoleFleet
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.fleet.hub.url


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def triage(console_fleet: ConsoleFleet) -> Iterator[Triage]:
    hub = console_fleet.hub
    setup = Triage(console_fleet, {name: console_fleet.node_id(name) for name in console_fleet.nodes})
    with hub.admin() as admin:
        for name, site, tags in [("Spare box", "foyer", ["spare"]), ("Loft", "main-hall", ["stage"])]:
            response = admin.post("/api/v1/nodes/enroll", json={"name": name, "site": site, "tags": tags})
            assert response.status_code == 201, response.text
            setup.ids[name] = response.json()["data"]["node"]["id"]
            if name == "Loft":
                credential = response.json()["data"]["credential"]
        # The loft box heartbeats once at a 1 s interval, then falls silent: offline after 3 s.
        loft = setup.ids["Loft"]
        assert admin.patch(f"/api/v1/nodes/{loft}", json={"heartbeat_interval_s": 1}).status_code == 200
        with hub.client(credential) as box:
            beat = {"msg_id": "triage-1", "ts": now_iso(), "seq": 1, "agent_version": "0.1.0", "uptime_s": 5.0}
            assert box.post(f"/api/v1/nodes/{loft}/heartbeat", json=beat).status_code == 200
        # Stage left: a critical and a warning event (the critical one makes it degraded).
        stage = setup.ids["Stage left"]
        for kind, severity, details in [
            ("temperature.high", "warning", {"temperature_c": 81.5}),
            ("disk.low", "critical", {"free_pct": 2.5, "free_bytes": 800_000_000}),
        ]:
            response = admin.post(
                "/api/v1/health-events", json={"kind": kind, "severity": severity, "node_id": stage, "details": details}
            )
            assert response.status_code == 201, response.text

        def settled() -> bool:
            statuses = {n["name"]: n["status"] for n in admin.get("/api/v1/nodes", params={"limit": 200}).json()["data"]}
            return statuses == {"Stage left": "degraded", "Foyer": "online", "Spare box": "pending", "Loft": "offline"}

        wait_for(settled, 30, "one node of each status", interval=0.2)
    yield setup


def open_events(triage: Triage) -> list[dict]:
    with triage.fleet.hub.admin() as admin:
        rows = admin.get("/api/v1/health-events", params={"state": ["open", "acknowledged"], "limit": 200}).json()["data"]
    return [e for e in rows if e["node_id"] is not None]


def names_in_order(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        ".fleet-table tbody tr.node-row:not([hidden]) .fc-name a", "links => links.map((a) => a.textContent)"
    )


def open_fleet(page: Page, triage: Triage, query: str = "") -> None:
    sign_in(page, triage.url)
    page.goto(f"{triage.url}/#/fleet{query}")
    expect(page.locator(".fleet-table tbody tr.node-row")).to_have_count(4)


def test_totals_count_nodes_by_status_and_open_events_by_severity_and_filter_the_view(triage: Triage, page: Page) -> None:
    open_fleet(page, triage)
    totals = page.get_by_role("group", name="Nodes by status")
    for status in ["offline", "degraded", "pending", "online"]:
        expect(totals.locator(f'[data-total="status:{status}"] .n')).to_have_text("1")
    events = open_events(triage)
    by_severity = Counter(e["severity"] for e in events)
    nodes_with = {s: len({e["node_id"] for e in events if e["severity"] == s}) for s in ["critical", "warning", "info"]}
    severities = page.get_by_role("group", name="Open health events by severity")
    for severity in ["critical", "warning", "info"]:
        button = severities.locator(f'[data-total="severity:{severity}"]')
        expect(button.locator(".n")).to_have_text(str(by_severity[severity]))
        word = "node" if nodes_with[severity] == 1 else "nodes"
        expect(button.locator(".sub")).to_have_text(f" on {nodes_with[severity]} {word}")
    assert by_severity["critical"] >= 1 and by_severity["warning"] >= 2, by_severity

    # A total is a filter: pressed, in the address, and pressed again to show everything.
    offline = totals.get_by_role("button", name=re.compile("offline"))
    offline.click()
    expect(offline).to_have_attribute("aria-pressed", "true")
    assert names_in_order(page) == ["Loft"]
    assert "status=offline" in page.url
    expect(page.locator(".fleet-table caption")).to_have_text("1 of 4 nodes")
    offline.click()
    expect(page.locator(".fleet-table caption")).to_have_text("4 of 4 nodes")
    assert "status=" not in page.url

    severities.locator('[data-total="severity:critical"]').click()
    expect(page.locator(".fleet-table caption")).to_have_text(f"{nodes_with['critical']} of 4 nodes")
    assert "Stage left" in names_in_order(page) and "severity=critical" in page.url
    page.set_viewport_size({"width": 1440, "height": 900})
    page.get_by_role("button", name="Clear filters").click()
    expect(page.locator(".fleet-table caption")).to_have_text("4 of 4 nodes")
    page.screenshot(path=str(ARTIFACTS / "fleet-triage-1440.png"), full_page=True)


def test_problems_come_first_and_a_sorted_column_is_kept_in_the_address(triage: Triage, page: Page) -> None:
    open_fleet(page, triage, "?group=0")
    # offline, degraded, pending, online
    assert names_in_order(page) == ["Loft", "Stage left", "Spare box", "Foyer"]
    status_th = page.locator("thead th.fc-status")
    expect(status_th).to_have_attribute("aria-sort", "ascending")

    name_th = page.locator("thead th.fc-name")
    name_th.get_by_role("button", name="Name").click()
    expect(name_th).to_have_attribute("aria-sort", "ascending")
    expect(status_th).not_to_have_attribute("aria-sort", re.compile("."))
    assert names_in_order(page) == ["Foyer", "Loft", "Spare box", "Stage left"]
    assert "sort=name" in page.url and "group=0" in page.url
    # Keyboard: the header's button takes Enter.
    name_th.get_by_role("button", name="Name").focus()
    page.keyboard.press("Enter")
    expect(name_th).to_have_attribute("aria-sort", "descending")
    assert "sort=-name" in page.url
    assert names_in_order(page) == ["Stage left", "Spare box", "Loft", "Foyer"]

    page.reload()
    expect(page.locator(".fleet-table tbody tr.node-row")).to_have_count(4)
    expect(page.locator("thead th.fc-name")).to_have_attribute("aria-sort", "descending")
    assert names_in_order(page) == ["Stage left", "Spare box", "Loft", "Foyer"]

    # A bookmark: only the offline nodes, by name.
    page.goto(f"{triage.url}/#/fleet?status=offline&sort=name")
    expect(page.locator(".fleet-table caption")).to_have_text("1 of 4 nodes")
    assert names_in_order(page) == ["Loft"]
    expect(page.get_by_label("Status", exact=True)).to_have_value("offline")
    expect(page.locator("thead th.fc-name")).to_have_attribute("aria-sort", "ascending")


def test_nodes_are_grouped_by_site_with_totals_per_site(triage: Triage, page: Page) -> None:
    open_fleet(page, triage)
    groups = page.locator(".fleet-table tbody tr.fleet-group")
    expect(groups).to_have_count(2)  # two sites: grouped by default
    expect(page.get_by_label("Group by site")).to_be_checked()
    # Groups follow the sort: the site with the offline node first.
    expect(groups.nth(0).locator(".group-label")).to_have_text("main-hall — 2 nodes: 1 offline, 1 degraded")
    expect(groups.nth(1).locator(".group-label")).to_have_text("foyer — 2 nodes: 1 pending, 1 online")
    sequence = page.eval_on_selector_all(
        ".fleet-table tbody tr", "rows => rows.map((r) => r.dataset.site ?? r.querySelector('.fc-name a').textContent)"
    )
    assert sequence == ["main-hall", "Loft", "Stage left", "foyer", "Spare box", "Foyer"], sequence

    # A site's nodes are selected from its header.
    page.get_by_role("button", name="Select the shown nodes of foyer").click()
    bar = page.get_by_role("region", name="Selected nodes")
    expect(bar.locator(".bulk-count")).to_have_text("2 nodes selected")
    expect(page.get_by_label("Select Foyer")).to_be_checked()
    expect(page.get_by_label("Select Loft")).not_to_be_checked()
    page.get_by_role("button", name="Unselect the shown nodes of foyer").click()
    expect(bar).to_be_hidden()

    page.get_by_label("Search").fill("spare")
    expect(groups.nth(1).locator(".group-label")).to_have_text("foyer — 2 nodes: 1 pending, 1 online (1 shown)")
    expect(groups.nth(0)).to_be_hidden()
    page.get_by_label("Search").fill("")

    page.get_by_label("Group by site").uncheck()
    expect(groups).to_have_count(0)
    assert "group=0" in page.url
    page.reload()
    expect(page.locator(".fleet-table tbody tr.node-row")).to_have_count(4)
    expect(page.get_by_label("Group by site")).not_to_be_checked()
    expect(groups).to_have_count(0)


def test_each_row_says_why_the_node_needs_attention_worst_first(triage: Triage, page: Page) -> None:
    open_fleet(page, triage)
    titles = page.evaluate(
        """import('/console/js/words.js').then((w) =>
        ['disk.low', 'temperature.high', 'heartbeat.missed'].map((kind) => w.kindTitle(kind)))"""
    )
    stage = page.locator("tr.node-row", has_text="Stage left")
    reasons = stage.locator(".fc-problems li.reason")
    expect(reasons.first).to_have_attribute("data-kind", "disk.low")
    expect(reasons.first.locator(".sev")).to_have_text("critical")
    expect(reasons.first.locator(".title")).to_have_text(titles[0])
    expect(reasons.first).to_contain_text("2.5 %")
    kinds = reasons.evaluate_all("items => items.map((li) => li.dataset.kind)")
    assert kinds.index("disk.low") < kinds.index("temperature.high"), kinds
    expect(stage.locator('li[data-kind="temperature.high"] .title')).to_have_text(titles[1])
    stage_events = [e for e in open_events(triage) if e["node_id"] == triage.ids["Stage left"]]
    count = len(stage_events)
    expect(stage.locator(".open-count")).to_contain_text(f"{count} open event{'s' if count != 1 else ''}")

    loft = page.locator("tr.node-row", has_text="Loft")
    expect(loft.locator(".reason.connection")).to_have_text(re.compile(r"^offline for \d+ seconds?$|^offline for \d+ min$"))
    expect(loft.locator('li[data-kind="heartbeat.missed"] .title')).to_have_text(titles[2])
    expect(loft.locator(".open-count")).to_have_text("1 open event")
    expect(page.locator("tr.node-row", has_text="Spare box").locator(".reason.connection")).to_have_text("never connected yet")
    # The last-seen time says its zone, with UTC on hover.
    seen = loft.locator(".fc-seen time")
    expect(seen).to_have_attribute("title", re.compile(r"UTC\)$"))


def test_identify_on_two_selected_nodes_queues_a_job_for_each(triage: Triage, page: Page) -> None:
    hub = triage.fleet.hub
    open_fleet(page, triage)
    page.get_by_label("Select Stage left").check()
    page.get_by_label("Select Foyer").check()
    bar = page.get_by_role("region", name="Selected nodes")
    expect(bar.locator(".bulk-count")).to_have_text("2 nodes selected")
    bar.get_by_label("Lifecycle action").select_option("identify")
    bar.get_by_role("button", name="Run").click()
    expect(bar.get_by_role("status")).to_have_text(re.compile(r"^Identify \(blink and beep\): 2 of 2 nodes done\.$"))
    expect(bar.locator(".bulk-result-list li.ok")).to_have_count(2)
    with hub.admin() as admin:
        for name in ["Stage left", "Foyer"]:
            jobs = admin.get(f"/api/v1/nodes/{triage.ids[name]}/lifecycle-jobs").json()["data"]
            assert any(j["action"] == "identify" for j in jobs), (name, jobs)

    # A disruptive action asks first, and says which of the selected nodes are offline.
    bar.get_by_role("button", name="Clear selection").click()
    page.get_by_label("Select all shown nodes").check()
    expect(bar.locator(".bulk-count")).to_have_text("4 nodes selected")
    bar.get_by_label("Lifecycle action").select_option("reboot")
    bar.get_by_role("button", name="Run").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text(
        "1 of them is offline and 1 has never connected: the action waits until they reconnect (expires in 1 h)."
    )
    page.screenshot(path=str(ARTIFACTS / "fleet-triage-confirm.png"))
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    with hub.admin() as admin:
        jobs = admin.get(f"/api/v1/nodes/{triage.ids['Loft']}/lifecycle-jobs").json()["data"]
    assert not any(j["action"] == "reboot" for j in jobs), jobs


def test_selection_a_pressed_total_and_bulk_results_pass_axe_in_both_schemes(triage: Triage, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)  # axe is injected inline
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        open_fleet(page, triage)
        page.get_by_label("Select Stage left").check()
        page.get_by_label("Select Foyer").check()
        bar = page.get_by_role("region", name="Selected nodes")
        bar.get_by_label("Lifecycle action").select_option("sync-time")
        bar.get_by_role("button", name="Run").click()
        expect(bar.locator(".bulk-result-list li")).to_have_count(2)
        degraded = page.locator('[data-total="status:degraded"]')
        degraded.click()
        expect(degraded).to_have_attribute("aria-pressed", "true")
        for scheme in ["light", "dark"]:
            page.emulate_media(color_scheme=scheme)
            violations = run_axe(page)
            assert not violations, f"{scheme}:\n{describe(violations)}"
        page.screenshot(path=str(ARTIFACTS / "fleet-triage-dark.png"))
    finally:
        context.close()


def test_a_recording_on_the_selected_nodes_uses_the_chosen_profile(triage: Triage, page: Page) -> None:
    hub = triage.fleet.hub
    with hub.admin() as admin:
        response = admin.post("/api/v1/settings/recording-profiles", json={"name": "Short takes", "format": "flac"})
        assert response.status_code == 201, response.text
        profile_id = response.json()["data"]["id"]
    open_fleet(page, triage)
    page.get_by_label("Select Stage left").check()
    page.get_by_label("Select Foyer").check()
    bar = page.get_by_role("region", name="Selected nodes")
    bar.get_by_label("Recording profile").select_option(label="Short takes")
    bar.get_by_label("Length (s)").fill("2")
    bar.get_by_label("Recording name").fill("triage take")
    bar.get_by_role("button", name="Start recording").click()
    dialog = page.locator("dialog.confirm")
    expect(dialog).to_contain_text("Start a recording of 2 seconds on 2 selected nodes with the profile “Short takes”?")
    dialog.get_by_role("button", name="Start recording").click()
    expect(bar.get_by_role("status")).to_have_text("Recording: 2 of 2 nodes done.")
    expect(bar.locator(".bulk-result-list li.ok")).to_have_count(2)
    with hub.admin() as admin:
        for name in ["Stage left", "Foyer"]:
            rows = admin.get("/api/v1/recordings", params={"node_id": triage.ids[name], "q": "triage take"}).json()["data"]
            assert len(rows) == 1 and rows[0]["profile_id"] == profile_id, rows
            assert rows[0]["name"] == f"triage take — {name}"


def test_a_channel_map_is_assigned_to_the_selected_nodes_with_a_result_each(triage: Triage, page: Page) -> None:
    hub = triage.fleet.hub
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/settings/channel-map-templates",
            json={"name": "Triage stereo", "channels": [{"input": 0, "name": "L"}, {"input": 1, "name": "R"}]},
        )
        assert response.status_code == 201, response.text
    open_fleet(page, triage)
    page.get_by_label("Select Loft").check()
    page.get_by_label("Select Spare box").check()
    bar = page.get_by_role("region", name="Selected nodes")
    bar.get_by_label("Channel map").select_option(label="Triage stereo (2 channels)")
    bar.get_by_role("button", name="Assign").click()
    page.locator("dialog.confirm").get_by_role("button", name="Assign").click()
    expect(bar.get_by_role("status")).to_have_text("Channel map “Triage stereo (2 channels)”: 2 of 2 nodes done.")
    expect(bar.locator(".bulk-result-list li.ok")).to_have_count(2)
    with hub.admin() as admin:
        for name in ["Loft", "Spare box"]:
            rows = admin.get("/api/v1/settings/channel-map-assignments", params={"node_id": triage.ids[name]}).json()["data"]
            assert len(rows) == 1 and rows[0]["template_id"] == response.json()["data"]["id"], rows


def test_a_new_event_reaches_its_row_in_place_without_rebuilding_the_table(triage: Triage, page: Page) -> None:
    open_fleet(page, triage)
    info = page.locator('[data-total="severity:info"] .n')
    before = int(info.inner_text())
    # Mark the row elements: a reload that rebuilt them would lose the marks.
    page.eval_on_selector_all(".fleet-table tr.node-row", "rows => rows.forEach((r) => { r.marked = true; })")
    with triage.fleet.hub.admin() as admin:
        response = admin.post(
            "/api/v1/health-events",
            json={"kind": "panel.button", "severity": "info", "node_id": triage.ids["Foyer"], "details": {"button": "identify"}},
        )
        assert response.status_code == 201, response.text
    foyer = page.locator("tr.node-row", has_text="Foyer")
    expect(foyer.locator('li[data-kind="panel.button"] .sev')).to_have_text("info")  # through the events stream
    expect(info).to_have_text(str(before + 1))
    assert page.eval_on_selector_all(".fleet-table tr.node-row", "rows => rows.every((r) => r.marked)")


def test_a_viewer_sees_the_triage_but_no_selection_or_bulk_actions(triage: Triage, page: Page) -> None:
    hub = triage.fleet.hub
    username = f"triage-viewer-{datetime.now(UTC).strftime('%H%M%S%f')}"
    with hub.admin() as admin:
        response = admin.post("/api/v1/auth/users", json={"username": username, "password": VIEWER_PASSWORD, "roles": ["viewer"]})
        assert response.status_code == 201, response.text
    sign_in(page, hub.url, username, VIEWER_PASSWORD)
    expect(page.locator(".fleet-table tbody tr.node-row")).to_have_count(4)
    expect(page.locator('[data-total="status:offline"] .n')).to_have_text("1")
    expect(page.locator(".fleet-table input[type=checkbox]").locator("visible=true")).to_have_count(0)
    expect(page.get_by_role("region", name="Selected nodes")).to_be_hidden()
    expect(page.get_by_role("button", name="Run")).to_have_count(0)


def test_on_a_phone_each_node_is_a_card_with_its_reason_and_meters_and_nothing_scrolls_sideways(
    triage: Triage, page: Page
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_fleet(page, triage)
    cards = page.locator(".fleet-table tbody tr.node-row")
    assert cards.first.evaluate("tr => getComputedStyle(tr).display") == "grid"
    loft = cards.filter(has_text="Loft")
    expect(loft.locator(".reason.connection")).to_be_visible()
    expect(loft.locator(".fc-status .status")).to_have_text("offline")
    stage = cards.filter(has_text="Stage left")
    stage.scroll_into_view_if_needed()
    expect(stage.locator(".meter-board")).to_be_visible()
    expect(stage.locator(".meter-board.stale")).to_have_count(0)
    expect(stage.locator(".track")).to_have_count(2)
    box = stage.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    page.screenshot(path=str(ARTIFACTS / "fleet-triage-390-card.png"))
    page.get_by_label("Select Stage left").check()
    expect(page.get_by_role("region", name="Selected nodes")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "fleet-triage-390.png"), full_page=True)


def test_at_tablet_width_every_header_stays_over_its_column(triage: Triage, page: Page) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    open_fleet(page, triage)
    expect(page.locator(".fleet-table .track").first).to_be_visible()
    columns = page.evaluate(
        """() => {
        const row = document.querySelector('.fleet-table tbody tr.node-row:not([hidden])');
        return [...document.querySelectorAll('.fleet-table thead th')].map((th) => {
          const cls = [...th.classList].find((c) => c.startsWith('fc-'));
          const td = row.querySelector('td.' + cls);
          const a = th.getBoundingClientRect(), b = td.getBoundingClientRect();
          return { cls, thShown: a.width > 0, tdShown: b.width > 0, thX: a.x, tdX: b.x, thW: a.width, tdW: b.width };
        });
      }"""
    )
    for column in columns:
        assert column["thShown"] == column["tdShown"], column
        if column["thShown"]:
            assert abs(column["thX"] - column["tdX"]) < 1 and abs(column["thW"] - column["tdW"]) < 1, column
    shown = [c["cls"] for c in columns if c["thShown"]]
    assert "fc-clock" not in shown and "fc-name" in shown and "fc-problems" in shown, shown
    page.screenshot(path=str(ARTIFACTS / "fleet-triage-768.png"), full_page=True)
