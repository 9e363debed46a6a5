"""The notifier (issue 21): fleet events to notification channels, through a durable outbox (`hub.notifier`).

- Intake: a listener on the event bus (registered at construction, so nothing published before `start` is lost)
  turns each event into a notice draft (`notices.from_event`), keeps only types some enabled channel subscribes to,
  and writes the drafts as `NotificationNotice` rows in a batch on the database thread within FLUSH_S. The listener
  never blocks or raises into `EventBus.publish`.
- Router: every TICK_S and when nudged, `notify_outbox.route` turns the notices whose storm window has passed into
  queued `Notification`s per channel (subscription, flap gate, storm grouping, quiet hours) in one transaction.
- Delivery: due notifications are claimed (`sending`, lease bumped), at most MAX_IN_FLIGHT at once, sent with
  `send.deliver`, and each attempt recorded: delivered, retrying after an exponential backoff with full jitter
  (`HubConfig.notify_backoff_base_s`), or failed (a 4xx, a refused destination, a channel gone or disabled, or given
  up `notify_give_up_s` after the first attempt), which opens the hub's `notify.failed` condition; the channel's next
  delivery resolves it.
- Restart: notifications left `sending` go back to `queued`; unrouted notices are routed; flap gates are in the db.
- More than one hub (issue 24): intake runs on every instance (each takes in the events published on it); routing,
  delivery and pruning only on the instance holding the NOTIFY lease. Gaining it requeues what a dead holder left
  `sending`, as a restart does; losing it cancels the sends in flight at once (they are requeued by the next holder).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.cluster.leases import NOTIFY
from hark_fleet.hub.errors import NotFound
from hark_fleet.hub.events import Event
from hark_fleet.hub.notify import notices, retry, send
from hark_fleet.hub.notify.message import message_from_dict
from hark_fleet.hub.services import notify_outbox, notify_settings
from hark_fleet.hub.services.notification_channels import load_channel
from hark_fleet.hub.services.notify_outbox import Claimed, Outcome, RouteResult
from prometheus_client import Counter

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

FLUSH_S = 0.05  # drafts are written this soon after the first of a batch arrives
FLUSH_RETRY_S = 1.0
MAX_BUFFER = 10_000  # drafts held while the database is unreachable; older ones are dropped past this
TICK_S = 1.0  # the router's period
WANTED_REFRESH_S = 30.0  # subscribed types re-read this often (and at once on nudge)
OVERVIEW_REFRESH_S = 5.0
PRUNE_S = 3600.0  # routed notices past their keeping time are deleted this often
MAX_IN_FLIGHT = 8
STOP_WAIT_S = 5.0  # sends still running when stopping get this long; what remains is `sending` and requeued at start
SEND_TIMEOUT_S = 10.0
CHANNELS_CHANGED = "notify.channels"  # cluster message: a channel or its subscriptions changed on some instance
SPEC_TTL_S = 10.0  # a channel's unsealed configuration is reused this long between sends

EMPTY_OVERVIEW: dict[str, Any] = {
    "queued": 0,
    "retrying": 0,
    "sending": 0,
    "delivered_24h": 0,
    "failed_24h": 0,
    "oldest_queued_at": None,
}


def _tick(public_url: str) -> tuple[RouteResult, notify_settings.NotifySettings]:
    return notify_outbox.route(public_url), notify_settings.load()


class Notifier:
    """`hub.notifier`: intake, router and delivery of notifications."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._drafts: list[notices.NoticeDraft] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._wanted: frozenset[str] | None = None  # None: not read yet (the known notifiable types are taken in)
        self._wanted_at = 0.0
        self._refresh = True  # the subscribed types are to be read again (at start, on nudge, every WANTED_REFRESH_S)
        self._stale = False  # nudged and not read since: every draft is taken in, filtered when written
        self._routed_at = 0.0
        self._route_soon = False  # notices were just written: route at the next wake, not the next tick
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._delivering = False  # this instance holds the NOTIFY lease: it routes and delivers
        self._settings = notify_settings.NotifySettings()
        self._overview: dict[str, Any] = dict(EMPTY_OVERVIEW)
        self._overview_at = 0.0
        self._pruned_at = time.monotonic()
        self._specs: dict[str, tuple[float, send.ChannelSpec]] = {}
        self._rng = random.Random()
        self.dropped = 0  # drafts lost to a full buffer
        self._attempts = Counter(
            "hark_notification_attempts",
            "Notification delivery attempts, by outcome",
            ("outcome",),
            registry=hub.metrics.registry,
        )
        self._notices = Counter("hark_notification_notices", "Fleet events taken in as notices", registry=hub.metrics.registry)
        hub.events.add_listener(self._on_event)
        messages = getattr(hub, "cluster_messages", None)
        if messages is not None:
            messages.on(CHANNELS_CHANGED, self._on_channels_changed)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        await self._refresh_wanted()
        self._started = True
        if self._drafts:
            self._schedule_flush(0.0)
        self._task = asyncio.create_task(self._run(), name="notifier")
        self.hub.leases.role(NOTIFY, self._start_delivery, self._stop_delivery)
        self.hub.leases.on_nudge(NOTIFY, self._nudged)

    async def _start_delivery(self) -> None:
        """This instance holds the NOTIFY lease: what the last holder left `sending` is queued again, then delivered."""
        requeued = await self.hub.db.run(notify_outbox.requeue_sending)
        if requeued:
            log.info("notifier: %d notifications cut off by the last stop queued again", requeued)
        self._delivering = True
        self._wake_up()

    async def _stop_delivery(self) -> None:
        """The lease is given up: at a clean stop the sends get a moment; when lost, they are cancelled at once."""
        self._delivering = False
        if self._sends:
            pending = set(self._sends)
            if self.hub.leases.holds(NOTIFY):
                _, pending = await asyncio.wait(pending, timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        """Write the drafts still buffered, stop routing, give the sends in flight a moment (the rest are requeued)."""
        self._stopping = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        if self._drafts and self._started:
            await self._flush()
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=STOP_WAIT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._started = False

    def nudge(self) -> None:
        """Channels changed: read their subscriptions again and route now, here and on every other instance (their
        intake keeps only the subscribed types; the one holding the NOTIFY lease routes and delivers)."""
        self._nudged()
        messages = getattr(self.hub, "cluster_messages", None)
        if messages is not None and getattr(self.hub.leases, "on_postgres", False):
            messages.send_soon(CHANNELS_CHANGED, {})
        elif not self.hub.leases.holds(NOTIFY):
            self.hub.leases.nudge(NOTIFY)

    def _on_channels_changed(self, payload: dict[str, Any], sender: str) -> None:
        if sender != self.hub.instance_id:  # another instance's change (this one's was taken at once)
            self._nudged()

    def _nudged(self) -> None:
        self._refresh = self._stale = True
        self._specs.clear()
        self._wake_up()

    def overview(self) -> dict[str, Any]:
        """The outbox in figures (refreshed every few seconds): queued, retrying, sending, delivered and failed in 24 h."""
        return {**self._overview, "in_flight": len(self._sends), "dropped_notices": self.dropped}

    # -- intake -----------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """The bus's listener: never blocks, never raises."""
        try:
            draft = notices.from_event(event)
            if draft is None or not (self._stale or notices.wanted(draft.event_type, self._wanted)):
                return
            if len(self._drafts) >= MAX_BUFFER:
                self._drafts.pop(0)
                self.dropped += 1
            self._drafts.append(draft)
            self._notices.inc()
            self._schedule_flush(FLUSH_S)
        except Exception:  # noqa: BLE001 - the bus must not fail because of a notification
            log.exception("notifier: could not take in %s", event.type)

    def _schedule_flush(self, delay: float) -> None:
        if not self._started or self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the loop: the drafts are written with the next batch or at start
        self._flush_handle = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is not None and not self._flushing.done():
            self._schedule_flush(FLUSH_S)
            return
        self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        drafts, self._drafts = self._drafts, []
        if not self._stale:  # taken in while a nudge was being read: only what the channels read since want
            drafts = [d for d in drafts if notices.wanted(d.event_type, self._wanted)]
        if not drafts:
            return
        try:
            await self.hub.db.run(notify_outbox.write_notices, drafts)
        except Exception:  # noqa: BLE001 - kept and tried again; the bus goes on
            log.warning("notifier: could not write %d notices; trying again", len(drafts), exc_info=True)
            self._drafts = (drafts + self._drafts)[-MAX_BUFFER:]
            if not self._stopping:
                self._schedule_flush(FLUSH_RETRY_S)
            return
        self._route_soon = True
        if self._wake is not None:
            self._wake.set()

    async def _refresh_wanted(self) -> None:
        self._refresh = False
        self._wanted_at = time.monotonic()
        stale = self._stale
        try:
            self._wanted = await self.hub.db.run(notify_outbox.wanted_types)
        except Exception:  # noqa: BLE001 - the known types are taken in meanwhile
            log.warning("notifier: could not read the channels' subscriptions", exc_info=True)
            return
        if stale and not self._refresh:  # no newer nudge came while reading
            self._stale = False

    # -- router and delivery loop ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the notifier must outlive any one failed pass
                log.exception("notifier: a pass failed; trying again")

    async def _pass(self) -> None:
        now = time.monotonic()
        routing = self._route_soon or self._refresh or now - self._routed_at >= TICK_S * 0.9
        if self._refresh or now - self._wanted_at >= WANTED_REFRESH_S:
            await self._refresh_wanted()
        if not self._delivering:  # intake only: the instance holding the NOTIFY lease routes and delivers
            if now - self._overview_at >= OVERVIEW_REFRESH_S:
                self._overview_at = now
                self._overview = await self.hub.db.run(notify_outbox.overview)
            return
        if routing:
            self._routed_at, self._route_soon = now, False
            result, self._settings = await self.hub.db.run(_tick, self.hub.public_url)
            if result.queued:
                log.info("notifier: %d notices routed into %d notifications", result.routed, result.queued)
        await self._fill(routing)
        if now - self._overview_at >= OVERVIEW_REFRESH_S:
            self._overview_at = now
            self._overview = await self.hub.db.run(notify_outbox.overview)
        if now - self._pruned_at >= PRUNE_S:
            self._pruned_at = now
            await self.hub.db.run(notify_outbox.prune)

    async def _fill(self, always: bool) -> None:
        """Claim what is due into the free slots: on every routing pass, and between them once half the slots are free
        (a send finishing wakes the loop; claiming in fours keeps a busy outbox from costing a query per send)."""
        free = MAX_IN_FLIGHT - len(self._sends)
        if free <= 0 or self._stopping or not self._delivering or (not always and self._sends and free < MAX_IN_FLIGHT // 2):
            return
        for claimed in await self.hub.db.run(notify_outbox.claim_due, free):
            task = asyncio.create_task(self._send(claimed), name=f"notify {claimed.id}")
            self._sends.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        if self._wake is not None and not self._stopping:
            self._wake.set()

    async def _send(self, claimed: Claimed) -> None:
        try:
            await self._attempt(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the row stays `sending` until the next start requeues it
            log.exception("notifier: sending %s failed unexpectedly", claimed.id)

    async def _attempt(self, claimed: Claimed) -> None:
        spec: send.ChannelSpec | None = None
        outcome: Outcome
        if claimed.channel_state != "ok":
            reason = "the channel was deleted" if claimed.channel_state == "gone" else "the channel is disabled"
            outcome = Outcome("failed", None, None, reason, reason)
        else:
            spec = await self._spec(claimed.channel_id)
            if spec is None:
                outcome = Outcome("failed", None, None, "the channel was deleted", "the channel was deleted")
            else:
                try:
                    attempt = await send.deliver(
                        spec,
                        message_from_dict(claimed.message),
                        notification_id=claimed.id,
                        reply_ref=claimed.reply_ref,
                        allow_private=self._settings.allow_private_destinations,
                        timeout_s=SEND_TIMEOUT_S,
                    )
                except Exception as err:  # noqa: BLE001 - a sender bug is one failed attempt, retried
                    text = send.redactor(spec)(f"{type(err).__name__}: {err}")[:500]
                    attempt = send.Attempt(None, text, {}, 0.0, message=f"not sent: {text}")
                outcome = self.decide(claimed, attempt, datetime.now(UTC))
        recorded = await self.hub.db.run(notify_outbox.record_attempt, claimed, outcome, spec.name if spec else None)
        if recorded.stale:
            return
        self._attempts.labels(outcome.outcome).inc()
        for event in recorded.events:
            self.hub.events.publish(event.type, event.site, event.data)
        if outcome.outcome == "failed":
            log.warning("notifier: notification %s to channel %s failed: %s", claimed.id, claimed.channel_id, outcome.reason)

    async def _spec(self, channel_id: str) -> send.ChannelSpec | None:
        """The channel with its secrets unsealed, kept SPEC_TTL_S (a change of the channel nudges, which forgets them)."""
        cached = self._specs.get(channel_id)
        if cached is not None and time.monotonic() - cached[0] < SPEC_TTL_S:
            return cached[1]
        try:
            spec = await self.hub.db.run(load_channel, channel_id, self.hub.secrets)
        except NotFound:
            self._specs.pop(channel_id, None)
            return None
        self._specs[channel_id] = (time.monotonic(), spec)
        return spec

    def decide(self, claimed: Claimed, attempt: send.Attempt, now: datetime) -> Outcome:
        """Delivered, retried (when, with backoff and jitter) or failed: the verdict on one attempt."""
        response = attempt.message or ""
        if attempt.error and attempt.error not in response:
            response = f"{response}: {attempt.error}" if response else attempt.error
        latency = attempt.latency_ms
        if attempt.refused:
            return Outcome("failed", attempt.status, latency, response, response or "the destination was refused")
        verdict = retry.classify(attempt.status, attempt.error, attempt.headers, now)
        if verdict.outcome == "delivered":
            return Outcome(
                "delivered", attempt.status, latency, response or verdict.reason, "", provider_ref=attempt.provider_ref
            )
        if verdict.outcome == "failed":
            return Outcome("failed", attempt.status, latency, response or verdict.reason, verdict.reason)
        config = self.hub.config
        first = (
            claimed.first_attempt_at.replace(tzinfo=UTC) if claimed.first_attempt_at.tzinfo is None else claimed.first_attempt_at
        )
        if retry.should_give_up(first, now, config.notify_give_up_s):
            reason = f"given up after {claimed.attempt} attempts over {config.notify_give_up_s:g} s: {verdict.reason}"
            return Outcome("failed", attempt.status, latency, response or verdict.reason, reason)
        delay = retry.next_delay_s(claimed.attempt, verdict.retry_after_s, self._rng, config.notify_backoff_base_s)
        next_at = utcnow() + timedelta(seconds=delay)
        return Outcome("retry", attempt.status, latency, response or verdict.reason, verdict.reason, next_attempt_at=next_at)
