"""Helpers for the schedules API tests: sites with zones and places, nodes, schedule bodies, users."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.harness import HubProcess

SCHEDULES = "/api/v1/schedules"
PASSWORD = "schedules-test-password"
# id -> (zone, latitude, longitude)
SITES = {
    "berlin": ("Europe/Berlin", 52.52, 13.405),
    "newyork": ("America/New_York", 40.71, -74.0),
    "svalbard": ("Arctic/Longyearbyen", 78.22, 15.65),
}


def sites_with_places() -> Any:
    """A module-scoped autouse fixture making the SITES on the module's hub."""

    @pytest.fixture(scope="module", autouse=True)
    def _sites(hub: HubProcess) -> None:
        for site, (zone, lat, lon) in SITES.items():
            hub.ensure_site(site, zone, latitude=lat, longitude=lon)

    return _sites


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def enroll(hub: HubProcess, site: str | None = "berlin", tags: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": unique("sch-node"), "tags": tags or []}
    if site is not None:
        body["site"] = site
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json=body)
    assert response.status_code == 201, response.text
    node_id: str = response.json()["data"]["node"]["id"]
    return node_id


def soon(days: int = 3) -> str:
    """A local wall time at 09:00 a few days from now (inside the 31-day conflict horizon, outside the lead window)."""
    day = datetime.now(UTC).date() + timedelta(days=days)
    return f"{day.isoformat()}T09:00:00"


def body(node_ids: list[str] | None = None, **over: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": unique("Schedule"),
        "target": {"node_ids": node_ids or []},
        "start_local": soon(),
        "duration_s": 600,
        "rrule": "FREQ=DAILY",
    }
    result.update(over)
    return result


def create(hub: HubProcess, token: str | None = None, **fields: Any) -> dict[str, Any]:
    client = hub.client(token) if token else hub.admin()
    with client:
        response = client.post(SCHEDULES, json=fields)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def user_token(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    username = unique("schu")
    with hub.admin() as admin:
        response = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles, "sites": sites}
        )
    assert response.status_code == 201, response.text
    return hub.login(username, PASSWORD)


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return [e["action"] for e in reversed(events)]


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1) if month < 12 else date(year, 12, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)
