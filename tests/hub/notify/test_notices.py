"""Fleet events in words: what the notifier's intake makes of each kind of event, and what it leaves out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hark_fleet.hub.events import Event
from hark_fleet.hub.notify import notices
from hark_fleet.hub.notify.notices import from_event, wanted

AT = "2026-12-06T18:00:00Z"


def event(type: str, site: str | None = "main-hall", **data: Any) -> Event:
    return Event(7, type, site, {**data, "emitted_at": AT})


def health(type: str, **fields: Any) -> Event:
    data = {
        "id": "hev_1",
        "node_id": "nod_1",
        "site": "main-hall",
        "kind": "audio.silence",
        "severity": "critical",
        "state": "open",
        "first_seen": "2026-12-06T17:55:00Z",
        "details": {"channels": ["2"], "message": "silence on 2"},
        **fields,
    }
    return event(type, **data)


def test_a_health_opening_is_a_notice_of_its_event_with_the_kind_in_words_the_channel_and_since_when_it_began() -> None:
    draft = from_event(health("health.opened"))
    assert draft is not None
    assert (draft.event_type, draft.key, draft.severity, draft.opened) == ("health.opened", "health:hev_1", "critical", True)
    assert draft.summary == "audio silent on channel 2"
    assert (draft.health_kind, draft.node_id, draft.channel, draft.site) == ("audio.silence", "nod_1", "2", "main-hall")
    assert draft.since == datetime(2026, 12, 6, 17, 55, tzinfo=UTC)
    assert draft.path == "#/health?node=nod_1&kind=audio.silence&state=any"


def test_a_resolution_shares_its_openings_key_and_a_reopening_is_an_opening_again() -> None:
    resolved = from_event(health("health.resolved", state="resolved", resolved_at="2026-12-06T18:01:00Z"))
    reopened = from_event(health("health.reopened"))
    assert resolved is not None and reopened is not None
    assert (resolved.key, resolved.opened, resolved.event_type) == ("health:hev_1", False, "health.resolved")
    assert (reopened.key, reopened.opened, reopened.event_type) == ("health:hev_1", True, "health.reopened")


def test_repeats_acknowledgements_and_suppressions_are_not_notices() -> None:
    for type in ("health.repeated", "health.acknowledged", "health.suppressed"):
        assert from_event(health(type)) is None


def test_a_notify_failed_condition_names_the_channel_it_is_about_so_it_is_never_sent_there() -> None:
    draft = from_event(
        health(
            "health.opened", node_id=None, site=None, kind="notify.failed", details={"channel_id": "nch_1", "reason": "HTTP 404"}
        )
    )
    assert draft is not None and draft.extra["about_channel_id"] == "nch_1"
    assert draft.path == "#/health?kind=notify.failed&state=any"


def test_a_node_going_offline_opens_and_coming_back_resolves_the_same_condition() -> None:
    offline = from_event(event("node.offline", node_id="nod_1", **{"from": "online"}, to="offline", at=AT))
    online = from_event(event("node.online", node_id="nod_1", **{"from": "offline"}, to="online", at=AT))
    assert offline is not None and online is not None
    assert (offline.key, offline.opened, offline.severity, offline.summary) == ("node:nod_1", True, "warning", "went offline")
    assert (online.key, online.opened, online.event_type) == ("node:nod_1", False, "node.online")
    assert offline.path == "#/nodes/nod_1"


def test_a_new_box_coming_online_is_not_a_recovery() -> None:
    assert from_event(event("node.online", node_id="nod_1", **{"from": "pending"}, to="online")) is None


def test_degraded_is_a_condition_of_its_own_that_coming_online_resolves() -> None:
    degraded = from_event(event("node.degraded", node_id="nod_1", **{"from": "online"}))
    better = from_event(event("node.online", node_id="nod_1", **{"from": "degraded"}))
    assert degraded is not None and better is not None
    assert degraded.key == better.key == "node:nod_1:degraded"
    assert (degraded.opened, better.opened) == (True, False)


def test_a_failed_recording_job_a_missed_one_an_interrupted_recording_and_a_failed_upload_are_described() -> None:
    failed = from_event(event("recording.job.failed", id="rjb_1", recording_id="rec_1", node_id="nod_1", error="disk full"))
    missed = from_event(event("recording.job.missed", id="rjb_2", recording_id="rec_2", node_id="nod_1", schedule_id="sch_1"))
    cut = from_event(event("recording.completed", id="rec_3", node_id="nod_1", name="Matinee", status="interrupted"))
    fine = from_event(event("recording.completed", id="rec_4", node_id="nod_1", name="Evening", status="completed"))
    upload = from_event(event("upload.failed", id="upi_1", recording_id="rec_1", error="HTTP 403"))
    assert failed is not None and failed.summary == "recording failed: disk full" and failed.path == "#/recordings/rec_1"
    assert missed is not None and missed.event_type == "recording.job.missed"
    assert cut is not None and cut.event_type == "recording.interrupted" and "Matinee" in cut.summary
    assert fine is None
    assert upload is not None and upload.key == "upload:upi_1" and upload.path == "#/uploads/upi_1"


def test_any_other_event_is_described_generically_so_a_new_kind_needs_no_code() -> None:
    draft = from_event(event("lifecycle.failed", id="lcj_1", node_id="nod_1", error="no space for the update"))
    info = from_event(event("schedule.occurrence.dispatched", schedule_id="sch_1"))
    assert draft is not None and info is not None
    assert (draft.event_type, draft.severity, draft.summary) == (
        "lifecycle.failed",
        "warning",
        "lifecycle failed: no space for the update",
    )
    assert draft.path == "#/nodes/nod_1"
    assert info.severity == "info"


def test_the_intake_takes_in_only_what_some_channel_subscribes_to() -> None:
    assert wanted("health.opened", None) and not wanted("schedule.occurrence.dispatched", None)
    patterns = frozenset({"health.*", "upload.failed"})
    assert wanted("health.resolved", patterns) and wanted("upload.failed", patterns)
    assert not wanted("node.offline", patterns)
    assert notices.type_matches("*", "anything.at_all")
