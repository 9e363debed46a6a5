"""Brute-force protection: 10 failures per username, 100 per address, answered 429 at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hark_fleet.hub.services.login_throttle import ThrottleState, after_failure, retry_after

from tests.harness import ADMIN_PASSWORD, HubProcess, running_hub

T0 = datetime(2026, 1, 1, 12, 0, 0)


def attempt(hub: HubProcess, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{hub.url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=10)


@pytest.fixture
def hub(tmp_path: Path) -> HubProcess:
    with running_hub(tmp_path) as process:
        yield process


def test_the_eleventh_attempt_is_refused_at_once_with_retry_after(hub: HubProcess) -> None:
    for _ in range(10):
        assert attempt(hub, "admin", "wrong-password-here").status_code == 401
    started = time.monotonic()
    locked = attempt(hub, "admin", ADMIN_PASSWORD)  # even the right password waits
    assert time.monotonic() - started < 0.5
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "rate_limited"
    assert int(locked.headers["retry-after"]) in range(1, 61)
    # Another username from the same address is not locked out by this one.
    assert attempt(hub, "someone-else", "wrong-password-here").status_code == 401


def test_the_lockout_is_audited(hub: HubProcess) -> None:
    token = hub.login()
    for _ in range(10):
        attempt(hub, "ghost-user", "wrong-password-here")
    with hub.client(token) as client:
        events = client.get("/api/v1/audit-events", params={"action": "auth.lockout"}).json()["data"]
        failures = client.get("/api/v1/audit-events", params={"action": "auth.login", "outcome": "failure"}).json()["data"]
    assert len(events) == 1
    assert events[0]["target"] == {"type": "login", "id": "user:ghost-user"}
    assert events[0]["outcome"] == "failure"
    assert len(failures) == 10


def test_a_successful_login_resets_the_count(hub: HubProcess) -> None:
    for _ in range(9):
        attempt(hub, "admin", "wrong-password-here")
    assert attempt(hub, "admin", ADMIN_PASSWORD).status_code == 200
    for _ in range(9):
        assert attempt(hub, "admin", "wrong-password-here").status_code == 401
    assert attempt(hub, "admin", ADMIN_PASSWORD).status_code == 200


def test_one_address_is_limited_across_usernames_at_100(hub: HubProcess) -> None:
    for n in range(100):
        assert attempt(hub, f"user-{n // 9}", "wrong-password-here").status_code == 401
    response = attempt(hub, "admin", ADMIN_PASSWORD)
    assert response.status_code == 429


def test_lockouts_double_up_to_fifteen_minutes() -> None:
    state: ThrottleState | None = None
    now = T0
    lengths = []
    for _ in range(6):
        for _ in range(10):
            state, locked = after_failure(state, now, 10)
        assert locked and state is not None and state.locked_until is not None
        lengths.append(retry_after(state, now))
        now = state.locked_until
    assert lengths == [60, 120, 240, 480, 900, 900]


def test_failures_outside_the_window_start_a_new_count() -> None:
    state, _ = after_failure(None, T0, 10)
    for minute in range(1, 9):
        state, _ = after_failure(state, T0 + timedelta(minutes=minute), 10)
    assert state.failures == 9
    state, locked = after_failure(state, T0 + timedelta(minutes=16), 10)
    assert not locked and state.failures == 1
