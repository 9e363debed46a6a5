"""The recording page's "Where are the copies" panel in real headless Chromium against a real hub: the hub's copy,
each provider's with its state and checksum, the node cache, retention's decisions, and the hub's copy once evicted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.console.test_console import sign_in
from tests.harness import HubProcess, wait_for
from tests.hub.api.test_recording_upload import enroll
from tests.hub.api.test_retention_policies import make_policy, provider, synced, tagged_take


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("copies-hub"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def test_the_copies_panel_shows_every_copy_its_checksum_and_the_retention_decision(hub: HubProcess, page: Page) -> None:
    tag = f"cp-{uuid.uuid4().hex[:6]}"
    vault_name, tape_name = f"vault-{uuid.uuid4().hex[:4]}", f"tape-{uuid.uuid4().hex[:4]}"
    vault, tape = provider(hub, name=vault_name), provider(hub, name=tape_name)
    take = tagged_take(hub, enroll(hub, "north"), tag, days=40)
    synced(hub, take, vault)
    synced(hub, take, tape, state="failed")
    with hub.admin() as admin:
        sha = admin.get(f"/api/v1/recordings/{take.recording_id}").json()["data"]["sha256"]
    policy = make_policy(hub, tags=[tag], keep_on_hub_days=365, required_providers=[vault])

    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/recordings/{take.recording_id}")
    panel = page.get_by_role("region", name="Where are the copies")
    expect(panel.locator("tr[data-place='hub']")).to_contain_text("stored, checksum verified")
    expect(panel.locator("tr[data-place='hub'] code").first).to_have_attribute("title", sha)
    vault_row = panel.locator(f"tr[data-place='provider:{vault}']")
    expect(vault_row).to_contain_text(vault_name)
    expect(vault_row).to_contain_text("synced, confirmed by read-back")
    expect(vault_row.locator("code").first).to_have_attribute("title", sha)
    expect(panel.locator(f"tr[data-place='provider:{tape}']")).to_contain_text("failed")
    expect(panel.locator("tr[data-place='node']")).to_contain_text("in the node's cache")
    expect(panel.locator(".decision[data-action='keep']").first).to_contain_text("kept 365 days")
    expect(panel.locator("caption")).to_contain_text(sha)
    expect(panel.get_by_role("link", name=policy["name"])).to_have_attribute("href", f"#/retention/{policy['id']}")

    with hub.admin() as admin:
        policy = admin.get("/api/v1/settings/retention-policies", params={"tag": tag}).json()["data"][0]
        admin.patch(f"/api/v1/settings/retention-policies/{policy['id']}", json={"keep_on_hub_days": 30})
        run = admin.post("/api/v1/retention-runs").json()["data"]
        wait_for(lambda: admin.get(f"/api/v1/retention-runs/{run['id']}").json()["data"]["finished_at"], 30, "the run")
    page.reload()
    expect(panel.locator("tr[data-place='hub']")).to_contain_text("deleted by retention")
    expect(panel.locator(f"tr[data-place='provider:{vault}']")).to_contain_text("synced")
    expect(page.get_by_role("region", name="Listen")).to_contain_text("retention evicted it")
