"""Upload providers in headless Chromium against a real hub and a real moto S3 server: a bucket tested before it is
saved (the failed step and why, then every step passing), saved, its secret never on the page, tested again,
credentials rotated, a bad configuration's 400 at its fields, deleted; a directory provider made; a viewer reads only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hark_fleet.hub.processes import free_port
from playwright.sync_api import Page, expect

from tests.console.test_console import sign_in, sign_in_as_viewer
from tests.harness import HubProcess
from tests.offsite_servers import MotoS3

PROVIDERS = "/api/v1/settings/upload-providers"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("upload-providers-hub"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


def test_a_bucket_is_tested_before_saving_then_saved_tested_rotated_and_deleted(
    hub: HubProcess, page: Page, moto_s3: MotoS3, s3_bucket: str
) -> None:
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/offsite/providers")
    expect(page.get_by_role("heading", name="Upload providers")).to_be_visible()
    page.get_by_role("link", name="New provider").click()
    form = page.get_by_role("form", name="Upload provider")
    expect(form.get_by_label("Kind")).to_have_value("s3")
    form.get_by_label("Name", exact=True).fill("Archive bucket")
    form.get_by_label("Endpoint URL").fill(moto_s3.endpoint)
    form.get_by_label("Bucket").fill("Bad_Bucket")
    form.get_by_label("Access key id").fill(moto_s3.access_key)
    form.get_by_label("Secret access key").fill("not-the-secret")
    form.get_by_label("Path-style addressing (MinIO and most self-hosted servers)").check()

    form.get_by_role("button", name="Test").click()  # the hub's 400 shows at the field it names
    expect(form.get_by_label("Bucket")).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#problem-config-bucket")).to_contain_text("lowercase")

    form.get_by_label("Bucket").fill(s3_bucket)
    form.get_by_role("button", name="Test").click()
    report = form.locator(".provider-test")
    expect(report).to_contain_text("Test failed at “Sign in”")
    expect(report.locator("li[data-step=reach]")).to_contain_text("ok")
    expect(report.locator("li[data-step=authenticate]")).to_contain_text("access denied")

    form.get_by_label("Secret access key").fill(moto_s3.secret_key)
    form.get_by_role("button", name="Test").click()
    expect(report).to_contain_text("Test passed")
    expect(report.locator("li")).to_have_count(5)
    with hub.admin() as admin:
        assert admin.get(PROVIDERS, params={"name": "Archive bucket"}).json()["data"] == []  # tested, not saved

    form.get_by_role("button", name="Create provider").click()
    expect(page.get_by_role("heading", name="Archive bucket")).to_be_visible()
    expect(page.locator(".provider-secrets")).to_contain_text("secret access key (never shown)")
    assert moto_s3.secret_key not in page.content()
    page.get_by_role("button", name="Test again").click()
    expect(page.locator(".provider-last-test")).to_contain_text("Last test: test passed")

    page.locator(".provider-credentials summary").click()
    credentials = page.get_by_role("form", name="Replace credentials")
    credentials.get_by_label("Secret access key").fill("rotated-but-wrong")
    credentials.get_by_role("button", name="Replace credentials").click()
    expect(page.locator(".provider-last-test")).to_contain_text("Not tested since")
    page.get_by_role("button", name="Test again").click()
    expect(page.locator(".provider-test")).to_contain_text("Test failed at “Sign in”")
    expect(page.locator(".provider-last-test")).to_contain_text("test failed at “Sign in”")
    assert "rotated-but-wrong" not in page.content()

    edit = page.get_by_role("form", name="Upload provider")
    edit.get_by_label("Endpoint URL").fill(f"http://127.0.0.1:{free_port()}")  # an edit tested before it is saved
    edit.get_by_role("button", name="Test these settings").click()
    expect(edit.locator(".provider-test")).to_contain_text("Test failed at “Reach”")
    edit.get_by_label("Endpoint URL").fill(moto_s3.endpoint)
    edit.get_by_role("button", name="Test these settings").click()  # the saved (rotated, wrong) secret is used
    expect(edit.locator(".provider-test")).to_contain_text("Test failed at “Sign in”")
    edit.get_by_label("Description").fill("the long-term archive")
    edit.get_by_role("button", name="Save changes").click()
    expect(page.locator(".upload-providers .hint").first).to_contain_text("Version 3")

    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Upload providers")).to_be_visible()
    expect(page.get_by_role("link", name="Archive bucket")).to_have_count(0)


def test_a_directory_provider_is_made_and_listed(hub: HubProcess, page: Page, tmp_path: Path) -> None:
    sign_in(page, hub.url)
    page.goto(f"{hub.url}/#/offsite/providers/new")
    form = page.get_by_role("form", name="Upload provider")
    form.get_by_label("Kind").select_option("local")
    expect(form.get_by_label("Secret access key")).to_have_count(0)
    form.get_by_label("Name", exact=True).fill("NAS mount")
    form.get_by_label("Directory", exact=True).fill("relative/path")
    form.get_by_role("button", name="Create provider").click()
    expect(form.locator("#problem-config-path")).to_contain_text("absolute")
    form.get_by_label("Directory", exact=True).fill(str(tmp_path))
    form.get_by_role("button", name="Test").click()
    expect(form.locator(".provider-test")).to_contain_text("Test passed")
    form.get_by_role("button", name="Create provider").click()
    expect(page.get_by_role("heading", name="NAS mount")).to_be_visible()
    expect(page.locator(".provider-secrets")).to_contain_text("No credentials")
    expect(page.locator(".provider-credentials")).to_have_count(0)
    page.get_by_role("link", name="All providers").click()
    row = page.locator("tr", has_text="NAS mount")
    expect(row).to_contain_text("Directory on the hub")
    expect(row).to_contain_text(str(tmp_path))


def test_a_viewer_reads_a_provider_without_changing_it(hub: HubProcess, page: Page, tmp_path: Path) -> None:
    with hub.admin() as admin:
        made = admin.post(PROVIDERS, json={"name": "Read-only dir", "kind": "local", "config": {"path": str(tmp_path)}})
        assert made.status_code == 201, made.text
    sign_in_as_viewer(page, hub)
    page.goto(f"{hub.url}/#/offsite/providers")
    expect(page.get_by_role("link", name="New provider")).to_have_count(0)
    page.get_by_role("link", name="Read-only dir").click()
    expect(page.get_by_role("heading", name="Read-only dir")).to_be_visible()
    form = page.get_by_role("form", name="Upload provider")
    expect(form.get_by_label("Name", exact=True)).to_be_disabled()
    expect(form.get_by_role("button", name="Save changes")).to_have_count(0)
    expect(page.get_by_role("button", name="Test again")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
