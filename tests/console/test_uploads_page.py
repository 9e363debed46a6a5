"""The upload queue in headless Chromium against a real hub: counts by state as filter chips, progress and the last
error in the table, a failed upload retried from its row and two from a selection, recordings queued by hand, one
upload's page with its facts; a viewer reads the queue without the controls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import UploadProvider
from playwright.sync_api import Page, expect

from tests.conftest import hub_database
from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import HubProcess
from tests.hub.api.test_recording_upload import completed_recording
from tests.hub.api.uploads import QUEUE, item_row, provider


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for this module (recordings written through the upload route and the database; no nodes run)."""
    process = HubProcess(tmp_path_factory.mktemp("uploads-hub"))
    process.start()
    process.ensure_site("north")
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def name_of(hub: HubProcess, provider_id: str) -> str:
    with hub_database(hub):
        return str(UploadProvider.get_by_id(provider_id).name)


def states(hub: HubProcess, provider_id: str) -> dict[str, str]:
    with hub.admin() as admin:
        items = admin.get(QUEUE, params={"provider_id": provider_id}).json()["data"]
    return {i["id"]: i["state"] for i in items}


def test_the_queue_shows_states_progress_and_errors_and_failed_uploads_are_retried(hub: HubProcess, page: Page) -> None:
    target = provider(hub)  # disabled: the runner leaves what is queued to it as it is
    takes = [completed_recording(hub, site="north", seconds=0.5, name=f"Take {n}")[0] for n in range(4)]
    size = 1_000_000
    failed = [
        item_row(
            hub,
            t.recording_id,
            target,
            "north",
            "failed",
            node_id=t.node_id,
            attempts=3,
            bytes_total=size,
            last_error=f"503 Slow Down ({n})",
        )
        for n, t in enumerate(takes[:3])
    ]
    synced = item_row(
        hub,
        takes[3].recording_id,
        target,
        "north",
        "synced",
        node_id=takes[3].node_id,
        bytes_total=size,
        bytes_sent=size,
        checksum_sha256="ab" * 32,
        verified_by="read-back sha256",
        remote_key=f"north/{takes[3].recording_id}.wav",
        synced_at=utcnow(),
    )
    sign_in(page, hub.url)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Uploads").click()
    expect(page.get_by_role("heading", name="Uploads")).to_be_visible()
    chips = page.get_by_role("group", name="Show uploads in state")
    expect(chips.get_by_role("button", name="failed 3")).to_be_visible()
    expect(chips.get_by_role("button", name="synced 1")).to_be_visible()
    expect(page.locator(".upload-summary")).to_contain_text("3 uploads to go")
    synced_row = page.locator(f"tr[data-item-id='{synced}']")
    expect(synced_row.get_by_role("progressbar")).to_have_js_property("value", 1)
    expect(synced_row).to_contain_text(f"north/{takes[3].recording_id}.wav")
    expect(synced_row.get_by_role("button", name="Retry")).to_have_count(0)

    chips.get_by_role("button", name="failed 3").click()
    expect(chips.get_by_role("button", name="failed 3")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("tbody tr[data-item-id]")).to_have_count(3)
    first = page.locator(f"tr[data-item-id='{failed[0]}']")
    expect(first).to_contain_text("503 Slow Down (0)")
    first.get_by_role("button", name="Retry").click()
    expect(page.locator("tbody tr[data-item-id]")).to_have_count(2)
    assert states(hub, target)[failed[0]] == "pending"

    page.get_by_role("checkbox", name=f"Select Take 1 to {name_of(hub, target)}").check()
    page.get_by_role("checkbox", name=f"Select Take 2 to {name_of(hub, target)}").check()
    page.get_by_role("button", name="Retry 2 selected uploads").click()
    expect(page.locator("tbody tr[data-item-id]")).to_have_count(0)
    expect(page.locator(".upload-table caption")).to_have_text("No upload matches.")
    assert set(states(hub, target).values()) == {"pending", "synced"}
    with hub.admin() as admin:
        audit = admin.get("/api/v1/audit-events", params={"action": "upload.retry"}).json()["data"]
    assert {e["target"]["id"] for e in audit} >= set(failed)

    page.goto(f"{hub.url}/#/uploads/{synced}")
    expect(page.get_by_role("heading", name=f"Take 3 → {name_of(hub, target)}")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("ab" * 32)
    expect(page.locator(".facts")).to_contain_text("read-back sha256")
    expect(page.get_by_role("button", name="Retry")).to_be_disabled()
    expect(page.locator(".upload-detail")).to_contain_text("only a failed upload is retried (this one is synced)")


def test_recordings_are_queued_by_hand_to_a_chosen_provider(hub: HubProcess, page: Page) -> None:
    target = provider(hub, "local")
    take, _ = completed_recording(hub, site="north", seconds=0.5, name="By hand")
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/uploads")
    page.get_by_text("Queue recordings by hand").click()
    form = page.get_by_role("form", name="Queue recordings")
    form.get_by_label("Recording ids").fill(f"{take.recording_id}, rec_missing")
    form.get_by_role("checkbox", name=f"{name_of(hub, target)} (local)").check()
    form.get_by_role("button", name="Queue").click()
    expect(form.get_by_role("status")).to_contain_text("1 upload queued for 1 recording. Not queued: rec_missing")
    row = page.locator("tr", has_text="By hand")
    expect(row).to_contain_text("pending")
    expect(row).to_contain_text(f"north/{take.node_id}/")


def test_a_viewer_reads_the_queue_without_its_controls(hub: HubProcess, page: Page) -> None:
    target = provider(hub)
    take, _ = completed_recording(hub, site="north", seconds=0.5, name="Viewer sees")
    item_row(hub, take.recording_id, target, "north", "failed", node_id=take.node_id, last_error="refused")
    sign_in_as_viewer(page, hub)
    page.goto(f"{hub.url}/#/uploads")
    row = page.locator("tr", has_text="Viewer sees")
    expect(row).to_contain_text("refused")
    expect(row.get_by_role("button", name="Retry")).to_have_count(0)
    expect(row.get_by_role("checkbox")).to_be_disabled()
    expect(page.get_by_text("Queue recordings by hand")).to_have_count(0)
