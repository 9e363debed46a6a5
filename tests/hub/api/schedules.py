"""Helpers for the schedules API tests: sites with zones and places, nodes, schedule bodies, users."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

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
    return enroll_with_credential(hub, site, tags)[0]


def enroll_with_credential(hub: HubProcess, site: str | None = "berlin", tags: list[str] | None = None) -> tuple[str, str]:
    body: dict[str, Any] = {"name": unique("sch-node"), "tags": tags or []}
    if site is not None:
        body["site"] = site
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


@contextmanager
def job_commands(hub: HubProcess, node_id: str, credential: str) -> Iterator[list[dict[str, Any]]]:
    """What the hub tells the node on `cmd/job`, heard by an MQTT client logged in as the node."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
    client.username_pw_set(node_id, credential)
    heard: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: heard.append(json.loads(m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"hark/v1/nodes/{node_id}/cmd/job", qos=1)
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    try:
        assert subscribed.wait(5), "no subscription on the hub's broker"
        yield heard
    finally:
        client.disconnect()
        client.loop_stop()


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
