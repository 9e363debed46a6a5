"""The hub's own health events (a full data disk...) on the console's fleet page, live, in words."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import ARTIFACTS, report_hub_storage_full
from tests.console.test_console import sign_in
from tests.harness import HubProcess, running_hub


@pytest.fixture(scope="module")
def bare_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("hub-health")) as hub:
        yield hub


def test_an_open_hub_event_shows_on_the_fleet_page_until_it_resolves(bare_hub: HubProcess, page: Page) -> None:
    sign_in(page, bare_hub.url)
    notice = page.locator(".hub-health")
    expect(page.locator(".fleet-table caption")).to_contain_text("No nodes")
    expect(notice).to_be_hidden()

    event_id = report_hub_storage_full(bare_hub)["id"]
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("The hub's data disk is full")
    expect(notice).to_contain_text("/var/lib/hark-hub")
    page.screenshot(path=str(ARTIFACTS / "hub-health.png"))

    with bare_hub.admin() as admin:
        assert admin.post(f"/api/v1/health-events/{event_id}/resolve", json={}).status_code == 200
    expect(notice).to_be_hidden()
