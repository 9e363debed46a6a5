"""Every console page, and the node's technician page, at desktop, tablet and phone widths, light and dark:
the document never scrolls sideways, table headers stay over their cells, no script or console errors,
and axe-core finds nothing serious or critical. Screenshots go to var/test-artifacts/console/layout/.

One browser, one signed-in context per colour scheme and one tab per context: a page is loaded
fresh for each check and the viewport resized in place.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.axe import describe, run_axe
from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.harness import ADMIN_PASSWORD, ROOT, wait_for

LAYOUT = ARTIFACTS / "layout"
SCREENSHOTS = ROOT / "hub" / "console" / "screenshots"
TECHNICIAN_PIN = "482913"
Scheme = Literal["light", "dark"]
WIDTHS = (1440, 768, 390)
DARK_WIDTHS = (1440, 390)
HEIGHT = 900

# name: (address after the hub's URL, or None for the technician page; signed in?)
PAGES: dict[str, tuple[str | None, bool]] = {
    "login": ("/", False),
    "fleet": ("/#/fleet", True),
    "health": ("/#/health", True),
    "discovered": ("/#/discovered", True),
    "node": ("/#/nodes/{node}", True),
    "node-unknown": ("/#/nodes/unknown", True),
    "recordings": ("/#/recordings", True),
    "recording": ("/#/recordings/{recording}", True),
    "audit": ("/#/audit", True),
    "plans": ("/#/plans", True),
    "watchdog": ("/#/watchdog", True),
    "watchdog-policy": ("/#/watchdog/default", True),
    "sites": ("/#/sites", True),
    "schedules": ("/#/schedules", True),
    "schedule-new": ("/#/schedules/new", True),
    "schedule-week": ("/#/schedules/week", True),
    "retention": ("/#/retention", True),
    "retention-new": ("/#/retention/new", True),
    "uploads": ("/#/uploads", True),
    "upload-policies": ("/#/offsite/policies", True),
    "upload-policy-new": ("/#/offsite/policies/new", True),
    "upload-providers": ("/#/offsite/providers", True),
    "upload-provider-new": ("/#/offsite/providers/new", True),
    "notify-channels": ("/#/notify/channels", True),
    "notify-channel-new": ("/#/notify/channels/new", True),
    "notifications": ("/#/notifications", True),
    "listen-sessions": ("/#/listen-sessions", True),
    "hubs": ("/#/hubs", True),
    "users": ("/#/users", True),
    "keys": ("/#/keys", True),
    "me": ("/#/me", True),
    "technician": (None, False),
}
CASES = [(name, width, "light") for name in PAGES for width in WIDTHS] + [
    (name, width, "dark") for name in PAGES for width in DARK_WIDTHS
]

# Answers of 400 or more that a page asks for on purpose: who is signed in (the login page), and
# anything about the node "unknown" (its page says there is no such node).
EXPECTED_FAILURES = (r"^401 GET .*/api/v1/auth/me$", r"^404 GET .*[/=]unknown([/?&]|$)")

HEALTH_REPORTS = (
    ("Foyer", "disk.low", "critical", {"free_pct": 4.2, "free_bytes": 1_300_000_000}),
    ("Stage left", "audio.clipping", "warning", {"clipped_samples": {"L": 12, "R": 3}}),
    ("Stage left", "temperature.high", "warning", {"temperature_c": 83.4}),
)

# What README.md shows, from this run: screenshot name -> (page, width, scheme).
README_SHOTS = {
    "fleet.png": ("fleet", 1440, "light"),
    "fleet-phone.png": ("fleet", 390, "light"),
    "node.png": ("node", 1440, "light"),
    "health.png": ("health", 1440, "light"),
    "fleet-dark.png": ("fleet", 1440, "dark"),
}

# For every table shown: each visible header cell of the first header row against the visible body
# cell that starts at the same column of the first body row (a lone cell spanning the whole row, such
# as "no recordings", is not a column); left edges differing by more than 2 px are reported.
MISALIGNED_HEADERS = """() => {
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const columns = (row) => {
    let at = 0;
    const cells = [];
    for (const cell of row.cells) {
      if (!shown(cell)) continue;
      cells.push({ at, cell });
      at += cell.colSpan || 1;
    }
    return cells;
  };
  const problems = [];
  document.querySelectorAll("table").forEach((table, index) => {
    if (!shown(table)) return;
    const head = table.tHead?.rows[0] ?? [...table.rows].find((r) => [...r.cells].every((c) => c.tagName === "TH"));
    // The first body row of columns: a lone cell across the row (a group's heading, "no recordings") is not.
    const body = [...table.tBodies].flatMap((b) => [...b.rows])
      .find((r) => r !== head && shown(r) && !(columns(r).length === 1 && r.cells.length === 1 && r.cells[0].colSpan > 1));
    if (!head || !body) return;
    const heads = columns(head);
    const cells = columns(body);
    // A table shown as cards on a phone: its cells are blocks labelled by themselves, not columns.
    if (cells.some(({ cell }) => getComputedStyle(cell).display !== "table-cell")) return;
    const name = table.className || table.caption?.textContent?.trim() || `table ${index + 1}`;
    for (const { at, cell: th } of heads) {
      const td = cells.find((c) => c.at === at);
      const label = th.textContent.trim() || th.getAttribute("aria-label") || `column ${at + 1}`;
      if (!td) {
        problems.push(`${name}: header "${label}" (column ${at + 1}) has no visible cell under it`);
        continue;
      }
      const dx = td.cell.getBoundingClientRect().left - th.getBoundingClientRect().left;
      if (Math.abs(dx) > 2) problems.push(`${name}: header "${label}" is ${dx.toFixed(1)} px off its cells`);
    }
    const headWidth = heads.reduce((n, h) => n + (h.cell.colSpan || 1), 0);
    const bodyWidth = cells.reduce((n, c) => n + (c.cell.colSpan || 1), 0);
    if (headWidth !== bodyWidth) {
      problems.push(`${name}: ${headWidth} visible header columns over ${bodyWidth} visible cell columns`);
    }
  });
  return problems;
}"""

OVERFLOW = """() => {
  const root = document.documentElement;
  const edge = root.clientWidth + 1;
  const over = root.scrollWidth - root.clientWidth;
  if (over <= 0) return null;
  // The outermost elements reaching past the right edge, to say what overflows.
  const past = (el) => el.getClientRects().length && el.getBoundingClientRect().right > edge;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + [...el.classList].map((c) => "." + c).join("");
  const culprits = [...document.querySelectorAll("body *")]
    .filter((el) => past(el) && !el.closest(".table-wrap") && !(el.parentElement && past(el.parentElement)))
    .slice(0, 5)
    .map((el) => `${name(el)} (right edge ${Math.round(el.getBoundingClientRect().right)})`);
  return { over, scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, culprits };
}"""


@dataclass
class Tab:
    """One tab in one context, with what its pages logged as errors since the last check."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def console(self, kind: str, text: str) -> None:
        # The browser logs every failed load; those are judged by their answers in response().
        if kind == "error" and not text.startswith("Failed to load resource"):
            self.errors.append(f"console error: {text}")

    def response(self, status: int, method: str, url: str) -> None:
        if status >= 400 and not any(re.search(pattern, f"{status} {method} {url}") for pattern in EXPECTED_FAILURES):
            self.errors.append(f"answered {status}: {method} {url}")

    def take_errors(self) -> list[str]:
        taken, self.errors[:] = list(self.errors), []
        return taken


@dataclass
class Layout:
    fleet: ConsoleFleet
    browser: Browser
    recording_id: str
    technician_url: str
    contexts: list[BrowserContext] = field(default_factory=list)
    tabs: dict[tuple[Scheme, bool], Tab] = field(default_factory=dict)

    def tab(self, scheme: Scheme, signed_in: bool) -> Tab:
        """The tab for a colour scheme, signed in to the console or not (made on first use)."""
        key = (scheme, signed_in)
        if key not in self.tabs:
            # axe's script is injected inline, which the console's CSP (default-src 'self') would refuse.
            context = self.browser.new_context(
                viewport={"width": WIDTHS[0], "height": HEIGHT}, color_scheme=scheme, bypass_csp=True
            )
            context.set_default_timeout(20_000)
            self.contexts.append(context)
            tab = Tab(context.new_page())
            tab.page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
            tab.page.on("console", lambda message: tab.console(message.type, message.text))
            tab.page.on("response", lambda response: tab.response(response.status, response.request.method, response.url))
            if signed_in:
                sign_in_console(tab.page, self.fleet.hub.url)
                sign_in_technician(tab.page, self.technician_url)
            tab.take_errors()
            self.tabs[key] = tab
        return self.tabs[key]


def sign_in_console(page: Page, hub_url: str) -> None:
    page.goto(f"{hub_url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#logout")).to_be_visible()


def sign_in_technician(page: Page, url: str) -> None:
    page.goto(url)
    page.fill("#pin", TECHNICIAN_PIN)
    page.click("#login button[type=submit]")
    expect(page.locator("#panel")).to_be_visible()


@pytest.fixture(scope="module")
def layout(console_fleet: ConsoleFleet, browser: Browser) -> Iterator[Layout]:
    hub = console_fleet.hub
    stage = console_fleet.nodes["Stage left"]
    with hub.admin() as admin:
        take = admin.post("/api/v1/recordings", json={"node_id": stage.node_id, "duration_s": 2, "name": "layout take"})
        assert take.status_code == 201, take.text
        # A key and a second user, so the key and user tables have rows of every kind of cell.
        key = admin.post("/api/v1/auth/keys", json={"name": "layout reader", "scopes": ["node:read", "recording:read"]})
        assert key.status_code == 201, key.text
        user = admin.post(
            "/api/v1/auth/users",
            json={"username": f"layout{uuid.uuid4().hex[:6]}", "password": "a layout reader 2026", "roles": ["viewer"]},
        )
        assert user.status_code == 201, user.text
        pin = admin.patch(f"/api/v1/nodes/{stage.node_id}", json={"technician_pin": TECHNICIAN_PIN})
        assert pin.status_code == 200, pin.text
    # A few problems, so the health inbox and the fleet's warnings have rows to lay out.
    for name, kind, severity, details in HEALTH_REPORTS:
        node = console_fleet.nodes[name]
        body = {
            "msg_id": uuid.uuid4().hex,
            "ts": datetime.now(UTC).isoformat(),
            "kind": kind,
            "state": "open",
            "severity": severity,
            "details": details,
        }
        with hub.client(node.credential) as client:
            sent = client.post(f"/api/v1/nodes/{node.node_id}/health-events", json=body)
        assert sent.status_code == 200, sent.text
    access = stage.workdir / "data" / "technician.json"
    wait_for(lambda: access.exists() and '"pin_hash": "' in access.read_text(), 20, "the technician PIN at the node")
    LAYOUT.mkdir(parents=True, exist_ok=True)
    state = Layout(console_fleet, browser, take.json()["data"]["recording"]["id"], f"{stage.local_url}/")
    yield state
    for context in state.contexts:
        context.close()


def recording_completed(layout: Layout) -> None:
    with layout.fleet.hub.admin() as admin:
        status = lambda: admin.get(f"/api/v1/recordings/{layout.recording_id}").json()["data"]["status"]  # noqa: E731
        wait_for(lambda: status() in {"completed", "interrupted", "failed"}, 60, "the layout take to finish")


def open_page(layout: Layout, name: str, tab: Tab) -> None:
    """Load the page afresh and wait until its view has rendered and stopped saying it is loading."""
    address, _ = PAGES[name]
    page = tab.page
    page.goto("about:blank")
    if address is None:
        page.goto(layout.technician_url)
        expect(page.locator("#panel")).to_be_visible()
        expect(page.locator("#identity")).not_to_be_empty()
    else:
        if name == "recording":
            recording_completed(layout)
        url = layout.fleet.hub.url + address.format(node=layout.fleet.node_id("Stage left"), recording=layout.recording_id)
        page.goto(url)
        if name == "login":
            expect(page.locator("#login-form")).to_be_visible()
        else:
            expect(page.locator("#view h2").first).to_be_visible()
            page.wait_for_function("() => !/Loading/.test(document.getElementById('view').innerText)", timeout=10_000)
    # Two frames, so anything laid out after the data arrived is painted.
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def check(tab: Tab, name: str, width: int, scheme: str) -> list[str]:
    page = tab.page
    problems: list[str] = []
    overflow = page.evaluate(OVERFLOW)
    if overflow:
        problems.append(
            f"the document scrolls sideways by {overflow['over']} px (scrollWidth {overflow['scrollWidth']} > "
            f"clientWidth {overflow['clientWidth']}); reaching past the edge: {', '.join(overflow['culprits']) or '?'}"
        )
    problems += [f"misaligned: {p}" for p in page.evaluate(MISALIGNED_HEADERS)]
    violations = run_axe(page)
    if violations:
        problems.append("axe:\n" + describe(violations))
    suffix = "-dark" if scheme == "dark" else ""
    shot = LAYOUT / f"{name}-{width}{suffix}.png"
    page.screenshot(path=str(shot), full_page=True)
    problems += tab.take_errors()
    if os.environ.get("HARK_README_SCREENSHOTS"):
        for readme_name, wanted in README_SHOTS.items():
            if wanted == (name, width, scheme):
                readme_screenshot(page, name, SCREENSHOTS / readme_name)
    return problems


def readme_screenshot(page: Page, name: str, path: Path) -> None:
    """The README's picture of a page: its first screenful once the meters and charts are drawn."""
    if name == "node":
        expect(page.locator(".uplot").first).to_be_visible()
    if name in {"fleet", "node"}:
        page.wait_for_function("() => document.querySelectorAll('.meter-board.stale').length === 0")
    page.mouse.move(0, 0)
    if name == "node":  # down to the first history charts
        size = page.viewport_size or {"width": WIDTHS[0], "height": HEIGHT}
        page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": size["width"], "height": 1500})
    else:
        page.screenshot(path=str(path))


@pytest.mark.parametrize(
    ("name", "width", "scheme"), CASES, ids=[f"{n}-{w}{'-dark' if s == 'dark' else ''}" for n, w, s in CASES]
)
def test_the_page_fits_keeps_headers_over_cells_and_passes_axe(layout: Layout, name: str, width: int, scheme: Scheme) -> None:
    address, signed_in = PAGES[name]
    tab = layout.tab(scheme, signed_in or address is None)
    tab.page.set_viewport_size({"width": width, "height": HEIGHT})
    open_page(layout, name, tab)
    problems = check(tab, name, width, scheme)
    assert not problems, f"{name} at {width} px ({scheme}):\n" + "\n".join(problems)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_clip_light_reads_off_and_on_in_both_schemes(layout: Layout, scheme: Scheme) -> None:
    # The meters switch a live light every frame; these two stand still, on a node page's background
    # and in a fleet table cell, so axe judges both states.
    tab = layout.tab(scheme, True)
    tab.page.set_viewport_size({"width": WIDTHS[0], "height": HEIGHT})
    open_page(layout, "fleet", tab)
    tab.page.evaluate(
        """() => {
            const lights = () => ["", " on"].map((on) => `<span class="clip${on}">CLIP</span>`).join(" ");
            document.getElementById("view").insertAdjacentHTML("afterbegin",
                `<div id="clip-check"><div class="meter-board">${lights()}</div>
                 <table><tbody><tr><td><div class="meter-board">${lights()}</div></td></tr></tbody></table></div>`);
        }"""
    )
    violations = run_axe(tab.page, include=["#clip-check"])
    assert not violations, describe(violations)
    tab.take_errors()
