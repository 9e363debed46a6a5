"""The notification outbox on a real database: notices routed to the channels that subscribe (storms as one message,
flapping told once per hold, quiet hours deferred, resolutions threaded), claimed with a lease, each attempt recorded
(delivered, retried with backoff, failed at once on a 4xx, given up), the hub's notify.failed condition, and a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peewee
import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import (
    HealthEvent,
    Node,
    Notification,
    NotificationChannel,
    NotificationDelivery,
    NotificationNotice,
    Site,
)
from hark_fleet.hub.events import Event, EventBus
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.notify.message import message_from_dict
from hark_fleet.hub.notify.notices import from_event
from hark_fleet.hub.notify.send import Attempt
from hark_fleet.hub.notify.worker import Notifier
from hark_fleet.hub.services import notify_outbox
from hark_fleet.hub.services.notify_outbox import Outcome, claim_due, record_attempt, requeue_sending, route, write_notices

from tests.harness import database_on

URL = "https://hub.example"
AFTER_WINDOW = timedelta(seconds=6)  # the default storm window is 5 s


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[peewee.Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def channel(channel_id: str, events: list[str], site: str | None = None, **subscription: Any) -> str:
    sub = {"events": events, "health_kinds": [], "sites": [], "min_severity": "warning", "quiet_hours": None, **subscription}
    NotificationChannel.create(
        id=channel_id, name=channel_id, kind="webhook", site=site, config={"url": "http://x"}, subscription=sub
    )
    return channel_id


def nodes(count: int, site: str = "main-hall") -> list[str]:
    ids = [f"nod_{i:02d}" for i in range(count)]
    for i, node_id in enumerate(ids):
        Node.create(id=node_id, name=f"Box {i}", site=site, status="online")
    return ids


def offline(node_id: str, site: str = "main-hall") -> Event:
    return Event(1, "node.offline", site, {"node_id": node_id, "from": "online", "to": "offline", "at": "2026-12-06T18:00:00Z"})


def online(node_id: str, site: str = "main-hall") -> Event:
    return Event(2, "node.online", site, {"node_id": node_id, "from": "offline", "to": "online", "at": "2026-12-06T18:01:00Z"})


def silence(event_id: str = "hev_1", node_id: str = "nod_00", resolved: bool = False, severity: str = "warning") -> Event:
    data = {"id": event_id, "node_id": node_id, "kind": "audio.silence", "severity": severity}
    data |= {"first_seen": "2026-12-06T17:59:00Z", "details": {"channels": ["2"]}}
    return Event(3, "health.resolved" if resolved else "health.opened", "main-hall", data)


def take_in(*events: Event) -> None:
    drafts = [from_event(e) for e in events]
    write_notices([d for d in drafts if d is not None])


def route_later(seconds: float = 6) -> notify_outbox.RouteResult:
    return route(URL, utcnow() + timedelta(seconds=seconds))


def notifications(channel_id: str) -> list[Notification]:
    return list(
        Notification.select().where(Notification.channel_id == channel_id).order_by(Notification.created_at, Notification.id)
    )


def test_notices_go_only_to_the_channels_that_subscribe_to_them_and_are_all_marked_routed(db: peewee.Database) -> None:
    nodes(1)
    channel("nch_nodes", ["node.*"])
    channel("nch_health", ["health.opened"])
    channel("nch_other_site", ["node.offline"], site="foyer")
    NotificationChannel.create(id="nch_off", name="off", kind="webhook", enabled=False, subscription={"events": ["node.offline"]})
    take_in(offline("nod_00"), silence())
    route_later()
    [to_nodes] = notifications("nch_nodes")
    [to_health] = notifications("nch_health")
    assert notifications("nch_other_site") == [] and notifications("nch_off") == []
    assert (to_nodes.kind, to_nodes.title, to_nodes.state, to_nodes.thread_key) == (
        "node.offline",
        "Box 0 went offline",
        "queued",
        "node:nod_00",
    )
    assert to_health.title == "Box 0: audio silent on channel 2"
    message = message_from_dict(to_health.message)
    assert message.items[0].url == f"{URL}/#/health?node=nod_00&kind=audio.silence&state=any"
    assert message.since == datetime(2026, 12, 6, 17, 59, tzinfo=UTC)
    assert not NotificationNotice.select().where(NotificationNotice.routed == False).exists()  # noqa: E712


def test_a_notice_waits_for_its_storm_window_before_it_is_routed(db: peewee.Database) -> None:
    nodes(1)
    channel("nch_a", ["node.offline"])
    take_in(offline("nod_00"))
    waiting = route(URL, utcnow())
    assert (waiting.routed, waiting.waiting) == (0, 1) and notifications("nch_a") == []
    assert route_later().queued == 1


def test_fifty_boxes_going_offline_together_are_one_message_per_channel_with_the_count_and_the_list(db: peewee.Database) -> None:
    ids = nodes(50)
    Site.create(id="main-hall", name="Main hall")  # messages name the site as people call it
    channel("nch_a", ["node.offline"])
    channel("nch_b", ["node.*", "health.opened"])
    take_in(*(offline(n) for n in ids))
    route_later()
    for channel_id in ("nch_a", "nch_b"):
        [storm] = notifications(channel_id)
        message = message_from_dict(storm.message)
        assert storm.title == "50 boxes of Main hall went offline" and storm.item_count == 50
        assert message.site == "Main hall" and storm.site == "main-hall"  # the row keeps the id: site scope
        assert {i.node_name for i in message.items} == {f"Box {i}" for i in range(50)}
        assert message.items[0].url is not None and message.items[0].url.startswith(f"{URL}/#/nodes/nod_")
        assert message.url == f"{URL}/#/fleet?site=main-hall"
        assert storm.thread_key.startswith("storm:node.offline:main-hall:")


def test_a_condition_flapping_within_the_hold_is_told_once_and_its_held_opening_comes_when_the_hold_ends(
    db: peewee.Database,
) -> None:
    nodes(1)
    channel("nch_a", ["node.offline", "node.online"])
    take_in(offline("nod_00"))
    route_later()
    take_in(online("nod_00"))
    route_later(12)
    take_in(offline("nod_00"))
    route_later(18)
    sent = notifications("nch_a")
    assert [(n.kind, n.opened) for n in sent] == [("node.offline", True), ("node.online", False)]
    assert sent[1].thread_key == sent[0].thread_key == "node:nod_00"
    assert message_from_dict(sent[1].message).since == datetime(2026, 12, 6, 18, 0, tzinfo=UTC)  # when it went offline
    route(URL, utcnow() + timedelta(seconds=400))  # the hold (300 s) is over and the box is still offline
    assert [(n.kind, n.opened) for n in notifications("nch_a")][-1] == ("node.offline", True)
    assert len(notifications("nch_a")) == 3


def test_quiet_hours_defer_a_notification_until_they_end_and_a_critical_one_breaks_through(db: peewee.Database) -> None:
    nodes(1)
    now = utcnow()
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=2)).strftime("%H:%M")
    quiet = {"start": start, "end": end, "time_zone": "UTC", "critical_breaks_through": True}
    channel("nch_quiet", ["health.opened"], quiet_hours=quiet)
    take_in(silence("hev_1"), silence("hev_2", severity="critical"))
    route_later()
    by_severity = {n.severity: n for n in notifications("nch_quiet")}
    deferred, urgent = by_severity["warning"], by_severity["critical"]
    assert deferred.next_attempt_at is not None and deferred.next_attempt_at > now + timedelta(hours=1)
    assert deferred.deferred_reason == f"quiet hours until {end} UTC"
    assert urgent.next_attempt_at is None and urgent.deferred_reason is None
    assert [c.id for c in claim_due(8)] == [urgent.id]


def test_a_resolution_threads_with_its_delivered_opening_through_the_providers_reference(db: peewee.Database) -> None:
    nodes(1)
    channel("nch_a", ["health.opened", "health.resolved"])
    take_in(silence())
    route_later()
    [opening] = claim_due(8)
    record_attempt(opening, Outcome("delivered", 200, 12.0, "HTTP 200", "", provider_ref="$event1"))
    take_in(silence(resolved=True))
    route_later(12)
    [resolution] = claim_due(8)
    assert (resolution.opened, resolution.thread_key, resolution.reply_ref) == (False, "health:hev_1", "$event1")
    assert message_from_dict(resolution.message).thread_key == "health:hev_1"


def test_a_notify_failed_condition_is_never_sent_to_the_channel_it_is_about(db: peewee.Database) -> None:
    channel("nch_broken", ["health.opened"])
    channel("nch_ok", ["health.opened"])
    failed = Event(4, "health.opened", None, {"id": "hev_9", "node_id": None, "kind": "notify.failed", "severity": "warning",
                                               "details": {"channel_id": "nch_broken", "reason": "HTTP 404"}})  # fmt: skip
    take_in(failed)
    route_later()
    assert notifications("nch_broken") == []
    [told] = notifications("nch_ok")
    assert told.title == "Hub: a notification could not be delivered"


def notifier() -> Notifier:
    hub = SimpleNamespace(
        metrics=HubMetrics(), events=EventBus(), config=SimpleNamespace(notify_backoff_base_s=0.2, notify_give_up_s=60.0)
    )
    return Notifier(hub)  # type: ignore[arg-type]


def one_claimed() -> notify_outbox.Claimed:
    nodes(1)
    channel("nch_a", ["node.offline"])
    take_in(offline("nod_00"))
    route_later()
    [claimed] = claim_due(8)
    return claimed


def test_a_5xx_is_retried_after_a_jittered_backoff_and_a_4xx_fails_at_once_with_the_providers_message(
    db: peewee.Database,
) -> None:
    claimed = one_claimed()
    now = datetime.now(UTC)
    retry = notifier().decide(claimed, Attempt(503, "busy", {}, 5.0, message="HTTP 503"), now)
    assert retry.outcome == "retry" and retry.next_attempt_at is not None
    assert retry.next_attempt_at <= utcnow() + timedelta(seconds=0.2 + 1)
    honoured = notifier().decide(claimed, Attempt(429, None, {"Retry-After": "30"}, 5.0), now)
    assert honoured.next_attempt_at is not None and honoured.next_attempt_at >= utcnow() + timedelta(seconds=29)
    refused = notifier().decide(claimed, Attempt(404, "no such hook", {}, 5.0, message="HTTP 404"), now)
    assert refused.outcome == "failed" and "no such hook" in refused.reason and "not retried" in refused.reason
    blocked = notifier().decide(claimed, Attempt(None, "loopback", {}, 0.0, refused=True, message="refused: loopback"), now)
    assert blocked.outcome == "failed" and blocked.reason == "refused: loopback"
    record_attempt(claimed, retry)
    row = Notification.get_by_id(claimed.id)
    assert (row.state, row.attempts, row.last_error) == ("retrying", 1, "HTTP 503: busy")
    [delivery] = NotificationDelivery.select().where(NotificationDelivery.notification_id == claimed.id)
    assert (delivery.outcome, delivery.response_code, delivery.attempt) == ("retry", 503, 1)


def test_a_notification_still_failing_past_the_give_up_time_fails(db: peewee.Database) -> None:
    claimed = one_claimed()
    later = datetime.now(UTC) + timedelta(seconds=61)
    given_up = notifier().decide(claimed, Attempt(None, "timed out", {}, 10000.0), later)
    assert given_up.outcome == "failed" and given_up.reason.startswith("given up after 1 attempts over 60 s")


def test_a_failure_opens_the_hubs_notify_failed_condition_and_the_channels_next_delivery_resolves_it(db: peewee.Database) -> None:
    claimed = one_claimed()
    opened = record_attempt(claimed, Outcome("failed", 404, 3.0, "HTTP 404", "HTTP 404 (not retried)"), "nch_a")
    assert [e.type for e in opened.events] == ["health.opened"]
    event = HealthEvent.get(HealthEvent.kind == "notify.failed")
    assert event.state == "open" and event.node_id is None
    assert event.details == {
        "channel_id": "nch_a",
        "channel_name": "nch_a",
        "notification_id": claimed.id,
        "reason": "HTTP 404 (not retried)",
    }
    take_in(offline("nod_other"))
    route_later()
    [next_one] = claim_due(8)
    resolved = record_attempt(next_one, Outcome("delivered", 200, 3.0, "HTTP 200", ""))
    assert [e.type for e in resolved.events] == ["health.resolved"]
    assert HealthEvent.get_by_id(event.id).state == "resolved"
    assert NotificationChannel.get_by_id("nch_a").last_delivery_at is not None


def test_an_attempt_under_an_old_lease_changes_nothing(db: peewee.Database) -> None:
    claimed = one_claimed()
    assert requeue_sending() == 1
    assert record_attempt(claimed, Outcome("delivered", 200, 1.0, "HTTP 200", "")).stale
    assert Notification.get_by_id(claimed.id).state == "queued"


def test_a_restart_queues_again_what_was_sending_and_it_is_claimed_again(db: peewee.Database) -> None:
    claimed = one_claimed()
    assert Notification.get_by_id(claimed.id).state == "sending"
    assert requeue_sending() == 1
    [again] = claim_due(8)
    assert again.id == claimed.id and again.epoch > claimed.epoch and again.attempt == 2


def test_a_channel_deleted_or_disabled_before_sending_is_claimed_as_such(db: peewee.Database) -> None:
    nodes(1)
    channel("nch_a", ["node.offline"])
    take_in(offline("nod_00"))
    route_later()
    NotificationChannel.update(enabled=False).where(NotificationChannel.id == "nch_a").execute()
    [claimed] = claim_due(8)
    assert claimed.channel_state == "disabled"


def test_the_overview_counts_the_outbox(db: peewee.Database) -> None:
    claimed = one_claimed()
    record_attempt(claimed, Outcome("delivered", 200, 1.0, "HTTP 200", ""))
    figures = notify_outbox.overview()
    assert figures["delivered_24h"] == 1 and figures["queued"] == 0 and figures["oldest_queued_at"] is None


def test_a_notification_to_a_channel_disabled_meanwhile_fails_without_raising_notify_failed(db: peewee.Database) -> None:
    claimed = one_claimed()
    disabled = notify_outbox.Claimed(**{**{f: getattr(claimed, f) for f in claimed.__slots__}, "channel_state": "disabled"})
    recorded = record_attempt(disabled, Outcome("failed", None, None, "the channel is disabled", "the channel is disabled"))
    assert recorded.events == [] and Notification.get_by_id(claimed.id).state == "failed"
    assert not HealthEvent.select().where(HealthEvent.kind == "notify.failed").exists()


def test_a_flap_gate_forgets_only_what_it_would_judge_the_same_and_openings_told_long_ago() -> None:
    now = datetime(2026, 12, 6, 18, 0)
    state = {
        "held": {"last_opened_at": (now - timedelta(days=40)).isoformat(), "notified_open": False, "pending": {"key": "held"}},
        "told_open": {"last_opened_at": (now - timedelta(days=2)).isoformat(), "notified_open": True, "pending": None},
        "told_long_ago": {"last_opened_at": (now - timedelta(days=31)).isoformat(), "notified_open": True, "pending": None},
        "in_hold": {"last_opened_at": (now - timedelta(seconds=100)).isoformat(), "notified_open": False, "pending": None},
        "hold_over": {"last_opened_at": (now - timedelta(seconds=400)).isoformat(), "notified_open": False, "pending": None},
    }
    assert sorted(notify_outbox._pruned(state, 300, now)) == ["held", "in_hold", "told_open"]


def test_the_intake_writes_only_what_a_channel_wants_within_a_moment_and_a_nudge_brings_in_a_new_channels_types(
    tmp_path: Path,
) -> None:
    from hark_fleet.hub.cluster.leases import LeaseManager
    from hark_fleet.hub.db.database import HubDatabase, open_database
    from hark_fleet.hub.db.models import database_proxy

    database = HubDatabase(open_database(None, tmp_path))
    previous = database_proxy.obj
    bus = EventBus()
    hub = SimpleNamespace(
        db=database,
        events=bus,
        metrics=HubMetrics(),
        public_url=URL,
        config=SimpleNamespace(notify_backoff_base_s=0.2, notify_give_up_s=60.0),
    )
    hub.leases = LeaseManager(hub)  # type: ignore[arg-type]
    worker = Notifier(hub)  # type: ignore[arg-type]

    def stored() -> list[str]:
        return [n.event_type for n in NotificationNotice.select().order_by(NotificationNotice.created_at)]

    async def scenario() -> None:
        await asyncio.get_running_loop().run_in_executor(None, database.start)
        await database.run(channel, "nch_a", ["node.offline"])
        await worker.start()
        try:
            bus.publish("node.offline", "main-hall", {"node_id": "nod_1", "from": "online"})
            bus.publish("schedule.occurrence.dispatched", "main-hall", {"schedule_id": "sch_1"})  # nobody wants it
            await until(lambda: database.run(stored), ["node.offline"])
            await database.run(channel, "nch_b", ["schedule.occurrence.*"])
            worker.nudge()
            bus.publish("schedule.occurrence.dispatched", "main-hall", {"schedule_id": "sch_1"})
            await until(lambda: database.run(stored), ["node.offline", "schedule.occurrence.dispatched"])
        finally:
            await worker.stop()

    try:
        asyncio.run(scenario())
    finally:
        database.close()
        database_proxy.initialize(previous)


async def until(read: Any, expected: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await read()) != expected:
        assert time.monotonic() < deadline, f"{got} != {expected}"
        await asyncio.sleep(0.02)
