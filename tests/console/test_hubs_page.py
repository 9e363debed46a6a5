"""The console's Hubs page (issue 24): two real hubs on one PostgreSQL; the page on the second lists both instances
and shows the first running every piece of singleton work; once the first is killed, the page shows it lost and
every piece of work on the second. On SQLite it shows the one hub running everything. A viewer (no metrics:read)
has no Hubs link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.hub.cluster.leases import NAMES
from playwright.sync_api import Page, expect

from tests.console.conftest import ARTIFACTS
from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import HubProcess, create_database, drop_database, running_hub, wait_for


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


def holder(hub: HubProcess) -> str | None:
    with hub.admin() as admin:
        leases = admin.get("/api/v1/hub-instances/leases").json()["data"]
    holders = {lease["holder"] for lease in leases if lease["held"]}
    return holders.pop() if len(holders) == 1 and all(lease["held"] for lease in leases) else None


def test_the_hubs_page_shows_who_runs_the_singleton_work_and_follows_it_to_the_survivor(
    page: Page, tmp_path: Path, database_url: str
) -> None:
    env = {"HARK_EMBEDDED_BROKER": "in-process"}
    first = HubProcess(tmp_path / "hub1", database_url=database_url, env_extra=dict(env))
    second = HubProcess(tmp_path / "hub2", database_url=database_url, env_extra=dict(env))
    try:
        first.start()
        first_id = wait_for(lambda: holder(first), 30, "the first hub holding every lease")
        second.start()
        sign_in(page, second.url)
        page.get_by_role("link", name="Hubs").click()
        instances = page.get_by_role("table", name="Hub instances")
        work = page.get_by_role("table", name="Singleton work")
        expect(instances.locator("tbody tr[data-state=live]")).to_have_count(2)
        expect(instances.locator(f'tr[data-instance-id="{first_id}"] .hub-leases')).to_contain_text("Schedule dispatcher")
        expect(work.locator(f'tbody tr[data-holder="{first_id}"]')).to_have_count(len(NAMES))
        expect(work.get_by_role("row", name="Retention")).to_contain_text(first_id)
        page.screenshot(path=str(ARTIFACTS / "hubs.png"))

        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        first.proc = None
        second_id = wait_for(lambda: (now := holder(second)) != first_id and now, 15, "the second hub holding every lease")
        expect(work.locator(f'tbody tr[data-holder="{second_id}"]')).to_have_count(len(NAMES), timeout=10_000)
        expect(instances.locator(f'tr[data-instance-id="{first_id}"]')).to_have_attribute("data-state", "lost", timeout=30_000)
        expect(instances.locator(f'tr[data-instance-id="{first_id}"] .hub-leases')).to_have_text("—")
        page.screenshot(path=str(ARTIFACTS / "hubs-failover.png"))
    finally:
        for hub in (first, second):
            if hub.proc is not None:
                hub.stop()


def test_on_sqlite_the_one_hub_runs_everything_and_a_viewer_has_no_hubs_link(page: Page, tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub:
        sign_in(page, hub.url)
        page.goto(f"{hub.url}/#/hubs")
        rows = page.get_by_role("table", name="Hub instances").locator("tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-state", "live")
        expect(rows.first).to_contain_text(hub.url)
        work = page.get_by_role("table", name="Singleton work")
        expect(work.locator("tbody tr")).to_have_count(len(NAMES))
        expect(work).to_contain_text("while this hub runs")
        page.get_by_role("button", name="Log out").click()
        sign_in_as_viewer(page, hub)
        expect(page.locator("#nav").get_by_role("link", name="Hubs")).to_be_hidden()
