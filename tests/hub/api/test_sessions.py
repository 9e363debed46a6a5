"""A user's own sessions: list, revoke, logout-all, password change, expiry, and the console's cookie with CSRF."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from hark_fleet.hub.auth.tokens import secret_hash
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import AuthSession

from tests.conftest import hub_database
from tests.harness import HubProcess

PASSWORD = "sessions-test-password-1"


def make_user(hub: HubProcess, roles: list[str] | None = None) -> tuple[str, str]:
    """A new user (id, username) with PASSWORD."""
    username = f"u-{uuid.uuid4().hex[:8]}"
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles or ["viewer"]}
        )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"], username


def test_own_sessions_are_listed_with_the_current_one_marked(hub: HubProcess) -> None:
    _, username = make_user(hub)
    first, second = hub.login(username, PASSWORD), hub.login(username, PASSWORD)
    with hub.client(second) as client:
        body = client.get("/api/v1/auth/sessions").json()
    assert len(body["data"]) == 2
    assert [s["current"] for s in body["data"]] == [True, False]
    assert body["meta"] == {"next_cursor": None}
    assert first not in str(body) and "token" not in body["data"][0]


def test_revoking_one_of_my_sessions_ends_only_that_one(hub: HubProcess) -> None:
    _, username = make_user(hub)
    first, second = hub.login(username, PASSWORD), hub.login(username, PASSWORD)
    with hub.client(second) as client:
        other = next(s["id"] for s in client.get("/api/v1/auth/sessions").json()["data"] if not s["current"])
        assert client.delete(f"/api/v1/auth/sessions/{other}").status_code == 204
        assert client.get("/api/v1/auth/me").status_code == 200
        assert client.delete(f"/api/v1/auth/sessions/{other}").status_code == 404
    with hub.client(first) as client:
        assert client.get("/api/v1/auth/me").status_code == 401


def test_another_users_session_cannot_be_revoked(hub: HubProcess) -> None:
    _, alice = make_user(hub)
    _, bob = make_user(hub)
    alice_token, bob_token = hub.login(alice, PASSWORD), hub.login(bob, PASSWORD)
    with hub.client(alice_token) as client:
        alice_session = client.get("/api/v1/auth/sessions").json()["data"][0]["id"]
    with hub.client(bob_token) as client:
        assert client.delete(f"/api/v1/auth/sessions/{alice_session}").status_code == 404
    with hub.client(alice_token) as client:
        assert client.get("/api/v1/auth/me").status_code == 200


def test_logout_all_ends_every_session(hub: HubProcess) -> None:
    _, username = make_user(hub)
    tokens = [hub.login(username, PASSWORD) for _ in range(3)]
    with hub.client(tokens[0]) as client:
        assert client.post("/api/v1/auth/logout-all").status_code == 204
    for token in tokens:
        with hub.client(token) as client:
            assert client.get("/api/v1/auth/me").status_code == 401


def test_password_change_keeps_this_session_and_ends_the_others(hub: HubProcess) -> None:
    _, username = make_user(hub)
    keep, other = hub.login(username, PASSWORD), hub.login(username, PASSWORD)
    new_password = "a-brand-new-password-2"
    with hub.client(keep) as client:
        wrong = client.post("/api/v1/auth/password", json={"current_password": "not-it-at-all", "new_password": new_password})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["fields"] == {"current_password": "is wrong"}
        weak = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "short"})
        assert weak.json()["error"]["fields"]["new_password"].startswith("must be at least 10")
        done = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": new_password})
        assert done.status_code == 200
        assert done.json() == {"data": {"other_sessions_revoked": 1}}
        assert client.get("/api/v1/auth/me").status_code == 200
    with hub.client(other) as client:
        assert client.get("/api/v1/auth/me").status_code == 401
    assert hub.login(username, new_password)
    assert httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": username, "password": PASSWORD}).status_code == 401


def test_an_expired_session_answers_token_expired(hub: HubProcess) -> None:
    _, username = make_user(hub)
    token = hub.login(username, PASSWORD)
    with hub_database(hub):
        AuthSession.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            AuthSession.token_hash == secret_hash(token)
        ).execute()
    with hub.client(token) as client:
        response = client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


def test_use_slides_the_expiry_forward(hub: HubProcess) -> None:
    _, username = make_user(hub)
    token = hub.login(username, PASSWORD)
    with hub_database(hub):
        old = utcnow() + timedelta(minutes=5)
        AuthSession.update(expires_at=old, last_used_at=utcnow() - timedelta(minutes=10)).where(
            AuthSession.token_hash == secret_hash(token)
        ).execute()
    with hub.client(token) as client:
        assert client.get("/api/v1/auth/me").status_code == 200
    with hub_database(hub):
        renewed = AuthSession.get(AuthSession.token_hash == secret_hash(token)).expires_at
    assert renewed > old + timedelta(hours=1)


def test_cookie_login_is_httponly_and_writes_need_the_csrf_token(hub: HubProcess) -> None:
    _, username = make_user(hub)
    with httpx.Client(base_url=hub.url) as browser:
        login = browser.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD, "cookie": True})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("hark_session=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        csrf = login.json()["data"]["csrf_token"]
        me = browser.get("/api/v1/auth/me")  # reads work with the cookie alone
        assert me.status_code == 200
        assert me.json()["data"]["csrf_token"] == csrf
        refused = browser.post("/api/v1/auth/logout")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        assert browser.post("/api/v1/auth/logout", headers={"X-CSRF-Token": "0" * 32}).status_code == 403
        assert browser.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/api/v1/auth/me").status_code == 401


def test_api_keys_cannot_use_session_routes(hub: HubProcess) -> None:
    with hub.admin() as admin:
        secret = admin.post("/api/v1/auth/keys", json={"name": "k", "scopes": ["node:read"]}).json()["data"]["secret"]
    with hub.client(secret) as client:
        assert client.get("/api/v1/auth/me").status_code == 401
        assert client.get("/api/v1/auth/sessions").status_code == 401
