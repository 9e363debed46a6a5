"""A real hub and an enrolled node with a technician PIN, and headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import headless_chromium
from tests.harness import ROOT
from tests.node.local.technician_site import Site, start_site

ARTIFACTS = ROOT / "var" / "test-artifacts" / "technician"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    started = start_site(tmp_path_factory.mktemp("technician"))
    yield started
    assert started.node.stop() == 0, started.node.log()
    if started.hub.proc is not None:
        assert started.hub.stop() == 0, started.hub.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page whose script errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"errors in the page's scripts: {errors}"
