"""The retention pages in real headless Chromium against a real hub: a policy made from the form (providers ticked),
its preview saying what would go and what is held and why, and "Run now" evicting only the confirmed recording."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.console.test_console import sign_in
from tests.harness import HubProcess
from tests.hub.api.test_recording_upload import enroll, stored_path
from tests.hub.api.test_retention_policies import provider, synced, tagged_take

POLICIES = "/api/v1/settings/retention-policies"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for this module (recordings written through the API and the database; no nodes run)."""
    process = HubProcess(tmp_path_factory.mktemp("retention-hub"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def test_a_policy_is_made_from_the_form_previewed_and_run_now(hub: HubProcess, page: Page) -> None:
    tag = f"ui-{uuid.uuid4().hex[:6]}"
    vault_name = f"vault-{uuid.uuid4().hex[:4]}"
    vault = provider(hub, name=vault_name)
    node = enroll(hub, "north")
    confirmed = tagged_take(hub, node, tag, days=40)
    synced(hub, confirmed, vault)
    unconfirmed = tagged_take(hub, node, tag, days=40)
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/retention")
    expect(page.get_by_role("heading", name="Retention", exact=True)).to_be_visible()
    page.get_by_role("link", name="New policy").click()

    form = page.get_by_role("form", name="New retention policy")
    form.get_by_role("button", name="Create").click()  # no name: said in words, nothing sent
    expect(form.get_by_role("alert")).to_have_text("Name the policy.")
    name = f"Archive then free {tag}"
    form.get_by_label("Name").fill(name)
    form.get_by_label("Tags").fill(tag)
    form.get_by_label("Hub keeps (days)").fill("30")
    form.get_by_label(vault_name).check()
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=f"Retention policy {name}")).to_be_visible()
    with hub.admin() as admin:
        saved = admin.get(POLICIES, params={"name": name}).json()["data"][0]
    assert saved["tags"] == [tag] and saved["keep_on_hub_days"] == 30 and saved["required_providers"] == [vault]

    doomed = page.locator(".retention-preview.preview-delete").first
    expect(doomed.locator(f"tr[data-recording-id='{confirmed.recording_id}']")).to_contain_text(f"confirmed on {vault_name}")
    kept = page.locator(".retention-preview.preview-held").first
    expect(kept.locator(f"tr[data-recording-id='{unconfirmed.recording_id}']")).to_contain_text(
        f"not yet confirmed on provider {vault_name}"
    )

    page.get_by_label("Hub keeps (days)").fill("60")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notices")).to_contain_text("Saved: version 2")
    expect(
        page.locator(".retention-preview.preview-held").first.locator(f"tr[data-recording-id='{confirmed.recording_id}']")
    ).to_contain_text("kept 60 days")
    page.get_by_label("Hub keeps (days)").fill("30")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notices")).to_contain_text("Saved: version 3")

    page.get_by_role("link", name="← Retention").click()
    expect(page.locator(f".retention-table tr[data-policy-id='{saved['id']}']")).to_contain_text(vault_name)
    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#notices")).to_contain_text("Retention run done", timeout=30_000)
    expect(page.locator(".retention-runs tbody tr").first).to_contain_text("by hand")
    assert not stored_path(hub, confirmed).exists() and stored_path(hub, unconfirmed).exists()


def test_a_viewer_reads_retention_without_the_controls(hub: HubProcess, page: Page) -> None:
    from tests.console.test_console import sign_in_as_viewer

    sign_in_as_viewer(page, hub)
    page.goto(f"{hub.url}/#/retention")
    expect(page.get_by_role("heading", name="Retention", exact=True)).to_be_visible()
    expect(page.locator(".retention-runs caption")).not_to_have_text("Loading…")
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)
    expect(page.get_by_role("link", name="New policy")).to_have_count(0)
