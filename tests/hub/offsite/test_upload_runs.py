"""The upload queue's transitions on SQLite and PostgreSQL: promotion and its reasons, claims fenced by lease epoch,
backoff after failures, resume kept across failures and restarts, direct items never taken by the hub's route."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest
from hark_fleet.hub.db.models import Recording, Site, UploadItem, UploadPolicy, UploadProvider
from hark_fleet.hub.offsite.base import UploadResult
from hark_fleet.hub.services import upload_runs
from hark_fleet.hub.services.upload_runs import MAX_ATTEMPTS, StaleLease

from tests.harness import database_on

NOW = datetime(2026, 12, 7, 12, 0)  # naive UTC, as stored; 13:00 in Paris
SHA = "ab" * 32


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def item(item_id: str = "upl_1", route: str = "via_hub", state: str = "pending", on_hub: bool = True, **policy: Any) -> str:
    """A recording (on the hub unless `on_hub` is false), a provider, a policy and one item between them."""
    Site.get_or_create(id="paris", defaults={"name": "Paris", "time_zone": "Europe/Paris"})
    UploadProvider.get_or_create(id="prv_1", defaults={"name": "archive", "kind": "local", "config": {"path": "/x"}})
    UploadPolicy.create(id=f"pol_{item_id}", name=f"policy {item_id}", key_template="{recording_id}", route=route, **policy)
    Recording.create(
        id=f"rec_{item_id}",
        node_id="nod_1",
        site="paris",
        name="take",
        status="completed" if on_hub else "uploading",
        format="wav",
        sample_rate=48000,
        bit_depth=24,
        size_bytes=1000,
        sha256=SHA if on_hub else None,
        storage_key=f"paris/nod_1/rec_{item_id}.wav" if on_hub else None,
    )
    UploadItem.create(
        id=item_id,
        recording_id=f"rec_{item_id}",
        provider_id="prv_1",
        policy_id=f"pol_{item_id}",
        site="paris",
        node_id="nod_1",
        route=route,
        state=state,
        state_reason="waiting for the runner",
        remote_key=f"rec_{item_id}.wav",
        bytes_total=1000,
    )
    return item_id


def row(item_id: str) -> UploadItem:
    return UploadItem.get_by_id(item_id)


def test_eligible_items_are_queued_and_the_others_say_why_they_wait(db: peewee.Database) -> None:
    ready = item("upl_ready")
    not_there = item("upl_not_there", on_hub=False)
    closed = item("upl_closed", when="window", window_start="01:00", window_end="05:00")
    assert upload_runs.promote_due(NOW) == 1
    assert row(ready).state == "queued"
    assert (row(not_there).state, row(not_there).state_reason) == ("pending", upload_runs.WAITING_FOR_HUB)
    assert (row(closed).state, row(closed).state_reason) == ("pending", "outside the window 01:00-05:00 Europe/Paris")
    at_night = datetime(2026, 12, 8, 1, 30)  # 02:30 in Paris
    assert upload_runs.promote_due(at_night) == 1
    assert row(closed).state == "queued"
    UploadProvider.update(enabled=False).execute()  # a queued item whose provider is switched off goes back to pending
    upload_runs.promote_due(at_night)
    assert (row(ready).state, row(ready).state_reason) == ("pending", upload_runs.PROVIDER_DISABLED)


def test_a_claim_bumps_the_epoch_and_an_older_claims_writes_are_refused(db: peewee.Database) -> None:
    item_id = item()
    upload_runs.promote_due(NOW)
    first = upload_runs.claim(item_id, "via_hub")
    assert first is not None and first.epoch == 1 and first.size == 1000 and first.sha256 == SHA
    assert upload_runs.claim(item_id, "via_hub") is None  # already uploading
    upload_runs.progress(item_id, first.epoch, 400, {"upload_id": "u1", "parts": [1]})
    assert upload_runs.requeue_interrupted() == 1  # the hub restarted
    second = upload_runs.claim(item_id, "via_hub")
    assert second is not None and second.epoch == 2 and second.resume == {"upload_id": "u1", "parts": [1]}
    assert second.bytes_sent == 400
    with pytest.raises(StaleLease):
        upload_runs.progress(item_id, first.epoch, 900, {})
    with pytest.raises(StaleLease):
        upload_runs.finish_synced(item_id, first.epoch, UploadResult("k", SHA, "read-back sha256", 1000))
    events = upload_runs.finish_synced(item_id, second.epoch, UploadResult("rec_upl_1.wav", SHA, "read-back sha256", 1000))
    assert [e.type for e in events] == ["upload.synced"]
    synced = row(item_id)
    assert (synced.state, synced.checksum_sha256, synced.verified_by) == ("synced", SHA, "read-back sha256")
    assert synced.bytes_sent == 1000
    assert synced.resume == {} and synced.synced_at is not None
    assert events[0].data["id"] == item_id and events[0].site == "paris"


def test_a_failure_waits_a_growing_backoff_keeps_the_resume_state_and_is_queued_again_when_due(db: peewee.Database) -> None:
    item_id = item()
    upload_runs.promote_due(NOW)
    claimed = upload_runs.claim(item_id, "via_hub")
    assert claimed is not None
    upload_runs.progress(claimed.item_id, claimed.epoch, 300, {"offset": 300})
    events = upload_runs.finish_failed(item_id, claimed.epoch, "reach: 503 Service Unavailable", True, NOW, base_s=10)
    failed = row(item_id)
    assert [e.type for e in events] == ["upload.failed"] and events[0].data["last_error"] == "reach: 503 Service Unavailable"
    assert failed.state == "failed" and failed.attempts == 1 and failed.resume == {"offset": 300}
    assert NOW + timedelta(seconds=5) <= failed.next_attempt_at <= NOW + timedelta(seconds=15)
    assert upload_runs.promote_due(NOW) == 0 and row(item_id).state == "failed"
    assert upload_runs.promote_due(NOW + timedelta(seconds=16)) == 1 and row(item_id).state == "queued"
    again = upload_runs.claim(item_id, "via_hub")
    assert again is not None and again.attempts == 2 and again.resume == {"offset": 300}
    upload_runs.finish_failed(item_id, again.epoch, "reach: 503", True, NOW, base_s=10)
    assert NOW + timedelta(seconds=10) <= row(item_id).next_attempt_at <= NOW + timedelta(seconds=30)


def test_no_retry_after_max_attempts_or_for_an_error_that_will_not_go_away(db: peewee.Database) -> None:
    item_id = item()
    UploadItem.update(attempts=MAX_ATTEMPTS - 1).execute()
    upload_runs.promote_due(NOW)
    claimed = upload_runs.claim(item_id, "via_hub")
    assert claimed is not None
    upload_runs.finish_failed(item_id, claimed.epoch, "reach: down", True, NOW)
    assert row(item_id).state == "failed" and row(item_id).next_attempt_at is None
    other = item("upl_2")
    upload_runs.promote_due(NOW)
    claimed = upload_runs.claim(other, "via_hub")
    assert claimed is not None
    upload_runs.finish_failed(other, claimed.epoch, "authenticate: access denied", False, NOW)
    assert row(other).next_attempt_at is None
    assert upload_runs.promote_due(NOW + timedelta(days=30)) == 0


def test_a_released_item_is_queued_again_without_spending_an_attempt(db: peewee.Database) -> None:
    item_id = item()
    upload_runs.promote_due(NOW)
    claimed = upload_runs.claim(item_id, "via_hub")
    assert claimed is not None
    upload_runs.progress(item_id, claimed.epoch, 500, {"offset": 500})
    upload_runs.release(item_id, claimed.epoch)
    released = row(item_id)
    assert (released.state, released.attempts, released.bytes_sent, released.resume) == ("queued", 0, 500, {"offset": 500})


def test_direct_items_are_promoted_when_capture_ends_but_only_the_direct_route_claims_them(db: peewee.Database) -> None:
    item_id = item(route="direct", on_hub=False)
    Recording.update(sha256=SHA).execute()
    assert upload_runs.promote_due(NOW) == 1
    assert upload_runs.claim(item_id, "via_hub") is None
    assert upload_runs.claimable("via_hub", 10) == []
    assert upload_runs.requeue_interrupted("via_hub") == 0
    claimed = upload_runs.claim(item_id, "direct")
    assert claimed is not None and claimed.route == "direct"


def test_a_direct_upload_its_node_left_for_an_hour_is_taken_back_by_the_hub_or_queued_for_the_node(
    db: peewee.Database,
) -> None:
    on_hub, off_hub, busy = (
        item("upl_1", route="direct"),
        item("upl_2", route="direct", on_hub=False),
        item("upl_3", route="direct"),
    )
    started = NOW - timedelta(seconds=upload_runs.DIRECT_STALL_S + 1)
    UploadItem.update(state="uploading", lease_epoch=4, bytes_sent=500, resume={"upload_id": "u"}, updated_at=started).execute()
    UploadItem.update(updated_at=NOW - timedelta(seconds=60)).where(UploadItem.id == busy).execute()  # still advancing
    assert upload_runs.release_stalled_direct(NOW) == 2
    taken = UploadItem.get_by_id(on_hub)
    assert (taken.route, taken.state, taken.lease_epoch, taken.bytes_sent, taken.resume) == ("via_hub", "pending", 5, 0, {})
    assert "the hub sends its own copy" in taken.state_reason
    waiting = UploadItem.get_by_id(off_hub)
    assert (waiting.route, waiting.state, waiting.lease_epoch, waiting.resume) == ("direct", "queued", 5, {"upload_id": "u"})
    assert UploadItem.get_by_id(busy).state == "uploading"
    with pytest.raises(StaleLease):  # the node coming back with its old claim claims again
        upload_runs.progress(off_hub, 4, 600, {})


def test_the_backlog_counts_what_is_left_to_send_within_the_callers_sites(db: peewee.Database) -> None:
    item("upl_a")
    item("upl_b")
    UploadItem.update(bytes_sent=400).where(UploadItem.id == "upl_a").execute()
    assert upload_runs.backlog() == {"count": 2, "bytes": 1600}
    assert upload_runs.backlog(frozenset({"elsewhere"})) == {"count": 0, "bytes": 0}


def test_a_quick_promotion_looks_only_at_new_and_due_items_and_a_full_one_at_every_item(db: peewee.Database) -> None:
    closed = item("upl_closed", when="window", window_start="01:00", window_end="05:00")
    assert upload_runs.promote_due(NOW) == 0 and row(closed).state_reason.startswith("outside the window")
    fresh = item("upl_fresh")
    at_night = datetime(2026, 12, 8, 1, 30)
    assert upload_runs.promote_due(at_night, fresh_only=True) == 1  # the new one; the window's is left for the full pass
    assert row(fresh).state == "queued" and row(closed).state == "pending"
    assert upload_runs.promote_due(at_night) == 1 and row(closed).state == "queued"


def test_a_claim_carries_its_policys_window_and_a_release_for_a_closed_window_waits_in_pending(db: peewee.Database) -> None:
    item_id = item(when="window", window_start="01:00", window_end="05:00")
    at_night = datetime(2026, 12, 8, 1, 30)  # 02:30 in Paris
    upload_runs.promote_due(at_night)
    claimed = upload_runs.claim(item_id, "via_hub")
    assert claimed is not None and claimed.window is not None
    assert claimed.window.is_open(at_night) and not claimed.window.is_open(NOW)
    upload_runs.progress(item_id, claimed.epoch, 300, {"offset": 300})
    upload_runs.release(item_id, claimed.epoch, f"outside the window {claimed.window.describe()}")
    waiting = row(item_id)
    assert (waiting.state, waiting.state_reason) == ("pending", "outside the window 01:00-05:00 Europe/Paris")
    assert (waiting.attempts, waiting.resume) == (0, {"offset": 300})
