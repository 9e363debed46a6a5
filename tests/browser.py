"""Debian's Chromium driven by Playwright, for the browser tests (Playwright's own browser downloads are never used)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """A headless Chromium for one test module; fails with the package to install when it is missing."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: tests/services.sh installs the Debian package chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # root in a container has no user namespace sandbox; audio plays without a click.
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
