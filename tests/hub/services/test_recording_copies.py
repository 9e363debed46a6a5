"""Each recording's copies as retention sees them, read from a real database (SQLite and PostgreSQL), and the hub's
retention plan and evictions built on them: only confirmed copies go, oldest first in an emergency, never a held one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from hark_fleet.hub.db.models import Recording, RetentionPolicy, UploadItem, UploadProvider
from hark_fleet.hub.services import recording_copies, retention_runs
from hark_fleet.hub.services import retention_rules as rules
from hark_fleet.hub.services.audit import SYSTEM
from hark_fleet.hub.services.recording_copies import copies_of, copies_of_many, held_on_node, iter_copies, node_evicted

from tests.harness import database_on

NOW = datetime(2026, 12, 7, 6, 0)  # naive UTC, as the hub stores times
SHA = "a" * 64
MB = 1_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def recording(recording_id: str, days_ago: float = 40, **fields: Any) -> Recording:
    ended = NOW - timedelta(days=days_ago)
    row: dict[str, Any] = {
        "id": recording_id,
        "node_id": "nod_a",
        "site": "hall",
        "name": recording_id,
        "status": "completed",
        "format": "wav",
        "sample_rate": 48000,
        "bit_depth": 24,
        "started_at": ended - timedelta(seconds=60),
        "ended_at": ended,
        "size_bytes": 10 * MB,
        "sha256": SHA,
        "storage_key": f"hall/nod_a/{recording_id}.wav",
        "legal_hold": False,
        "created_at": ended - timedelta(seconds=60),
        **fields,
    }
    return Recording.create(**row)


def provider(provider_id: str = "upr_vault") -> str:
    UploadProvider.create(id=provider_id, name=provider_id, kind="local", config={"path": "/srv"})
    return provider_id


def item(recording_id: str, provider_id: str, state: str = "synced", checksum: str | None = SHA) -> None:
    UploadItem.create(
        id=f"upi_{recording_id}_{provider_id}",
        recording_id=recording_id,
        provider_id=provider_id,
        node_id="nod_a",
        site="hall",
        state=state,
        checksum_sha256=checksum,
    )


def policy(**fields: Any) -> None:
    RetentionPolicy.create(id=fields.pop("id", "rtp_1"), name=fields.pop("name", "p1"), **fields)


def reload(recording_id: str) -> Recording:
    return Recording.get_by_id(recording_id)


def test_the_hub_copy_is_confirmed_only_once_verified_and_gone_once_evicted(db: peewee.Database) -> None:
    stored = copies_of(recording("rec_stored"))
    assert stored.copy_at(rules.HUB) == rules.Copy(rules.HUB, "confirmed", SHA) and stored.is_confirmed_at(rules.HUB)
    unverified = copies_of(recording("rec_unverified", sha256=None))
    assert unverified.copy_at(rules.HUB) == rules.Copy(rules.HUB, "present", None)
    assert not unverified.is_confirmed_at(rules.HUB)
    assert not copies_of(recording("rec_never", storage_key=None, status="uploading")).has_copy_at(rules.HUB)
    evicted = copies_of(recording("rec_evicted", hub_evicted_at=NOW))
    assert not evicted.has_copy_at(rules.HUB)


def test_the_node_copy_is_present_until_the_node_reports_it_evicted(db: peewee.Database) -> None:
    assert copies_of(recording("rec_new")).has_copy_at(rules.NODE)  # not reported yet: present
    assert copies_of(recording("rec_kept", node_cache="present")).has_copy_at(rules.NODE)
    assert not copies_of(recording("rec_gone", node_cache="evicted")).has_copy_at(rules.NODE)


def test_provider_copies_are_confirmed_when_synced_with_the_originals_checksum(db: peewee.Database) -> None:
    vault, tape, disk, cloud = provider("upr_vault"), provider("upr_tape"), provider("upr_disk"), provider("upr_cloud")
    recording("rec_a")
    item("rec_a", vault)
    item("rec_a", tape, checksum="b" * 64)
    item("rec_a", disk, state="uploading", checksum=None)
    item("rec_a", cloud, state="failed", checksum=None)
    view = copies_of(reload("rec_a"))
    assert view.is_confirmed_at(rules.provider_place(vault))
    assert not view.is_confirmed_at(rules.provider_place(tape))  # a mismatch is no confirmation
    assert view.copy_at(rules.provider_place(disk)).state == "present"  # type: ignore[union-attr]
    assert not view.has_copy_at(rules.provider_place(cloud))


def test_many_recordings_load_in_batches_with_their_own_items(db: peewee.Database) -> None:
    vault = provider()
    for n in range(7):
        recording(f"rec_{n}")
        if n % 2:
            item(f"rec_{n}", vault)
    views = copies_of_many(list(Recording.select().order_by(Recording.id)))
    assert [v.is_confirmed_at(rules.provider_place(vault)) for v in views] == [n % 2 == 1 for n in range(7)]
    walked = [view.recording_id for _, view in iter_copies(Recording.select(), batch=3)]
    assert walked == sorted(f"rec_{n}" for n in range(7))


def test_tags_and_profile_come_from_the_recording(db: peewee.Database) -> None:
    view = copies_of(recording("rec_t", metadata={"tags": ["dawn", "birds"]}, profile_id="rpf_1"))
    assert view.tags == frozenset({"dawn", "birds"}) and view.profile_id == "rpf_1"
    assert copies_of(recording("rec_odd", metadata={"tags": "not-a-list"})).tags == frozenset()


def test_the_plan_expires_only_confirmed_copies_and_an_emergency_takes_the_oldest_confirmed_first(db: peewee.Database) -> None:
    vault = provider()
    policy(keep_on_hub_days=30, required_providers=[vault], min_free_bytes_hub=100 * MB)
    recording("rec_expired", days_ago=40)
    item("rec_expired", vault)
    recording("rec_young_old", days_ago=10)
    item("rec_young_old", vault)
    recording("rec_young_new", days_ago=5)
    item("rec_young_new", vault)
    recording("rec_unconfirmed", days_ago=50)
    recording("rec_held", days_ago=60, legal_hold=True)
    item("rec_held", vault)
    plan = retention_runs.plan_hub(NOW, free_bytes=75 * MB)  # 25 MB short of the floor; the expired one frees 10
    assert [(e.recording_id, e.emergency) for e in plan.evictions] == [
        ("rec_expired", False),
        ("rec_young_old", True),
        ("rec_young_new", True),
    ]
    held = dict(plan.held)
    assert held == {"rec_unconfirmed": f"not yet confirmed on provider {vault}", "rec_held": "legal hold"}
    assert plan.floor_bytes == 100 * MB and plan.shortfall_bytes == 0
    short = retention_runs.plan_hub(NOW, free_bytes=20 * MB)
    assert short.shortfall_bytes == 50 * MB  # 80 needed, 30 may go
    calm = retention_runs.plan_hub(NOW, free_bytes=500 * MB)
    assert [e.recording_id for e in calm.evictions] == ["rec_expired"]


def test_eviction_is_refused_for_a_copy_held_after_the_plan(db: peewee.Database) -> None:
    vault = provider()
    policy(keep_on_hub_days=1, required_providers=[vault])
    recording("rec_a")
    item("rec_a", vault)
    recording("rec_b")
    item("rec_b", vault)
    plan = retention_runs.plan_hub(NOW, free_bytes=10**12)
    assert [e.recording_id for e in plan.evictions] == ["rec_a", "rec_b"]
    Recording.update(legal_hold=True).where(Recording.id == "rec_b").execute()
    first = retention_runs.mark_evicted("rtr_1", plan.evictions[0], NOW)
    assert first is not None and first.type == "recording.evicted" and first.data["recording_id"] == "rec_a"
    assert retention_runs.mark_evicted("rtr_1", plan.evictions[1], NOW) is None
    assert retention_runs.mark_evicted("rtr_1", plan.evictions[0], NOW) is None  # already evicted
    assert reload("rec_a").hub_evicted_at is not None and reload("rec_b").hub_evicted_at is None
    with pytest.raises(recording_copies.Evicted) as refused:
        recording_copies.check_on_hub(reload("rec_a"))
    assert refused.value.status == 410 and "provider upr_vault" in refused.value.message


def test_node_reports_and_held_lists_touch_only_the_nodes_own_recordings(db: peewee.Database) -> None:
    recording("rec_mine")
    recording("rec_held", legal_hold=True)
    recording("rec_other", node_id="nod_b", legal_hold=True)
    assert held_on_node("nod_a") == ["rec_held"]
    assert node_evicted("nod_a", ["rec_mine", "rec_other", "rec_mine"]) == {"evicted": ["rec_mine"], "unknown": ["rec_other"]}
    assert reload("rec_mine").node_cache == "evicted" and reload("rec_other").node_cache is None
    node_evicted("nod_a", ["rec_held"])
    assert held_on_node("nod_a") == []  # the node no longer holds it: nothing to keep


def test_runs_cut_short_by_a_stop_are_closed_saying_why(db: peewee.Database) -> None:
    run = retention_runs.start_run("schedule", SYSTEM)
    assert retention_runs.run_detail(run["id"])["state"] == "running"
    assert retention_runs.close_unfinished("the hub stopped during this run") == 1
    closed = retention_runs.run_detail(run["id"])
    assert closed["finished_at"] is not None and closed["details"]["errors"] == ["the hub stopped during this run"]
    assert retention_runs.close_unfinished("again") == 0
