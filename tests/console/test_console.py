"""The console in real headless Chromium against a real hub and nodes: sign-in, live meters,
a recording started from a node page, played to its end and given metadata, and permissions."""

from __future__ import annotations

import json
import re
import time

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.harness import ADMIN_PASSWORD, HubProcess, wait_for

VIEWER_PASSWORD = "a quiet listener 2024"


def sign_in(page: Page, hub_url: str, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto(f"{hub_url}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#logout")).to_be_visible()


def sign_in_as_viewer(page: Page, hub: HubProcess) -> str:
    """A new user with only the viewer role, signed in on `page`; their username."""
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users",
            json={"username": f"viewer{int(time.time() * 1000)}", "password": VIEWER_PASSWORD, "roles": ["viewer"]},
        )
    assert response.status_code == 201, response.text
    username: str = response.json()["data"]["username"]
    sign_in(page, hub.url, username, VIEWER_PASSWORD)
    return username


def peak_clips(page: Page) -> list[str]:
    return page.eval_on_selector_all(".fleet-table .track .peak", "bars => bars.map((b) => b.style.clipPath)")


def test_a_wrong_password_is_answered_in_words(console_fleet: ConsoleFleet, page: Page) -> None:
    page.goto(f"{console_fleet.hub.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Log in").click()
    message = page.get_by_role("alert").filter(has_text="wrong")
    expect(message).to_have_text("The username or password is wrong.")
    expect(page.locator("#nav")).to_be_hidden()


def test_the_fleet_overview_shows_every_node_with_meters_that_move(console_fleet: ConsoleFleet, page: Page) -> None:
    sign_in(page, console_fleet.hub.url)
    rows = page.locator(".fleet-table tbody tr.node-row")
    expect(rows).to_have_count(2)
    expect(page.locator(".fleet-table")).to_contain_text("Stage left")
    expect(page.locator(".fleet-table")).to_contain_text("online")
    expect(page.locator(".meter-board.stale")).to_have_count(0)
    # Three channels (two of the sine node, one of the noise node); sampled over two seconds, the
    # bars' lit widths change (the noise's peaks differ frame to frame).
    samples = []
    for _ in range(10):
        samples.append(peak_clips(page))
        page.wait_for_timeout(200)
    assert all(len(sample) == 3 for sample in samples), samples
    assert len({tuple(sample) for sample in samples}) > 3, samples
    lit = [float(re.search(r"inset\(0px ([\d.]+)%", clip).group(1)) for clip in samples[-1]]
    assert all(right < 80 for right in lit), lit  # -12 and -24 dBFS light well over a fifth of a -60..0 scale
    expect(page.locator(".loudness").first).to_contain_text("LUFS")

    page.get_by_label("Site", exact=True).select_option("foyer")
    expect(rows.locator("visible=true")).to_have_count(1)
    page.get_by_label("Site", exact=True).select_option("")
    page.get_by_label("Search").fill("stage")
    expect(page.locator(".fleet-table caption")).to_have_text("1 of 2 nodes")
    page.get_by_label("Search").fill("")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "fleet.png"))


def test_a_recording_from_the_node_page_completes_plays_to_the_end_and_takes_metadata(
    console_fleet: ConsoleFleet, page: Page
) -> None:
    hub = console_fleet.hub
    sign_in(page, hub.url)
    page.get_by_role("link", name="Stage left").click()
    expect(page.get_by_role("heading", name="Stage left")).to_be_visible()
    expect(page.locator(".node-page .meter-board.stale")).to_have_count(0)
    expect(page.get_by_role("button", name="Reboot")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "node.png"), full_page=True)

    record = page.get_by_role("form", name="Start a recording")
    record.get_by_label("Name", exact=True).fill("console take")
    record.get_by_label("Length (seconds)").fill("3")
    page.get_by_role("button", name="Start recording").click()
    expect(page.get_by_text("Recording queued")).to_be_visible()

    page.get_by_role("link", name="Recordings").click()
    row = page.locator(".recordings-table tbody tr", has_text="console take")
    expect(row).to_have_attribute("data-status", "completed", timeout=45_000)
    row.get_by_role("link", name="console take").click()

    audio = page.locator("audio")
    expect(audio).to_be_attached()
    expect(page.locator("canvas.waveform")).to_be_visible()
    page.wait_for_function("() => document.querySelector('audio').readyState >= 1")
    duration = page.evaluate("document.querySelector('audio').duration")
    assert abs(duration - 3.0) < 0.05, duration
    # Seek (the stream answers Range requests), then play on to the end.
    page.evaluate("document.querySelector('audio').currentTime = 1.5")
    page.wait_for_function("() => !document.querySelector('audio').seeking && document.querySelector('audio').currentTime >= 1.4")
    page.evaluate("document.querySelector('audio').play()")
    page.wait_for_function("() => document.querySelector('audio').ended", timeout=15_000)
    drawn = page.evaluate(
        """() => { const c = document.querySelector('canvas.waveform');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) lit++; return lit / (c.width * c.height); }"""
    )
    assert drawn > 0.1, drawn  # a -12 dBFS sine fills a good part of the picture
    expect(page.get_by_text("No gaps")).to_be_visible()

    page.get_by_role("button", name="Add entry").click()
    page.get_by_label("Key").last.fill("project")
    page.get_by_label("Value").last.fill("dawn chorus")
    page.get_by_role("button", name="Save metadata").click()
    expect(page.get_by_text("Metadata saved.")).to_be_visible()
    recording_id = page.url.rsplit("/", 1)[-1]
    with hub.admin() as admin:
        stored = admin.get(f"/api/v1/recordings/{recording_id}").json()["data"]
    assert stored["metadata"] == {"project": "dawn chorus"}, stored["metadata"]

    page.get_by_role("link", name="← Recordings").click()
    expect(row).to_contain_text("dawn chorus")
    page.screenshot(path=str(ARTIFACTS / "recordings.png"), full_page=True)


def test_a_viewer_sees_no_admin_controls_and_is_told_why_in_words(
    console_fleet: ConsoleFleet, context: BrowserContext, page: Page
) -> None:
    hub = console_fleet.hub
    sign_in_as_viewer(page, hub)
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Fleet")).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_be_hidden()
    expect(nav.get_by_role("link", name="Audit")).to_be_hidden()

    page.get_by_role("link", name="Foyer").click()
    expect(page.get_by_role("heading", name="Foyer")).to_be_visible()
    expect(page.get_by_text("Your roles do not include starting recordings.")).to_be_visible()
    expect(page.get_by_role("button", name="Reboot")).to_have_count(0)
    expect(page.get_by_role("button", name="Rotate credential")).to_have_count(0)

    page.goto(f"{hub.url}/#/users")
    expect(page.get_by_role("alert")).to_have_text(
        "Your roles do not allow this page: it needs the permission auth:manage. Ask an administrator."
    )
    # What the API answers 403 is shown as a sentence, never as the JSON body.
    message = page.evaluate(
        "import('/console/js/api.js').then((m) => m.api('/api/v1/audit-events').then(() => 'allowed', (e) => e.message))"
    )
    assert (
        message == "You are not allowed to do this: it needs permission to read the audit log (audit:read). Ask an administrator."
    )
    assert httpx.get(f"{hub.url}/api/v1/audit-events").status_code == 401


def test_the_console_works_at_tablet_width(console_fleet: ConsoleFleet, page: Page) -> None:
    page.set_viewport_size({"width": 800, "height": 1100})
    sign_in(page, console_fleet.hub.url)
    expect(page.locator(".fleet-table tbody tr.node-row")).to_have_count(2)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at tablet width"
    # Keyboard only: from a section link, Tab to the next (Recordings follows New boxes) and open it with Enter.
    nav = page.get_by_role("navigation", name="Sections")
    nav.get_by_role("link", name="New boxes").focus()
    page.keyboard.press("Tab")
    expect(nav.get_by_role("link", name="Recordings")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Recordings")).to_be_visible()
    page.go_back()
    wait_for(lambda: peak_clips(page), 5, "meters at tablet width")
    page.screenshot(path=str(ARTIFACTS / "fleet-tablet.png"))


def test_fifty_boards_of_meters_tick_through_ten_seconds_of_frames_in_place(console_fleet: ConsoleFleet, page: Page) -> None:
    sign_in(page, console_fleet.hub.url)
    # 50 boards of two channels, a frame per node every 100 ms, ticked at 60 Hz for 10 s of
    # simulated time: every bar follows, and no board re-renders its rows per frame. The script time
    # per animation frame is written down as a figure (speed is measured, not asserted, in tests).
    cost = page.evaluate(
        r"""async () => {
        const { MeterBoard } = await import('/console/js/meters.js');
        const host = document.createElement('div');
        document.getElementById('view').append(host);
        const boards = Array.from({ length: 50 }, (_, i) => { const b = new MeterBoard(`n${i}`); host.append(b.el); return b; });
        const frame = () => ({ channels: [0, 1].map((index) => ({ index, name: String(index), peak_dbfs: -30 + Math.random() * 25,
          rms_dbfs: -40 + Math.random() * 20, clip: Math.random() < 0.01 ? 1 : 0 })),
          loudness: { momentary_lufs: -23 + Math.random() } });
        const start = performance.now();
        let total = 0, worst = 0;
        for (let f = 0; f < 600; f++) {
          const now = start + f * 16.7;
          const t0 = performance.now();
          if (f % 6 === 0) for (const b of boards) b.push(frame(), now);
          for (const b of boards) b.tick(now, 1 / 60);
          const spent = performance.now() - t0;
          total += spent; worst = Math.max(worst, spent);
        }
        const rows = boards.map((b) => b.rows.firstChild);
        for (const b of boards) { b.push(frame(), start + 600 * 16.7); b.tick(start + 600 * 16.7, 1 / 60); }
        const sameRows = boards.every((b, i) => b.rows.firstChild === rows[i]);
        const lit = boards.filter((b) => b.channels.every((c) => /inset\(0(px)? [\d.]+%/.test(c.peak.style.clipPath))).length;
        host.remove();
        return { mean: total / 600, worst, sameRows, lit };
      }"""
    )
    assert cost["sameRows"] and cost["lit"] == 50, cost
    figures = {"boards": 50, "mean_ms": cost["mean"], "worst_ms": cost["worst"]}
    (ARTIFACTS / "meter-tick-cost.json").write_text(json.dumps(figures))
