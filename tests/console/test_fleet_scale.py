"""The fleet page with 200 live nodes in headless Chromium: every node shown, real meters moving,
totals that add up; its load time and live script cost are measured for the note, not asserted
(bench/console_fleet.py compares them with the page before issue 17)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import ARTIFACTS
from tests.console.fleet_scale import ScaleFleet, measure_fleet_page, running_scale_fleet, signed_in_state
from tests.harness import wait_for

NODES = 200


@pytest.fixture(scope="module")
def scale_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleFleet]:
    with running_scale_fleet(tmp_path_factory.mktemp("fleet-scale"), NODES) as fleet:
        yield fleet


def peak_clips(page: Page, node_id: str) -> list[str]:
    return page.eval_on_selector_all(
        f'.meter-board[data-node-id="{node_id}"] .bar.peak', "bars => bars.map((b) => b.style.clipPath)"
    )


def lit(clips: list[str]) -> bool:
    """Every bar lit well over a fifth of the -60..0 dBFS scale (-12 and -24 dBFS do)."""
    rights = [re.search(r"inset\(0px ([\d.]+)%", clip) for clip in clips]
    return bool(clips) and all(r is not None and float(r.group(1)) < 80 for r in rights)


def test_two_hundred_live_nodes_all_show_with_moving_meters_and_totals_that_add_up(
    scale_fleet: ScaleFleet, browser: Browser
) -> None:
    assert scale_fleet.hub is not None
    expected = scale_fleet.statuses()
    assert sum(expected.values()) == NODES and expected.get("offline") and expected.get("degraded"), expected

    def check(page: Page) -> None:
        expect(page.locator(".fleet-table caption")).to_have_text(f"{NODES} of {NODES} nodes")
        for status, count in expected.items():
            expect(page.locator(f'[data-total="status:{status}"] .n')).to_have_text(str(count))
        shown = page.eval_on_selector_all('[data-total^="status:"] .n', "ns => ns.map((n) => Number(n.textContent))")
        assert sum(shown) == NODES, shown
        assert page.locator("tr.node-row").count() == NODES
        # The sine node's peak holds still at -12 dBFS; the noise node's moves frame to frame.
        for node in scale_fleet.real_nodes:
            node_id = str(node.node_id)
            page.locator(f'tr.node-row[data-node-id="{node_id}"]').scroll_into_view_if_needed()
            board = page.locator(f'.meter-board[data-node-id="{node_id}"]')
            expect(board).not_to_have_class(re.compile(r"\bstale\b"))
            wait_for(lambda node_id=node_id: lit(peak_clips(page, node_id)), 10, f"the meters of {node_id} to light")
        noise = str(scale_fleet.real_nodes[-1].node_id)  # on screen: the loop scrolled to it last
        samples: set[tuple[str, ...]] = set()

        def moved() -> bool:
            samples.add(tuple(peak_clips(page, noise)))
            return len(samples) > 3

        wait_for(moved, 10, "the noise node's meters to move", interval=0.2)
        page.screenshot(path=str(ARTIFACTS / "fleet-scale.png"))
        page.evaluate("window.scrollTo(0, 0)")

    state = signed_in_state(browser, scale_fleet.hub.url)
    figures = measure_fleet_page(browser, scale_fleet.hub.url, state, NODES, check=check, window_s=20)
    assert figures.shown == NODES, figures
    assert figures.frames_per_s > 0 and figures.meter_url is not None, figures
    report = {"nodes": NODES, "statuses": expected, **figures.to_json()}
    out = ARTIFACTS / "fleet-scale.json"
    Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nfleet page with {NODES} live nodes: {json.dumps(report)}")
