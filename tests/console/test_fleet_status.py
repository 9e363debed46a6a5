"""The fleet page's status header and the node delete dialog's blockers, in headless Chromium against a
real hub with real nodes: the header shows what `GET /api/v1/status` says (nodes by status, recordings
of the last day, the nodes' disk hours left, broker and database), and the delete dialog names a queued
job, warns what force does, and a forced delete cancels the job. Desktop and phone screenshots."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from playwright.sync_api import Page, expect

from tests.console.conftest import ARTIFACTS, ConsoleFleet
from tests.console.test_console import sign_in
from tests.harness import wait_for

SHOTS = ARTIFACTS / "fleet-status"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enroll(fleet: ConsoleFleet, name: str) -> tuple[str, str]:
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": name, "site": "main-hall"})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def api_status(fleet: ConsoleFleet) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.get("/api/v1/status")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def header_text(page: Page, fact: str) -> str:
    return page.locator(f'.fleet-status [data-fact="{fact}"] .value').inner_text()


def test_the_status_header_shows_what_the_status_api_says(console_fleet: ConsoleFleet, page: Page) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    node_id, credential = enroll(console_fleet, "Low disk")
    try:
        beat = {
            "msg_id": uuid.uuid4().hex,
            "ts": now_iso(),
            "seq": 1,
            "agent_version": "0.1.0",
            "uptime_s": 5.0,
            "disk": {"path": "/var/lib/hark", "used_pct": 97.0, "free_bytes": 1_728_000_000},
            "disk_hours_left": 1.5,
            "recording_bytes_per_s": 320_000.0,
        }
        with console_fleet.hub.client(credential) as box:
            assert box.post(f"/api/v1/nodes/{node_id}/heartbeat", json=beat).status_code == 200
        with console_fleet.hub.admin() as admin:
            assert admin.post("/api/v1/recordings", json={"node_id": node_id, "name": "Queued take"}).status_code == 201
        page.set_viewport_size({"width": 1440, "height": 900})
        sign_in(page, console_fleet.hub.url)
        header = page.get_by_role("group", name="Fleet status")
        expect(header).to_be_visible()
        expect(header.locator('[data-fact="node-storage"] .value')).to_have_text("lowest 1.5 h left")
        expect(header.locator('[data-fact="node-storage"] .sub')).to_contain_text("Low disk")
        expect(header.locator('[data-fact="node-storage"]')).to_have_class(re.compile(r"\blevel-bad\b"))
        expect(header.locator('[data-fact="broker"] .value')).to_have_text("connected")
        expect(header.locator('[data-fact="database"] .value')).to_have_text("reachable")
        expect(header.locator('[data-fact="hub-storage"] .value')).to_contain_text("free")

        def page_matches_api() -> bool:
            status = api_status(console_fleet)
            shown = {s: page.locator(f'[data-total="status:{s}"] .n').inner_text() for s in status["nodes"]["by_status"]}
            return shown == {s: str(n) for s, n in status["nodes"]["by_status"].items()} and header_text(
                page, "recordings"
            ) == str(status["recordings"]["total"])

        wait_for(page_matches_api, 20, "the header and the totals to show the status API's numbers", interval=0.5)
        assert api_status(console_fleet)["recordings"]["by_status"]["queued"] == 1
        expect(header.locator('[data-fact="recordings"] .sub')).to_contain_text("1 queued")
        header.screenshot(path=str(SHOTS / "status-header-1440.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") == 0
        header.screenshot(path=str(SHOTS / "status-header-390.png"))
    finally:
        with console_fleet.hub.admin() as admin:
            assert admin.delete(f"/api/v1/nodes/{node_id}", params={"force": "true"}).status_code == 204


def test_the_delete_dialog_lists_a_queued_job_and_force_cancels_it(console_fleet: ConsoleFleet, page: Page) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    node_id, _ = enroll(console_fleet, "Doomed box")
    with console_fleet.hub.admin() as admin:
        response = admin.post("/api/v1/recordings", json={"node_id": node_id, "name": "Doomed take"})
    assert response.status_code == 201, response.text
    job_id = response.json()["data"]["job"]["id"]
    page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, console_fleet.hub.url)
    page.goto(f"{console_fleet.hub.url}/#/nodes/{node_id}")
    expect(page.get_by_role("heading", name="Administration")).to_be_visible()
    page.get_by_role("button", name="Delete this node…").click()
    preview = page.get_by_role("group", name="What deleting would do")
    jobs = preview.get_by_role("list", name="Jobs queued or running")
    expect(jobs.locator("li")).to_have_count(1)
    expect(jobs.locator("li")).to_contain_text("Doomed take")
    expect(jobs.locator("li")).to_contain_text(job_id)
    expect(jobs.locator("li .state")).to_have_text("queued")
    warning = preview.get_by_role("note", name="What force does")
    expect(warning).to_contain_text("cannot be undone")
    expect(warning).to_contain_text("1 recording job is cancelled")
    expect(preview.get_by_role("button", name="Delete node")).to_have_count(0)
    page.locator(".node-admin .danger-zone").screenshot(path=str(SHOTS / "delete-blockers-1440.png"))
    preview.get_by_role("button", name="Delete anyway (force)").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete Doomed box with force?")
    expect(dialog).to_contain_text("1 recording job is cancelled")
    dialog.get_by_role("button", name="Delete anyway").click()
    expect(page).to_have_url(re.compile(r"#/fleet$"))
    with console_fleet.hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{node_id}").status_code == 404
        job = admin.get(f"/api/v1/recording-jobs/{job_id}").json()["data"]
    assert (job["state"], job["error"]) == ("cancelled", "the node was deleted")
