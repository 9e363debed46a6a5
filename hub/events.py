"""The fleet events stream: numbered events, a bounded replay buffer, and bounded subscriber queues.

On SQLite (one hub) events are numbered here and delivered as they are published. On PostgreSQL (`share`: one
hub or several, issue 24) they are numbered by the shared event log: `publish` queues the event, a writer appends
the queue in small batches (see hub.cluster.event_log: ids commit in increasing order, a NOTIFY follows), and
every instance, the publishing one too, delivers the batch to its subscribers when the NOTIFY arrives, with the
log's id, so a client may resume with `Last-Event-ID` on any instance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.cluster import event_log
from hark_fleet.hub.outbox import Outbox
from hark_fleet.protocol.backoff import backoff_delay

if TYPE_CHECKING:
    from hark_fleet.hub.cluster.pg_notify import PgNotify
    from hark_fleet.hub.db.database import HubDatabase

log = logging.getLogger(__name__)

REPLAY = 5000  # events kept for `Last-Event-ID` resume
QUEUE = 1000  # events a subscriber's socket may leave unsent before it is dropped
WRITE_BATCH = 200  # events appended to the shared log in one transaction
PENDING_MAX = 50_000  # events waiting for the shared log (the database is unreachable) before the oldest are dropped
CATCH_UP_PAGE = 1000  # log rows read at once by an instance that missed a NOTIFY
PRUNE_EVERY_S = 600.0  # how often each instance prunes the shared log (jittered)


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """Something a change caused, for the events stream once its transaction commits: `node.online`, ..."""

    type: str
    site: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    site: str | None
    data: dict[str, Any]

    def sse(self) -> bytes:
        payload = json.dumps({**self.data, "type": self.type}, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.type}\ndata: {payload}\n\n".encode()


class Subscription:
    """One stream client: what it may see, and its outbox of encoded events (dropped when it fell too far behind)."""

    def __init__(self, scope: SiteScope, types: frozenset[str] | None) -> None:
        self.scope = scope
        self.types = types
        self.outbox = Outbox(QUEUE)
        self.after = 0  # shared log: live events up to this id came in the backlog

    @property
    def dropped(self) -> bool:
        return self.outbox.dropped

    def wants(self, event: Event) -> bool:
        return event.id > self.after and self.may_see(event)

    def may_see(self, event: Event) -> bool:
        """Its sites and types (`wants`: and not already sent in its backlog)."""
        return self.scope.allows(event.site) and (self.types is None or event.type in self.types)


class EventBus:
    """Publish fleet events to live subscribers and keep the last REPLAY for resumption."""

    def __init__(self) -> None:
        self._next = 1
        self._buffer: deque[Event] = deque(maxlen=REPLAY)
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []  # events published on this instance
        self._everywhere: list[Callable[[Event], None]] = []  # every instance's events
        # the shared log (PostgreSQL), once `share`d
        self._db: HubDatabase | None = None
        self._pending: list[tuple[str, str | None, dict[str, Any], str]] = []  # type, site, data, data's JSON
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last: int | None = None  # the last log id delivered here (None: not started)
        self._catching_up: asyncio.Task[None] | None = None
        self._catch_up_again = False
        self._stopping = False
        self.dropped = 0  # events lost because the log could not be written for too long

    @property
    def shared(self) -> bool:
        return self._db is not None

    def add_listener(self, listener: Callable[[Event], None], everywhere: bool = False) -> None:
        """Call `listener` on the loop with every event published on this instance (the notifier's intake), or
        with `everywhere` every event of the deployment, once on this instance, whichever instance published it.
        On PostgreSQL both get the event once it is in the shared log, with the log's id. On SQLite (one hub)
        both are the same: every event as it is published, before subscribers see it."""
        (self._everywhere if everywhere else self._listeners).append(listener)

    def share(self, db: HubDatabase, notify: PgNotify) -> None:
        """Number and deliver events through the shared event log (PostgreSQL); before `notify` starts."""
        self._db = db
        notify.listen(event_log.CHANNEL, self._notified)
        notify.on_reconnect(self._catch_up)

    async def start(self) -> None:
        """Shared log: deliver from the log's end on, write what was published so far, prune from time to time."""
        if self._db is None:
            return
        self._stopping = False
        self._last = await self._db.run(event_log.last_id, self._db.db)
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write_forever()), asyncio.create_task(self._prune_forever())]
        if self._pending:
            self._wake.set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is still queued (for up to `timeout_s`), then stop writing and reading the log."""
        if self._db is None or not self._tasks:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        writer, pruner = self._tasks
        pruner.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout_s)
        except TimeoutError:
            log.warning("%d events not written to the shared event log at stop", len(self._pending))
        for task in (writer, pruner, self._catching_up):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._tasks = []

    def publish(self, type: str, site: str | None, data: dict[str, Any]) -> Event | None:
        """Deliver an event (SQLite: now, and return it) or queue it for the shared log (PostgreSQL: None)."""
        data = {**data, "emitted_at": iso(utcnow())}
        if self._db is not None:
            if len(self._pending) >= PENDING_MAX:
                del self._pending[:WRITE_BATCH]
                self.dropped += WRITE_BATCH
                log.warning("the shared event log cannot be written: %d events dropped so far", self.dropped)
            self._pending.append((type, site, data, event_log.encode_data(data)))
            if self._wake is not None:
                self._wake.set()
            return None
        event = Event(self._next, type, site, data)
        self._next += 1
        self._call(self._listeners, event)
        self._call(self._everywhere, event)
        self._deliver(event)
        return event

    def _call(self, listeners: list[Callable[[Event], None]], event: Event) -> None:
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", event.type)

    def _deliver(self, event: Event) -> None:
        """To the replay buffer and every subscriber that wants it, encoded once."""
        self._buffer.append(event)
        payload: bytes | None = None  # encoded once, for every subscriber
        for sub in list(self._subscribers):
            if not sub.wants(event):
                continue
            if payload is None:
                payload = event.sse()
            if not sub.outbox.put(payload):
                self._subscribers.discard(sub)

    # -- the shared log --------------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        """Append the queue to the log, a batch per transaction, in order; retried with backoff while it fails."""
        assert self._db is not None and self._wake is not None
        db, attempt = self._db, 0
        while True:
            if not self._pending:
                if self._stopping:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch = self._pending[:WRITE_BATCH]
            try:
                prev, ids = await db.run(event_log.write_batch, db.db, [(t, s, text) for t, s, _, text in batch], utcnow())
            except Exception as err:  # noqa: BLE001 - the database is away: keep the events, try again
                if self._stopping and attempt >= 2:
                    return
                log.warning("writing %d events to the shared event log failed (%s); retrying", len(batch), err)
                await asyncio.sleep(backoff_delay(attempt, 0.2, 5.0))
                attempt += 1
                continue
            attempt = 0
            del self._pending[: len(batch)]
            events = [Event(id, type, site, data) for id, (type, site, data, _) in zip(ids, batch, strict=True)]
            for event in events:
                self._call(self._listeners, event)
            self._offer(prev, events, ids[-1])  # this instance's own batch need not wait for its NOTIFY

    def _notified(self, payload: str) -> None:
        try:
            prev, rows, last = event_log.read_notice(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored an events notification that is not one: %.200s", payload)
            return
        events = None if rows is None else [Event(*row) for row in rows]
        self._offer(prev, events, last)

    def _offer(self, prev: int, events: list[Event] | None, last: int) -> None:
        """A batch of the log that followed id `prev` and ended at `last`: delivered when it follows what was
        delivered here, read from the log when something before it was missed."""
        if self._last is None:
            return  # not started: delivery starts from the log's end
        if events is not None and prev <= self._last:
            for event in events:
                if event.id > self._last:
                    self._deliver_shared(event)
        elif last > self._last:
            self._catch_up()

    def _deliver_shared(self, event: Event) -> None:
        self._last = event.id
        self._call(self._everywhere, event)
        self._deliver(event)

    def _catch_up(self) -> None:
        """Read the log past what was delivered here (a NOTIFY missed, the listening connection lost)."""
        if self._db is None or self._last is None:
            return
        if self._catching_up is not None and not self._catching_up.done():
            self._catch_up_again = True
            return
        self._catching_up = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self._db is not None
        attempt = 0
        while True:
            self._catch_up_again = False
            assert self._last is not None
            try:
                rows = await self._db.run(event_log.read_after, self._db.db, self._last, CATCH_UP_PAGE)
            except Exception as err:  # noqa: BLE001 - retried; the next NOTIFY would ask again anyway
                log.warning("reading the shared event log failed (%s); retrying", err)
                await asyncio.sleep(backoff_delay(attempt, 0.2, 5.0))
                attempt += 1
                continue
            attempt = 0
            for row in rows:
                if row[0] > self._last:  # contiguous: ids commit in order, NOTIFYs delivered meanwhile come first
                    self._deliver_shared(Event(*row))
            if len(rows) < CATCH_UP_PAGE and not self._catch_up_again:
                return

    async def _prune_forever(self) -> None:
        assert self._db is not None
        db = self._db
        while True:
            await asyncio.sleep(PRUNE_EVERY_S * random.uniform(0.5, 1.5))
            try:
                pruned = await db.run(event_log.prune, db.db, utcnow())
            except Exception as err:  # noqa: BLE001 - the next round tries again
                log.warning("pruning the shared event log failed: %s", err)
                continue
            if pruned:
                log.info("pruned %d events from the shared event log", pruned)

    # -- subscribers -----------------------------------------------------------------------------------------

    def subscribe(
        self, scope: SiteScope, types: frozenset[str] | None, after: int | None
    ) -> tuple[Subscription, list[Event], bool]:
        """A new subscription, the buffered events after `after` it should see first, and whether
        the buffer still reached back that far (False: some events were lost to the client)."""
        sub = Subscription(scope, types)
        complete = True
        backlog: list[Event] = []
        if after is not None:
            oldest = self._buffer[0].id if self._buffer else self._next
            complete = after + 1 >= oldest
            backlog = [e for e in self._buffer if e.id > after and sub.wants(e)]
        self._subscribers.add(sub)
        return sub, backlog, complete

    async def open(
        self, scope: SiteScope, types: frozenset[str] | None, after: int | None
    ) -> tuple[Subscription, list[Event], bool]:
        """`subscribe`, with the shared log: the backlog after `after` from the replay buffer, or from the log
        when the buffer does not reach back that far (a client resuming on another instance, or after long)."""
        if self._db is None or after is None or self._last is None:
            return self.subscribe(scope, types, after)
        sub = Subscription(scope, types)
        upto = self._last
        sub.after = max(after, upto)  # what comes live from now on; the backlog covers (after, upto]
        self._subscribers.add(sub)
        if after >= upto:
            return sub, [], True
        if self._buffer and self._buffer[0].id <= after + 1:
            return sub, [e for e in self._buffer if after < e.id <= upto and sub.may_see(e)], True
        try:
            rows, complete = await self._db.run(event_log.read_backlog, self._db.db, after, upto, types, REPLAY)
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub, [e for e in (Event(*row) for row in rows) if sub.may_see(e)], complete

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
