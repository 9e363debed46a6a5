"""The notification outbox (issue 21): notices in, routed to channels as queued notifications, claimed, sent, recorded.

Database functions the notifier (`hub.notify.worker`) runs on the database thread through `hub.db.run`:

- `write_notices`: the intake's drafts as `NotificationNotice` rows (node names looked up), in one batch.
- `route`: notices whose storm window has passed, per enabled channel: subscription, flap gate (its state kept in
  `NotificationGate`), storm grouping, quiet hours, then one `Notification` `queued` per message, and the notices
  marked routed; all in one transaction.
- `claim_due` / `record_attempt`: the delivery loop's claim (a lease epoch bumped, `sending`) and the outcome of one
  attempt (a `NotificationDelivery` row, the notification delivered, retrying or failed, the channel's
  `last_delivery_at`, and the hub's `notify.failed` condition opened or resolved).
- `requeue_sending`: at start, what a stop cut off goes back to `queued`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import (
    HealthEvent,
    Node,
    Notification,
    NotificationChannel,
    NotificationDelivery,
    NotificationGate,
    NotificationNotice,
    Site,
    database_proxy,
)
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.notify import storm, subscriptions
from hark_fleet.hub.notify.message import Item, Message, message_to_dict
from hark_fleet.hub.notify.notices import SEVERITY_RANK, NoticeDraft, health_words
from hark_fleet.hub.services import health_events, notify_settings
from hark_fleet.hub.services.listing import site_in_scope

FAILED_KIND = "notify.failed"
RESPONSE_MAX = 1000  # characters of a provider's answer kept per attempt
ROUTE_BATCH = 5000  # unrouted notices looked at per pass
GATE_FORGET = timedelta(days=30)  # a condition told open this long ago is forgotten by its channel's flap gate
NOTICE_KEEP = timedelta(days=7)  # routed notices are deleted after this (the notifications keep what was sent)
STATES_ACTIVE = ("queued", "retrying", "sending")


# -- intake ----------------------------------------------------------------------------------------


def write_notices(drafts: Sequence[NoticeDraft]) -> int:
    """The drafts as notice rows (one batch), each with its node's name; how many were written."""
    if not drafts:
        return 0
    node_ids = {d.node_id for d in drafts if d.node_id}
    names: dict[str, str] = {}
    if node_ids:
        names = {n.id: n.name for n in Node.select(Node.id, Node.name).where(Node.id.in_(sorted(node_ids)))}
    now = utcnow()
    rows = []
    for draft in drafts:
        since = draft.since or (None if draft.opened else _opening_since(draft.key)) or draft.at
        data = {
            **{k: v for k, v in draft.extra.items() if v is not None},
            "node_id": draft.node_id,
            "node_name": names.get(draft.node_id) if draft.node_id else None,
            "channel": draft.channel,
            "path": draft.path,
            "since": _naive(since).isoformat(),
        }
        rows.append(
            {
                "id": new_id("ntn"),
                "event_type": draft.event_type[:100],
                "key": draft.key[:200],
                "site": draft.site,
                "severity": draft.severity,
                "opened": draft.opened,
                "health_kind": (draft.health_kind or None) and draft.health_kind[:100],
                "at": _naive(draft.at),
                "summary": draft.summary,
                "data": data,
                "routed": False,
                "created_at": now,
            }
        )
    with database_proxy.atomic():
        for start in range(0, len(rows), 200):
            NotificationNotice.insert_many(rows[start : start + 200]).execute()
    return len(rows)


def _opening_since(key: str) -> datetime | None:
    """When the condition a resolution ends began, from its latest opening's notice (None if there is none)."""
    opening = (
        NotificationNotice.select(NotificationNotice.data)
        .where(NotificationNotice.key == key, NotificationNotice.opened == True)  # noqa: E712
        .order_by(NotificationNotice.created_at.desc())
        .first()
    )
    raw = (opening.data or {}).get("since") if opening is not None else None
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def wanted_types() -> frozenset[str]:
    """Every event type (or `prefix.*` pattern) some enabled channel subscribes to."""
    patterns: set[str] = set()
    for channel in NotificationChannel.select(NotificationChannel.subscription).where(NotificationChannel.enabled == True):  # noqa: E712
        subscription = channel.subscription or subscriptions.default()
        patterns.update(str(e) for e in subscription.get("events") or ())
    return frozenset(patterns)


# -- routing ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class RouteResult:
    routed: int = 0  # notices marked routed
    queued: int = 0  # notifications made
    waiting: int = 0  # notices still inside their storm window
    next_at: datetime | None = None  # when the earliest of those is due


def route(public_url: str, now: datetime | None = None) -> RouteResult:
    """Route the notices whose storm window has passed (and openings a flap gate held back whose hold ended)."""
    now = now or utcnow()
    settings = notify_settings.load()
    window = timedelta(seconds=float(settings.storm_window_s))
    result = RouteResult()
    with database_proxy.atomic():
        pending = list(
            NotificationNotice.select()
            .where(NotificationNotice.routed == False)  # noqa: E712
            .order_by(NotificationNotice.created_at, NotificationNotice.id)
            .limit(ROUTE_BATCH)
        )
        ready = _ready(pending, window, now, result)
        channels = list(NotificationChannel.select().where(NotificationChannel.enabled == True).order_by(NotificationChannel.id))  # noqa: E712
        gates = {
            g.channel_id: g for g in NotificationGate.select().where(NotificationGate.channel_id.in_([c.id for c in channels]))
        }
        if not ready and not any(_has_pending(g.state) for g in gates.values()):
            return result
        rows: list[dict[str, Any]] = []
        for channel in channels:
            rows.extend(_route_channel(channel, gates.get(channel.id), ready, settings, public_url, now))
        for start in range(0, len(rows), 100):
            Notification.insert_many(rows[start : start + 100]).execute()
        ids = [n.id for n in ready]
        for start in range(0, len(ids), 500):
            NotificationNotice.update(routed=True).where(NotificationNotice.id.in_(ids[start : start + 500])).execute()
        result.routed, result.queued = len(ids), len(rows)
    return result


def _ready(pending: list[NotificationNotice], window: timedelta, now: datetime, result: RouteResult) -> list[NotificationNotice]:
    """The notices whose burst is over: `window` has passed since the first notice of their burst.

    A burst is a bucket's (event type, site, direction) notices arriving within `window` of its first one; a notice
    later than that starts the next burst of its bucket, which waits for its own window.
    """
    starts: dict[tuple[str, str | None, bool], datetime] = {}
    ready: list[NotificationNotice] = []
    for notice in pending:
        bucket = (notice.event_type, notice.site, bool(notice.opened))
        start = starts.get(bucket)
        if start is None or notice.created_at - start > window:
            start = starts[bucket] = notice.created_at
        if now - start >= window:
            ready.append(notice)
        else:
            result.waiting += 1
            result.next_at = start + window if result.next_at is None else min(result.next_at, start + window)
    return ready


def _has_pending(state: Any) -> bool:
    return isinstance(state, dict) and any(isinstance(c, dict) and c.get("pending") for c in state.values())


def _storm_notice(notice: NotificationNotice) -> storm.Notice:
    return storm.Notice(
        key=notice.key,
        kind=notice.event_type,
        site=notice.site or "",
        severity=notice.severity,
        opened=bool(notice.opened),
        at=notice.created_at,
        summary=notice.id,  # the gate keeps only this notice's id; the row says the rest
    )


def _route_channel(
    channel: NotificationChannel,
    gate_row: NotificationGate | None,
    ready: list[NotificationNotice],
    settings: notify_settings.NotifySettings,
    public_url: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """The notifications for one channel, its gate's state saved."""
    subscription = channel.subscription or subscriptions.default()
    gate = storm.FlapGate(float(settings.flap_hold_s))
    if gate_row is not None and isinstance(gate_row.state, dict):
        try:
            gate.restore(gate_row.state)
        except (KeyError, TypeError, ValueError):
            pass  # a damaged state: start afresh (at worst one extra notification)
    by_id: dict[str, NotificationNotice] = {}
    admitted: list[storm.Notice] = []
    for notice in ready:
        if not _wants(channel, subscription, notice):
            continue
        candidate = _storm_notice(notice)
        if gate.admit(candidate):
            by_id[notice.id] = notice
            admitted.append(candidate)
    released = gate.due(now)
    if released:
        rows = {n.id: n for n in NotificationNotice.select().where(NotificationNotice.id.in_([r.summary for r in released]))}
        for held in released:
            if held.summary in rows:
                by_id[held.summary] = rows[held.summary]
                admitted.append(held)
    state = _pruned(gate.snapshot(), float(settings.flap_hold_s), now)
    if gate_row is None or gate_row.state != state:
        NotificationGate.insert(channel_id=channel.id, state=state, updated_at=now).on_conflict(
            conflict_target=[NotificationGate.channel_id],
            update={NotificationGate.state: state, NotificationGate.updated_at: now},
        ).execute()
    if not admitted:
        return []
    out: list[dict[str, Any]] = []
    for group in storm.group(admitted, float(settings.storm_window_s), int(settings.storm_threshold)):
        notices = [by_id[n.summary] for n in group.items]
        message = build_message(notices, public_url)
        severity = message.severity
        quiet = subscriptions.quiet_until(subscription, severity, now)
        out.append(
            {
                "id": new_id("ntf"),
                "channel_id": channel.id,
                "site": notices[0].site,  # the id (site scope); the message carries the site's name
                "kind": message.kind,
                "severity": severity,
                "opened": message.opened,
                "thread_key": message.thread_key[:200],
                "title": message.title,
                "item_count": len(message.items),
                "message": message_to_dict(message),
                "notice_ids": [n.id for n in notices],
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": quiet,
                "deferred_reason": subscriptions.describe_quiet(subscription)[:100] if quiet else None,
                "lease_epoch": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    return out


def _pruned(state: dict[str, Any], hold_s: float, now: datetime) -> dict[str, Any]:
    """The gate's state without conditions it would judge the same when forgotten (their hold over, nothing told open,
    nothing held), nor those told open more than GATE_FORGET ago (a resolution of one of those is not sent)."""
    hold = timedelta(seconds=hold_s)
    kept: dict[str, Any] = {}
    for key, condition in state.items():
        try:
            last = datetime.fromisoformat(condition["last_opened_at"]) if condition.get("last_opened_at") else None
        except (TypeError, ValueError):
            continue
        if condition.get("pending") or last is None:
            kept[key] = condition
        elif condition.get("notified_open") and now - last < GATE_FORGET:
            kept[key] = condition
        elif now - last < hold:
            kept[key] = condition
    return kept


def _wants(channel: NotificationChannel, subscription: dict[str, Any], notice: NotificationNotice) -> bool:
    data = notice.data or {}
    if data.get("about_channel_id") == channel.id:
        return False  # the hub's notify.* conditions about a channel are never sent to that channel (no loop)
    return subscriptions.matches(
        subscription,
        event_type=notice.event_type,
        health_kind=notice.health_kind,
        site=notice.site,
        severity=notice.severity,
        channel_site=channel.site,
    )


# -- messages ---------------------------------------------------------------------------------------


def _name(notice: NotificationNotice) -> str:
    data = notice.data or {}
    if data.get("node_id"):
        return str(data.get("node_name") or data["node_id"])
    return "Hub" if notice.event_type.startswith("health.") else ""


def item_title(notice: NotificationNotice) -> str:
    """'Stage left: audio silent on channel 2', 'Stage left went offline', 'Hub: hub data disk full'."""
    name = _name(notice)
    if not name:
        return notice.summary[:1:].upper() + notice.summary[1:]
    joiner = " " if notice.event_type.startswith("node.") else ": "
    return f"{name}{joiner}{notice.summary}"


def _url(public_url: str, path: str) -> str | None:
    return f"{public_url.rstrip('/')}/{path}" if path else None


def _since(notice: NotificationNotice) -> datetime:
    raw = (notice.data or {}).get("since")
    try:
        since = datetime.fromisoformat(raw) if isinstance(raw, str) else notice.at
    except ValueError:
        since = notice.at
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


def build_message(notices: list[NotificationNotice], public_url: str) -> Message:
    """One message of one notice (its condition's key as the thread) or of a storm (a count and the list)."""
    first = notices[0]
    items = tuple(
        Item(
            title=item_title(n),
            node_id=(n.data or {}).get("node_id"),
            node_name=(n.data or {}).get("node_name"),
            channel=(n.data or {}).get("channel"),
            url=_url(public_url, (n.data or {}).get("path") or ""),
        )
        for n in notices
    )
    severity = max((n.severity for n in notices), key=lambda s: SEVERITY_RANK.get(s, 0))
    since = min(_since(n) for n in notices)
    opened = bool(first.opened)
    text = _resolution_text(first) if not opened else ""
    site = site_name(first.site)  # what people call it ("Main hall"), not its id
    if len(notices) == 1:
        return Message(kind=first.event_type, title=items[0].title, severity=severity, opened=opened, site=site,  # type: ignore[arg-type]
                       since=since, thread_key=first.key, items=items, url=items[0].url, text=text)  # fmt: skip
    stamp = first.created_at.strftime("%Y%m%dT%H%M%S")
    return Message(
        kind=first.event_type,
        title=storm_title(notices, site),
        severity=severity,  # type: ignore[arg-type]
        opened=opened,
        site=site,
        since=since,
        thread_key=f"storm:{first.event_type}:{first.site or '-'}:{stamp}",
        items=items,
        url=_url(public_url, _storm_path(first)),
        text=text,
    )


def _resolution_text(notice: NotificationNotice) -> str:
    if notice.event_type == "node.online":
        return "Back online." if notice.key.count(":") == 1 else "No longer degraded."
    return ""


def site_name(site: str | None) -> str | None:
    """A site's name as people call it, or its id when it has none (or is gone)."""
    if site is None:
        return None
    row = Site.select(Site.name).where(Site.id == site).first()
    return row.name if row is not None and row.name else site


def storm_title(notices: list[NotificationNotice], site: str | None = None) -> str:
    """'12 boxes of Main hall went offline', '5 boxes of Main hall: audio silent', '4 × upload failed at Main hall'.

    `site` is the site's name (its id when left out)."""
    first, count = notices[0], len(notices)
    site = site or first.site
    where = f" of {site}" if site else ""
    if first.event_type in ("node.offline", "node.online"):
        return f"{count} boxes{where} went offline"
    if first.event_type == "node.degraded":
        return f"{count} boxes{where} are degraded"
    if first.event_type.startswith("health."):
        kinds = {n.health_kind for n in notices}
        if len(kinds) == 1 and first.health_kind:
            return f"{count} boxes{where}: {health_words(first.health_kind)}"
        return f"{count} problems{where}"
    words = first.event_type.replace(".", " ").replace("_", " ")
    return f"{count} × {words}" + (f" at {site}" if site else "")


def _storm_path(first: NotificationNotice) -> str:
    site = first.site or ""
    if first.event_type.startswith("node."):
        return f"#/fleet?site={site}" if site else "#/fleet"
    if first.event_type.startswith("health."):
        return f"#/health?site={site}&state=any" if site else "#/health?state=any"
    if first.event_type.startswith("upload."):
        return "#/uploads"
    if first.event_type.startswith("recording."):
        return "#/recordings"
    return (first.data or {}).get("path") or ""


# -- delivery ---------------------------------------------------------------------------------------


def requeue_sending() -> int:
    """Notifications a stop left `sending` go back to `queued` (their lease bumped); how many."""
    return int(
        Notification.update(state="queued", lease_epoch=Notification.lease_epoch + 1, updated_at=utcnow())
        .where(Notification.state == "sending")
        .execute()
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    epoch: int
    channel_id: str
    message: dict[str, Any]
    attempt: int  # this attempt's number, from 1
    first_attempt_at: datetime
    opened: bool
    thread_key: str
    reply_ref: str | None
    channel_state: str  # ok | gone | disabled


def claim_due(limit: int, now: datetime | None = None) -> list[Claimed]:
    """Up to `limit` due notifications (queued or retrying, their time come), each claimed `sending` with a new lease."""
    if limit <= 0:
        return []
    now = now or utcnow()
    due = (
        Notification.select()
        .where(
            Notification.state.in_(("queued", "retrying")),
            (Notification.next_attempt_at.is_null()) | (Notification.next_attempt_at <= now),
        )
        .order_by(Notification.next_attempt_at.asc(nulls="first"), Notification.created_at, Notification.id)
        .limit(limit)
    )
    claimed: list[Claimed] = []
    with database_proxy.atomic():
        rows = list(due)
        channels = {
            c.id: c
            for c in NotificationChannel.select(NotificationChannel.id, NotificationChannel.enabled).where(
                NotificationChannel.id.in_(sorted({r.channel_id for r in rows}))
            )
        }
        for row in rows:
            epoch = row.lease_epoch + 1
            changed = (
                Notification.update(
                    state="sending",
                    lease_epoch=epoch,
                    attempts=Notification.attempts + 1,
                    first_attempt_at=row.first_attempt_at or now,
                    updated_at=now,
                )
                .where(Notification.id == row.id, Notification.lease_epoch == row.lease_epoch, Notification.state == row.state)
                .execute()
            )
            if not changed:
                continue
            channel = channels.get(row.channel_id)
            claimed.append(
                Claimed(
                    id=row.id,
                    epoch=epoch,
                    channel_id=row.channel_id,
                    message=row.message or {},
                    attempt=row.attempts + 1,
                    first_attempt_at=row.first_attempt_at or now,
                    opened=bool(row.opened),
                    thread_key=row.thread_key,
                    reply_ref=None if row.opened else opening_ref(row.channel_id, row.thread_key),
                    channel_state="gone" if channel is None else ("ok" if channel.enabled else "disabled"),
                )
            )
    return claimed


def opening_ref(channel_id: str, thread_key: str) -> str | None:
    """The provider's id of the delivered opening this resolution answers (same channel and thread), if any."""
    row = (
        Notification.select(Notification.provider_ref)
        .where(
            Notification.channel_id == channel_id,
            Notification.thread_key == thread_key,
            Notification.opened == True,  # noqa: E712
            Notification.state == "delivered",
            Notification.provider_ref.is_null(False),
        )
        .order_by(Notification.delivered_at.desc())
        .first()
    )
    return row.provider_ref if row is not None else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one attempt, as the worker decided it."""

    outcome: str  # delivered | retry | failed
    status: int | None
    latency_ms: float | None
    response: str  # the provider's answer or the error, for the delivery log
    reason: str  # why (failed or retry)
    next_attempt_at: datetime | None = None
    provider_ref: str | None = None


@dataclass(slots=True)
class Recorded:
    stale: bool = False
    events: list[FleetEvent] = field(default_factory=list)


def record_attempt(claimed: Claimed, outcome: Outcome, channel_name: str | None = None, now: datetime | None = None) -> Recorded:
    """One attempt's outcome under the claim's lease: the delivery row, the notification's new state, the channel's last
    delivery, and the hub's `notify.failed` condition (opened on a failure, resolved by the channel's next delivery)."""
    now = now or utcnow()
    recorded = Recorded()
    with database_proxy.atomic():
        row = Notification.get_or_none(Notification.id == claimed.id)
        if row is None or row.lease_epoch != claimed.epoch or row.state != "sending":
            recorded.stale = True
            return recorded
        NotificationDelivery.create(
            id=new_id("ndl"),
            channel_id=claimed.channel_id,
            notification_id=claimed.id,
            attempt=claimed.attempt,
            test=False,
            at=now,
            outcome=outcome.outcome,
            latency_ms=outcome.latency_ms,
            response_code=outcome.status,
            response_message=(outcome.response or "")[:RESPONSE_MAX],
            site=row.site,
        )
        changes: dict[str, Any] = {"updated_at": now}
        if outcome.outcome == "delivered":
            changes.update(state="delivered", delivered_at=now, last_error=None, next_attempt_at=None, deferred_reason=None)
            if outcome.provider_ref:
                changes["provider_ref"] = outcome.provider_ref[:200]
            NotificationChannel.update(last_delivery_at=now).where(NotificationChannel.id == claimed.channel_id).execute()
        elif outcome.outcome == "retry":
            changes.update(state="retrying", last_error=outcome.reason[:1000], next_attempt_at=outcome.next_attempt_at)
        else:
            changes.update(state="failed", last_error=outcome.reason[:1000], next_attempt_at=None)
        Notification.update(**changes).where(Notification.id == claimed.id).execute()
        if outcome.outcome == "failed" and claimed.channel_state == "ok":
            details = {
                "channel_id": claimed.channel_id,
                "channel_name": channel_name,
                "notification_id": claimed.id,
                "reason": outcome.reason[:500],
            }
            recorded.events.extend(health_events.hub_condition(FAILED_KIND, "open", "warning", details))
        elif outcome.outcome == "delivered" and _failure_open_for(claimed.channel_id):
            recorded.events.extend(health_events.hub_condition(FAILED_KIND, "resolved", "warning", {}))
    return recorded


def _failure_open_for(channel_id: str) -> bool:
    current = (
        HealthEvent.select(HealthEvent.details)
        .where(HealthEvent.node_id.is_null(), HealthEvent.kind == FAILED_KIND, HealthEvent.state == "open")
        .first()
    )
    return current is not None and (current.details or {}).get("channel_id") == channel_id


def prune(now: datetime | None = None) -> int:
    """Delete routed notices older than NOTICE_KEEP; how many."""
    cutoff = (now or utcnow()) - NOTICE_KEEP
    return int(
        NotificationNotice.delete()
        .where(NotificationNotice.routed == True, NotificationNotice.created_at < cutoff)  # noqa: E712
        .execute()
    )


# -- figures ---------------------------------------------------------------------------------------


def overview(now: datetime | None = None, scope: SiteScope = ALL_SITES) -> dict[str, Any]:
    """Queued, retrying, sending; delivered and failed over the last 24 h; the oldest queued one's time.

    A site-limited `scope` counts only its sites' notifications (hub-wide ones are not in any site)."""
    now = now or utcnow()
    within = site_in_scope(Notification.site, scope)
    counts = {"queued": 0, "retrying": 0, "sending": 0}
    n = peewee.fn.COUNT(Notification.id).alias("n")
    active = Notification.select(Notification.state, n).where(Notification.state.in_(STATES_ACTIVE), within)
    for row in active.group_by(Notification.state):
        counts[row.state] = int(getattr(row, "n", 0))
    day = now - timedelta(hours=24)
    done: dict[str, int] = {}
    finished = Notification.select(Notification.state, n).where(
        Notification.state.in_(("delivered", "failed")), Notification.updated_at >= day, within
    )
    for row in finished.group_by(Notification.state):
        done[row.state] = int(getattr(row, "n", 0))
    oldest = (
        Notification.select(Notification.created_at)
        .where(Notification.state.in_(("queued", "retrying")), within)
        .order_by(Notification.created_at)
        .first()
    )
    return {
        **counts,
        "delivered_24h": int(done.get("delivered", 0)),
        "failed_24h": int(done.get("failed", 0)),
        "oldest_queued_at": iso(oldest.created_at) if oldest else None,
    }


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value
