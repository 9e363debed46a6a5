"""Login, bearer tokens, `me` and logout, on a real hub (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from hark_fleet.hub.auth.permissions import USER_PERMISSIONS

from tests.harness import ADMIN_PASSWORD, HubProcess, running_hub


def test_first_admin_logs_in_with_the_configured_password(hub: HubProcess) -> None:
    response = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["token"].startswith("hks_")
    assert data["expires_at"].endswith("Z")
    assert data["user"]["username"] == "admin"
    assert data["user"]["roles"] == ["admin"]
    assert data["user"]["sites"] is None
    assert "password_hash" not in data["user"]


@pytest.mark.parametrize(("username", "password"), [("admin", "wrong-password-123"), ("nobody", ADMIN_PASSWORD)])
def test_wrong_credentials_are_401_without_saying_which(hub: HubProcess, username: str, password: str) -> None:
    response = httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "invalid_credentials", "message": "The username or password is wrong."}


def test_me_lists_the_resolved_permissions(hub: HubProcess) -> None:
    with hub.admin() as client:
        response = client.get("/api/v1/auth/me")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["user"]["username"] == "admin"
    assert data["permissions"] == list(USER_PERMISSIONS)
    assert "node:control" not in data["permissions"]


def test_logout_ends_the_session_and_only_that_one(hub: HubProcess) -> None:
    first, second = hub.login(), hub.login()
    with hub.client(first) as client:
        assert client.post("/api/v1/auth/logout").status_code == 204
        assert client.get("/api/v1/auth/me").status_code == 401
    with hub.client(second) as client:
        assert client.get("/api/v1/auth/me").status_code == 200


def test_bearer_scheme_is_required(hub: HubProcess) -> None:
    token = hub.login()
    response = httpx.get(f"{hub.url}/api/v1/auth/me", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401


def test_generated_admin_password_is_printed_once_and_kept_private(tmp_path: Path) -> None:
    with running_hub(tmp_path, env_extra={"HARK_ADMIN_PASSWORD": ""}) as hub:
        path = hub.data_dir / "admin-password.txt"
        password = path.read_text().strip()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert hub.log().count(password) == 1
        assert hub.login(password=password)
    # A second start keeps the admin and prints no password.
    with running_hub(tmp_path) as hub:
        assert hub.log().count(password) == 1
        assert hub.login(password=password)
