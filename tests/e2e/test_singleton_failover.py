"""Singleton work moves off a killed hub (issue 24): two real `hark-hub` processes on one PostgreSQL; the first
holds every lease, it is killed with SIGKILL (no goodbye), and the other holds every lease within 10 s with
larger fences, as its `/api/v1/hub-instances/leases` says; the killed instance is then listed as lost. A clean
stop hands the leases over at once and is listed as stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from hark_fleet.hub.cluster.leases import NAMES

from tests.harness import HubProcess, create_database, drop_database, wait_for

MOVE_S = 10.0  # the bound: singleton work moves within 10 s of its hub dying


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


def two_hubs(tmp_path: Path, url: str) -> tuple[HubProcess, HubProcess]:
    env = {"HARK_EMBEDDED_BROKER": "in-process"}  # each its own broker: no node takes part here
    return (
        HubProcess(tmp_path / "hub1", database_url=url, env_extra=dict(env)),
        HubProcess(tmp_path / "hub2", database_url=url, env_extra=dict(env)),
    )


def leases(hub: HubProcess) -> dict[str, dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get("/api/v1/hub-instances/leases")
    assert response.status_code == 200, response.text
    return {lease["name"]: lease for lease in response.json()["data"]}


def sole_holder(hub: HubProcess) -> str | None:
    """The instance holding every lease (as `hub` sees it), once one does."""
    now = leases(hub)
    holders = {lease["holder"] for lease in now.values() if lease["held"]}
    if len(holders) == 1 and all(lease["held"] for lease in now.values()) and set(now) >= set(NAMES):
        return holders.pop()
    return None


def instance(hub: HubProcess, instance_id: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/hub-instances/{instance_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_a_killed_hubs_singleton_work_moves_to_the_other_within_ten_seconds(tmp_path: Path, database_url: str) -> None:
    first, second = two_hubs(tmp_path, database_url)
    try:
        first.start()
        holder = wait_for(lambda: sole_holder(first), 30, "the first hub holding every lease")
        second.start()
        with second.admin() as admin:
            listed = admin.get("/api/v1/hub-instances", params={"state": "live"}).json()["data"]
        assert len(listed) == 2
        by_id = {item["id"]: item for item in listed}
        assert sorted(by_id[holder]["leases"]) == sorted(NAMES)
        other = next(i for i in by_id if i != holder)
        assert by_id[other]["leases"] == [] and by_id[other]["url"] == second.url
        fences = {name: lease["fence"] for name, lease in leases(second).items()}
        assert sole_holder(second) == holder  # the second hub takes nothing while the first renews

        assert first.proc is not None
        first.proc.kill()  # SIGKILL: no release, no goodbye
        killed_at = time.monotonic()
        first.proc.wait()
        first.proc = None
        moved = wait_for(lambda: sole_holder(second) == other, MOVE_S, "every lease held by the surviving hub", interval=0.1)
        assert moved and time.monotonic() - killed_at <= MOVE_S
        after = leases(second)
        assert all(after[name]["fence"] > fences[name] for name in NAMES), after
        wait_for(lambda: instance(second, holder)["state"] == "lost", 30, "the killed hub listed as lost")
        survivor = instance(second, other)
        assert survivor["state"] == "live" and sorted(survivor["leases"]) == sorted(NAMES)
    finally:
        for hub in (first, second):
            if hub.proc is not None:
                hub.stop()


def test_a_cleanly_stopped_hub_hands_its_leases_over_at_once_and_is_listed_stopped(tmp_path: Path, database_url: str) -> None:
    first, second = two_hubs(tmp_path, database_url)
    try:
        first.start()
        holder = wait_for(lambda: sole_holder(first), 30, "the first hub holding every lease")
        second.start()
        other = wait_for(lambda: next((i for i in _live_ids(second) if i != holder), None), 30, "the second hub listed as live")
        assert first.stop() == 0  # SIGTERM: roles stop, leases released, instance marked stopped
        assert all(not lease["held"] or lease["holder"] == other for lease in leases(second).values())  # released
        # released with expires_at = now: taken at the survivor's next renewal (every 2 s), not after the 6 s TTL
        wait_for(lambda: sole_holder(second) == other, MOVE_S, "every lease held by the surviving hub", interval=0.1)
        stopped = instance(second, holder)
        assert stopped["state"] == "stopped" and stopped["stopped_at"] is not None and stopped["leases"] == []
    finally:
        for hub in (first, second):
            if hub.proc is not None:
                hub.stop()


def _live_ids(hub: HubProcess) -> list[str]:
    with hub.admin() as admin:
        return [item["id"] for item in admin.get("/api/v1/hub-instances", params={"state": "live"}).json()["data"]]


def test_a_schedule_saved_on_the_other_hub_is_dispatched_at_once_by_the_holder(tmp_path: Path, database_url: str) -> None:
    """The dispatcher's nudge reaches the instance holding its lease: with passes an hour apart, a schedule saved
    through the hub that does not dispatch has its jobs within seconds."""
    env = {"HARK_EMBEDDED_BROKER": "in-process", "HARK_SCHEDULE_DISPATCH_INTERVAL_S": "3600"}
    first = HubProcess(tmp_path / "hub1", database_url=database_url, env_extra=dict(env))
    second = HubProcess(tmp_path / "hub2", database_url=database_url, env_extra=dict(env))
    try:
        first.start()
        holder = wait_for(lambda: sole_holder(first), 30, "the first hub holding every lease")
        second.start()
        wait_for(lambda: len(_live_ids(second)) == 2, 30, "both hubs live")
        with second.admin() as admin:
            node = admin.post("/api/v1/nodes/enroll", json={"name": "box"}).json()["data"]["node"]["id"]
            start = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:00")
            body = {
                "name": "Soon",
                "target": {"node_ids": [node]},
                "start_local": start,
                "duration_s": 600,
                "rrule": "FREQ=DAILY",
                "time_zone": "UTC",
            }
            created = admin.post("/api/v1/schedules", json=body)
            assert created.status_code == 201, created.text
            schedule_id = created.json()["data"]["id"]
        assert sole_holder(second) == holder  # the first hub dispatches, not the one the schedule was saved on

        def jobs() -> int:
            with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM recording_job WHERE schedule_id = %s", (schedule_id,))
                return int(cur.fetchone()[0])

        wait_for(jobs, 20, "the schedule's job, dispatched by the holder after the nudge", interval=0.2)
    finally:
        for hub in (first, second):
            if hub.proc is not None:
                hub.stop()
