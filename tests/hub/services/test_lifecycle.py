"""Lifecycle job deadlines judged without a database: only time the hub could hear the node counts."""

from __future__ import annotations

from datetime import datetime, timedelta

from hark_fleet.hub.db.models import LifecycleJob
from hark_fleet.hub.services.lifecycle import REPLAY_WINDOW, RESULT_GRACE, expired, result_overdue

T0 = datetime(2026, 3, 1, 12, 0, 0)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(state: str, **fields: object) -> LifecycleJob:
    return LifecycleJob(id="lcj_1", state=state, created_at=T0, expires_at=s(60), timeout_s=30.0, **fields)


def test_a_waiting_job_expires_at_its_deadline_while_the_hub_listens() -> None:
    for state in ("queued", "sent"):
        assert not expired(job(state), s(-100), s(59))
        assert expired(job(state), s(-100), s(60))


def test_a_sent_job_whose_deadline_passed_while_the_hub_was_away_waits_for_the_nodes_replay() -> None:
    back = s(600)  # restarted (or reconnected to its broker) long after the deadline
    assert not expired(job("sent"), back, s(602))
    assert not expired(job("sent"), back, back + REPLAY_WINDOW)
    assert expired(job("sent"), back, back + REPLAY_WINDOW + timedelta(seconds=1))
    assert not expired(job("sent"), None, s(6000))  # deaf: a report could be on its way


def test_a_queued_job_never_reached_the_node_and_expires_anyway() -> None:
    assert expired(job("queued"), s(600), s(602))
    assert expired(job("queued"), None, s(602))


def test_a_running_job_fails_after_its_timeout_and_grace_counted_while_the_hub_listens() -> None:
    running = job("running", started_at=s(0))
    limit = timedelta(seconds=30) + RESULT_GRACE
    assert not result_overdue(running, s(-100), T0 + limit)
    assert result_overdue(running, s(-100), T0 + limit + timedelta(seconds=1))
    back = s(3600)  # the hub was away for an hour: the node's result may be in its outbox
    assert not result_overdue(running, back, back + timedelta(seconds=2))
    assert result_overdue(running, back, back + limit + timedelta(seconds=1))
    assert not result_overdue(running, None, s(36000))
