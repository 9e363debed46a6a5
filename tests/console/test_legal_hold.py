"""The recording page's legal hold in real headless Chromium against a real hub: placed with a reason from a dialog,
shown with who and when, the Delete button disabled while held, released after a confirmation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.console.test_console import sign_in
from tests.harness import HubProcess
from tests.hub.api.test_recording_upload import completed_recording

REASON = "Case 2026-114: keep until the court releases it"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for this module (the recordings are written through the API and the database; no nodes run)."""
    process = HubProcess(tmp_path_factory.mktemp("legal-hold-hub"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def held(hub: HubProcess, recording_id: str) -> bool:
    with hub.admin() as admin:
        return bool(admin.get(f"/api/v1/recordings/{recording_id}").json()["data"]["legal_hold"])


def test_a_hold_is_placed_with_a_reason_blocks_delete_and_is_released(hub: HubProcess, page: Page) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/recordings/{take.recording_id}")
    section = page.get_by_role("region", name="Legal hold")
    expect(section).to_contain_text("Not held.")
    delete = page.locator(".recording-page .button-row").first.get_by_role("button", name="Delete")
    expect(delete).to_be_enabled()

    section.get_by_role("button", name="Place on hold").click()
    dialog = page.get_by_role("dialog", name="Place on legal hold")
    dialog.get_by_role("button", name="Place hold").click()  # no reason: said in words, nothing sent
    expect(dialog.get_by_role("alert")).to_have_text("Say why the recording is held.")
    assert not held(hub, take.recording_id)
    dialog.get_by_label("Reason").fill(REASON)
    dialog.get_by_role("button", name="Place hold").click()
    expect(dialog).to_have_count(0)

    expect(section).to_contain_text(f"Held. {REASON}")
    expect(section).to_contain_text("Placed by admin")
    expect(delete).to_be_disabled()
    expect(delete).to_have_accessible_description("Cannot be deleted: the recording is under legal hold.")
    assert held(hub, take.recording_id)

    section.get_by_role("button", name="Release hold").click()
    page.get_by_role("dialog", name="Release the legal hold?").get_by_role("button", name="Release hold").click()
    expect(section).to_contain_text("Not held.")
    expect(delete).to_be_enabled()
    assert not held(hub, take.recording_id)


def test_a_viewer_sees_the_hold_without_buttons(hub: HubProcess, page: Page) -> None:
    take, _ = completed_recording(hub, seconds=0.5)
    with hub.admin() as admin:
        assert admin.put(f"/api/v1/recordings/{take.recording_id}/legal-hold", json={"reason": REASON}).status_code == 200
        created = admin.post(
            "/api/v1/auth/users", json={"username": "hold-viewer", "password": "hold-viewer-pw-1", "roles": ["viewer"]}
        )
        assert created.status_code == 201, created.text
    sign_in(page, hub.url, "hold-viewer", "hold-viewer-pw-1")
    page.goto(f"{hub.url}/#/recordings/{take.recording_id}")
    section = page.get_by_role("region", name="Legal hold")
    expect(section).to_contain_text(f"Held. {REASON}")
    expect(section).to_contain_text("You cannot change the hold: needs recording:edit")
    expect(section.get_by_role("button")).to_have_count(0)
