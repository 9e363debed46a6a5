"""The hub's retention runner on its schedule (`HARK_RETENTION_INTERVAL_S`): each run is a row, an audit event by the
system and a `recording.evicted` per recording; it deletes only what the policies let go, and what it holds stays held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.db.models import Recording

from tests.conftest import hub_database
from tests.harness import HubProcess, hub_on, wait_for
from tests.hub.api.test_channel_maps import stream_events
from tests.hub.api.test_recording_upload import completed_recording, enroll, stored_path
from tests.hub.api.test_retention_policies import aged, make_policy, provider, synced

RUNS = "/api/v1/retention-runs"


@pytest.fixture(params=["sqlite", "postgres"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubProcess]:
    """A hub that runs retention every second."""
    with hub_on(request.param, tmp_path / "hub", env_extra={"HARK_RETENTION_INTERVAL_S": "1"}) as process:
        yield process


def scheduled_runs(hub: HubProcess) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return [r for r in admin.get(RUNS, params={"trigger": "schedule"}).json()["data"] if r["finished_at"]]


def test_scheduled_runs_evict_what_expired_and_confirmed_and_hold_the_rest(hub: HubProcess) -> None:
    archive = provider(hub)
    node = enroll(hub, "north")
    takes = [completed_recording(hub, node=node, seconds=0.3)[0] for _ in range(3)]
    expired, unconfirmed, held = takes
    for take in takes:
        aged(hub, take, 40)
    synced(hub, expired, archive)
    synced(hub, held, archive)
    with hub.admin() as admin:
        assert admin.put(f"/api/v1/recordings/{held.recording_id}/legal-hold", json={"reason": "case 3"}).status_code == 200
    paths = {take.recording_id: stored_path(hub, take) for take in takes}
    make_policy(hub, keep_on_hub_days=30, required_providers=[archive])

    def evicted() -> bool:
        with hub_database(hub):
            return Recording.get_by_id(expired.recording_id).hub_evicted_at is not None

    wait_for(evicted, 30, "a scheduled run to evict the expired, confirmed recording")
    run = wait_for(lambda: next((r for r in scheduled_runs(hub) if r["deleted"]), None), 30, "the run that evicted it")
    assert run["details"]["deleted"][0][0] == expired.recording_id and run["actor"]["type"] == "system"
    held_reasons = dict(run["details"]["held"])
    assert held_reasons[unconfirmed.recording_id] == f"not yet confirmed on provider {archive}"
    assert held_reasons[held.recording_id] == "legal hold"
    assert not paths[expired.recording_id].exists()
    assert paths[unconfirmed.recording_id].exists() and paths[held.recording_id].exists()
    with hub.admin() as admin:
        audits = admin.get("/api/v1/audit-events", params={"target_id": run["id"]}).json()["data"]
    assert [(a["action"], a["actor"]["type"]) for a in audits] == [("retention.run", "system")]
    events = [e for e in stream_events(hub, "recording.evicted") if e["recording_id"] == expired.recording_id]
    assert len(events) == 1 and events[0]["run_id"] == run["id"] and events[0]["emergency"] is False
    # Later runs change nothing more: what is held stays held.
    wait_for(lambda: len([r for r in scheduled_runs(hub) if r["id"] > run["id"]]) >= 2, 30, "two more scheduled runs")
    assert paths[unconfirmed.recording_id].exists() and paths[held.recording_id].exists()
    assert len([e for e in stream_events(hub, "recording.evicted") if e["recording_id"] == expired.recording_id]) == 1
