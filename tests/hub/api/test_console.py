"""The console's files are served at `/` with a strict content security policy."""

from __future__ import annotations

import httpx

from tests.harness import HubProcess


def test_the_console_page_is_served_at_the_root(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert '<script type="module" src="/console/app.js">' in response.text


def test_console_assets_have_their_types(hub: HubProcess) -> None:
    script = httpx.get(f"{hub.url}/console/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert httpx.get(f"{hub.url}/console/style.css").headers["content-type"].startswith("text/css")


def test_paths_outside_the_console_folder_are_refused(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/console/../server.py")
    assert response.status_code in (403, 404)
    assert "import" not in response.text


def test_the_console_modules_are_served_as_javascript(hub: HubProcess) -> None:
    for module in ("api", "dom", "meters", "charts", "fleet", "node", "recordings", "audit", "admin"):
        response = httpx.get(f"{hub.url}/console/js/{module}.js")
        assert response.status_code == 200, module
        assert "javascript" in response.headers["content-type"], module
