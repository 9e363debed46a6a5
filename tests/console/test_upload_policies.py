"""Upload policies in headless Chromium against a real hub: a policy made with the form (providers from the providers
list, criteria, a key template whose example key follows the typing, a window over midnight, the route), the hub's 400
shown at the fields it names, the saved policy edited and applied to the recordings already there; a viewer reads only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hark_fleet.hub.db.models import UploadProvider
from playwright.sync_api import Page, expect

from tests.conftest import hub_database
from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import HubProcess
from tests.hub.api.test_recording_upload import completed_recording
from tests.hub.api.uploads import POLICIES, provider


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for this module (recordings written through the upload route and the database; no nodes run)."""
    process = HubProcess(tmp_path_factory.mktemp("upload-policies-hub"))
    process.start()
    process.ensure_site("north", time_zone="Europe/Paris")
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def provider_name(hub: HubProcess, provider_id: str) -> str:
    with hub_database(hub):
        return str(UploadProvider.get_by_id(provider_id).name)


def test_a_policy_is_made_with_the_form_shown_its_problems_edited_and_applied(hub: HubProcess, page: Page) -> None:
    local, bucket = provider(hub, "local"), provider(hub, "s3")
    take, _ = completed_recording(hub, site="north")
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/offsite/policies")
    expect(page.get_by_role("heading", name="Upload policies")).to_be_visible()
    page.get_by_role("link", name="New policy").click()
    form = page.get_by_role("form", name="Upload policy")
    form.get_by_label("Name", exact=True).fill("Nightly archive")
    form.get_by_role("checkbox", name=f"{provider_name(hub, local)} (local, disabled)").check()
    form.get_by_role("checkbox", name="north").check()
    template = form.get_by_label("Key template")
    expect(template).to_have_value("{site}/{node}/{yyyy}/{mm}/{dd}/{recording_id}.{ext}")
    expect(form.locator(".upload-key-example")).to_contain_text("north/nod_01JF3EXAMPLE/")
    template.fill("archive/{site}/{colour}.wav")
    expect(form.locator(".upload-key-example")).to_contain_text("Unknown placeholder {colour}")
    template.fill("archive/{site}/{yyyy}/{recording_id}.{ext}")
    expect(form.locator(".upload-key-example")).to_contain_text("archive/north/")
    form.get_by_label("Upload", exact=True).select_option("window")
    form.get_by_label("From (site time)").fill("22:00")
    form.get_by_label("Until").fill("05:00")
    form.get_by_label("Route").select_option("direct")  # a local provider cannot take the direct route
    form.get_by_role("button", name="Create policy").click()
    route = form.get_by_label("Route")
    expect(route).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#problem-route")).to_contain_text("S3")
    expect(form.get_by_role("alert")).to_contain_text("Not saved")

    form.get_by_label("Route").select_option("via_hub")
    form.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", name="Nightly archive")).to_be_visible()
    expect(page.locator(".upload-policies .hint").first).to_contain_text("daily 22:00–05:00 (site time), over midnight")
    with hub.admin() as admin:
        saved = admin.get(POLICIES, params={"name": "Nightly archive"}).json()["data"][0]
    assert saved["criteria"]["sites"] == ["north"] and saved["provider_ids"] == [local]
    assert (saved["when"], saved["window_start"], saved["window_end"], saved["route"]) == ("window", "22:00", "05:00", "via_hub")
    assert saved["key_template"] == "archive/{site}/{yyyy}/{recording_id}.{ext}"

    form = page.get_by_role("form", name="Upload policy")
    form.get_by_role("checkbox", name=f"{provider_name(hub, bucket)} (s3, disabled)").check()
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator(".upload-policies .hint").first).to_contain_text("Version 2")
    page.get_by_role("button", name="Queue existing recordings").click()
    expect(page.get_by_role("status").filter(has_text="queued now")).to_contain_text("1 recording matched; 2 uploads queued now.")
    with hub.admin() as admin:
        queued = admin.get("/api/v1/upload-queue", params={"recording_id": take.recording_id}).json()["data"]
    assert sorted(i["provider_id"] for i in queued) == sorted([local, bucket])

    page.get_by_role("link", name="All policies").click()
    row = page.locator("tr", has_text="Nightly archive")
    expect(row).to_contain_text("site north; completed or interrupted")
    expect(row).to_contain_text("via the hub")


def test_a_viewer_reads_a_policy_without_changing_it(hub: HubProcess, page: Page) -> None:
    local = provider(hub, "local")
    with hub.admin() as admin:
        made = admin.post(POLICIES, json={"name": "Read only", "provider_ids": [local], "enabled": False})
        assert made.status_code == 201, made.text
    policy_id = made.json()["data"]["id"]
    sign_in_as_viewer(page, hub)
    page.goto(f"{hub.url}/#/offsite/policies")
    expect(page.get_by_role("link", name="New policy")).to_have_count(0)
    page.get_by_role("link", name="Read only").click()
    expect(page.get_by_role("heading", name="Read only")).to_be_visible()
    form = page.get_by_role("form", name="Upload policy")
    expect(form.get_by_label("Name", exact=True)).to_be_disabled()
    expect(form.get_by_role("button", name="Save changes")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    assert page.url.endswith(f"#/offsite/policies/{policy_id}")
