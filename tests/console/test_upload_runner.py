"""The upload runner's panel on the Uploads page, in headless Chromium against a real hub: an upload in flight with
its progress, throughput, backlog and ETA; Pause sends it back to the queue and Resume finishes it; Run now; a
viewer sees the figures without the buttons."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.e2e.test_offsite_upload import add_provider, enqueue, item, stored_recording
from tests.harness import HubProcess, wait_for

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("runner-hub"), env_extra={"HARK_UPLOAD_PASS_INTERVAL_S": "0.5"})
    process.start()
    process.ensure_site("north")
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def node(hub: HubProcess) -> str:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}", "site": "north"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["node"]["id"])


def open_uploads(page: Page, hub: HubProcess) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Uploads").click()
    expect(page.get_by_role("heading", name="Uploads")).to_be_visible()


def test_the_panel_shows_an_upload_in_flight_and_pause_and_resume_control_it(hub: HubProcess, page: Page, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    provider_id = add_provider(hub, "local", {"path": str(archive)}, {}, rate_limit_bps=4 * MIB)  # 80 MiB: about 20 s
    with hub.admin() as admin:
        provider_name = admin.get(f"/api/v1/settings/upload-providers/{provider_id}").json()["data"]["name"]
    recording_id, sha256 = stored_recording(hub, node(hub), 80 * MIB)
    sign_in(page, hub.url)
    open_uploads(page, hub)
    panel = page.get_by_role("region", name="Upload runner")
    expect(panel.locator("[data-field=state]")).to_contain_text("idle")
    [queued] = enqueue(hub, recording_id, [provider_id])

    expect(panel.locator("[data-field=state]")).to_contain_text("uploading")
    row = panel.get_by_role("list", name="Uploads in flight").locator(f"[data-item='{queued['id']}']")
    expect(row).to_contain_text("stored 80 MB")  # the recording's name, and the provider's
    expect(row).to_contain_text(provider_name)
    expect(row.get_by_role("progressbar")).to_be_visible()
    expect(panel.locator("[data-field=backlog]")).to_contain_text("1 upload")
    expect(panel.locator("[data-field=throughput]")).to_contain_text("/s")  # bytes moved within the last minute
    expect(panel.locator("[data-field=concurrency]")).to_contain_text("2")

    panel.get_by_role("button", name="Pause").click()
    expect(panel.locator("[data-field=state]")).to_contain_text("paused")
    expect(panel.get_by_role("button", name="Resume")).to_be_visible()
    expect(panel.get_by_role("button", name="Run now")).to_be_disabled()
    wait_for(lambda: item(hub, queued["id"])["state"] == "queued", 20, "the paused upload back in the queue", interval=0.2)
    expect(panel.get_by_text("No upload in flight.")).to_be_visible()

    panel.get_by_role("button", name="Resume").click()
    expect(panel.locator("[data-field=state]")).not_to_contain_text("paused")
    wait_for(lambda: item(hub, queued["id"])["state"] == "synced", 60, "the resumed upload to finish", interval=0.3)
    expect(panel.locator("[data-field=state]")).to_contain_text("idle")
    expect(panel.locator("[data-field=eta]")).to_contain_text("nothing left")
    assert item(hub, queued["id"])["checksum_sha256"] == sha256

    panel.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("The runner looked at the queue.")).to_be_visible()


def test_a_viewer_sees_the_runner_without_its_buttons(hub: HubProcess, page: Page) -> None:
    sign_in_as_viewer(page, hub)
    open_uploads(page, hub)
    panel = page.get_by_role("region", name="Upload runner")
    expect(panel.locator("[data-field=state]")).to_be_visible()
    expect(panel.get_by_role("button")).to_have_count(0)
