"""Work that runs on exactly one hub instance of a deployment: PostgreSQL leases with fencing tokens (issue 24).

Each singleton role has one row in `hub_lease` (name, holder, fence, acquired_at, expires_at). Every
instance, every `RENEW_S`, in one transaction on a connection of its own (renewals never wait for the pool):
renews the leases it holds (a conditional UPDATE: holder = me AND fence = mine), inserts the rows missing, and
takes the leases that are free or expired (a conditional UPDATE that adds one to the fence), all timed by the
database's clock (`now()`), so hosts' clocks never matter. A holder that could not renew treats a lease as lost
at its own monotonic deadline (the start of its last successful renewal + TTL - margin), before the database
lets anyone else take it, and stops the role. A holder killed with `kill -9` stops renewing: its leases expire
after TTL_S and another instance takes them at its next attempt (within TTL_S + RENEW_S, 8 s). A clean stop
stops the roles, then releases the leases at once (expires_at = now) and marks the instance stopped.

Fencing: work done under a lease runs its write transaction through `fenced(name, fn)` (or calls
`check_fence(name)` inside it). That locks the lease row `FOR SHARE` until the transaction ends while checking
`holder = me AND fence = my fence AND expires_at > now`: work of a holder that has lost the lease raises
`LeaseLost` and rolls back, and a takeover (whose UPDATE skips locked rows) waits until that work has ended, so
a stale holder's write never lands after the new holder started. Fenced today: the ingest sweep's writes
(heartbeat sweep, job reaper, suppression and calibration expiry, channel-map plan sweep), the schedule
dispatcher's batches and missed-job sweeps (which keep their advisory transaction lock too) and retention's
eviction marks. The upload runner's items carry their own lease epoch; the notifier's claims their own lease;
history pruning and meter-minute writes run only where the lease is held, unfenced.

Instances: every instance upserts its `hub_instance` row with each renewal; `live_instances()` is the set
of instances seen within `LIVE_S` and not stopped.

On SQLite there is one hub (a second one refuses to start): nothing is written, every role starts at once,
`holds()` is always true and `live_instances()` is this instance alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hark_fleet.hub.db.models import database_proxy
from hark_fleet.protocol.version import __version__

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

SWEEP = "sweep"  # ingest: heartbeat sweep, job reaper, history prune, plan sweep
DISPATCHER = "dispatcher"  # schedules into jobs
UPLOADS = "uploads"  # recordings to the off-site providers
RETENTION = "retention"  # evictions by policy and when space is short
NOTIFY = "notify"  # the notifier's router and delivery (its intake stays on every instance)
CRL = "crl"  # the deployment-wide part of certificate revocation (see hub/server.py)
HISTORY = "history"  # meter-minute writes
NAMES = (SWEEP, DISPATCHER, UPLOADS, RETENTION, NOTIFY, CRL, HISTORY)

TTL_S = 6.0  # a lease not renewed for this long (database clock) can be taken by another instance
RENEW_S = 2.0  # how often the holder renews
MARGIN_S = 1.5  # the holder gives a lease up this much before the database would let anyone else take it
LIVE_S = 10.0  # an instance seen within this long is live
WATCH_S = 0.2  # how often local deadlines are checked
FORGET_AFTER_S = 7 * 86400.0  # rows of instances not seen for this long are dropped at the next start of any instance

RoleCall = Callable[[], Awaitable[None]]
T = TypeVar("T")
NUDGE = "lease.nudge"  # the cluster message that wakes a role's work on the instance holding it


class LeaseLost(Exception):
    """Work under a lease found, inside its transaction, that this instance no longer holds it."""


@dataclass
class _Role:
    starts: list[RoleCall] = field(default_factory=list)
    stops: list[RoleCall] = field(default_factory=list)
    running_fence: int | None = None  # the fence the role was started under; None when not running
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseManager:
    """This instance's leases and its row in `hub_instance`; starts and stops the roles registered with `role()`."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._roles: dict[str, _Role] = {name: _Role() for name in NAMES}
        self._held: dict[str, int] = {}  # name -> fence (PostgreSQL)
        self._deadline: dict[str, float] = {}  # name -> local monotonic deadline
        self._live: set[str] = set()
        self._started = False
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._conn: Any = None  # its own psycopg2 connection: renewals never wait for the pool
        self._wakers: dict[str, Callable[[], None]] = {}
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()

    @property
    def on_postgres(self) -> bool:
        return not self._hub.db.is_sqlite

    @property
    def instance_id(self) -> str:
        return self._hub.instance_id

    # -- what others call -------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """This instance holds lease `name` now (SQLite: always)."""
        if not self.on_postgres:
            return True
        deadline = self._deadline.get(name)
        return name in self._held and deadline is not None and time.monotonic() < deadline

    def fence(self, name: str) -> int | None:
        """The fencing token of this instance's holding of `name` (None when not held; 0 on SQLite)."""
        if not self.on_postgres:
            return 0
        return self._held.get(name) if self.holds(name) else None

    def held(self) -> dict[str, int]:
        """The leases this instance holds now and their fences."""
        return {name: fence for name in NAMES if (fence := self.fence(name)) is not None}

    def live_instances(self) -> set[str]:
        """Instances seen within LIVE_S and not stopped (SQLite: this one), as of the last renewal."""
        if not self.on_postgres:
            return {self.instance_id}
        return set(self._live) | {self.instance_id}

    def role(self, name: str, start: RoleCall, stop: RoleCall) -> None:
        """Run `start()` when this instance gains lease `name` and `stop()` when it loses it (or stops)."""
        role = self._roles[name]
        role.starts.append(start)
        role.stops.append(stop)
        if self._started and not self._stopping and self.holds(name):
            self._spawn(self._run_call(name, start, "start"))

    def check_fence(self, name: str) -> None:
        """Inside a write transaction (on a database worker): raise LeaseLost unless this instance still holds `name`.

        Locks the lease row FOR SHARE until the transaction ends: a takeover waits for it. No-op on SQLite.
        """
        if not self.on_postgres:
            return
        fence = self._held.get(name)
        if fence is None or not self.holds(name):
            raise LeaseLost(f"lease {name} is not held by this instance")
        row = self._hub.db.db.execute_sql(
            "SELECT 1 FROM hub_lease WHERE name = %s AND holder = %s AND fence = %s"
            " AND expires_at > (clock_timestamp() AT TIME ZONE 'UTC') FOR SHARE",
            (name, self.instance_id, fence),
        ).fetchone()
        if row is None:
            raise LeaseLost(f"lease {name} (fence {fence}) is no longer held by this instance")

    def fenced(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        """`fn` run in one transaction that first checks the fence of `name` (for `hub.db.run`); `fn` itself on SQLite.

        `fn`'s own transactions become savepoints of that one: its writes commit only while the lease is held.
        """
        if not self.on_postgres:
            return fn

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            with database_proxy.atomic():
                self.check_fence(name)
                return fn(*args, **kwargs)

        return run

    def on_nudge(self, name: str, wake: Callable[[], None]) -> None:
        """`wake()` is how role `name`'s work is woken on this instance (called from `nudge(name)` on any instance)."""
        self._wakers[name] = wake

    def nudge(self, name: str) -> None:
        """Wake role `name`'s work wherever it runs: here at once, and (PostgreSQL) on the holder by a cluster message."""
        if self.holds(name) or not self.on_postgres:
            self._wake(name)
            return
        messages = getattr(self._hub, "cluster_messages", None)
        if messages is not None:
            messages.send_soon(NUDGE, {"name": name})

    def _wake(self, name: str) -> None:
        wake = self._wakers.get(name)
        if wake is not None:
            wake()

    def _on_nudge_message(self, payload: Any, sender: str = "") -> None:
        name = payload.get("name") if isinstance(payload, dict) else None
        if isinstance(name, str) and self.holds(name):
            self._wake(name)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Join the deployment: on PostgreSQL, register the instance and take what is free; on SQLite, start every role."""
        self._started = True
        if not self.on_postgres:
            for name in NAMES:
                self._roles[name].running_fence = 0
                for start in list(self._roles[name].starts):
                    await self._run_call(name, start, "start")
            return
        messages = getattr(self._hub, "cluster_messages", None)
        if messages is not None:
            messages.on(NUDGE, self._on_nudge_message)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hark-lease")
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._prune_sync)
        except Exception as err:  # noqa: BLE001 - tried again at the next start
            log.warning("could not drop the rows of instances gone long ago: %s", err)
        await self._tick()
        self._loop_task = asyncio.create_task(self._renew_forever())
        self._watch_task = asyncio.create_task(self._watch_forever())

    async def stop(self) -> None:
        """Stop the roles, then (PostgreSQL) release the leases at once and mark the instance stopped."""
        self._stopping = True
        for task in (self._loop_task, self._watch_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for name in reversed(NAMES):
            await self._stop_role(name)
        if not self.on_postgres or self._thread is None:
            return
        self._held.clear()
        self._deadline.clear()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._release_sync)
        except Exception as err:  # noqa: BLE001 - the leases expire by themselves
            log.warning("could not release the leases: %s", err)
        self._thread.shutdown(wait=True)

    # -- the renewal loop -------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            started = time.monotonic()
            await self._tick()
            await asyncio.sleep(max(0.05, RENEW_S - (time.monotonic() - started)))

    async def _watch_forever(self) -> None:
        """Give up a lease at its local deadline even while a renewal hangs."""
        while True:
            await asyncio.sleep(WATCH_S)
            self._expire_local()

    def _expire_local(self) -> None:
        now = time.monotonic()
        for name in list(self._held):
            if now >= self._deadline.get(name, 0.0):
                log.warning("lease %s lost: not renewed in time", name)
                self._held.pop(name, None)
                self._deadline.pop(name, None)
                self._spawn(self._stop_role(name))

    async def _tick(self) -> None:
        assert self._thread is not None
        started = time.monotonic()
        holding = dict(self._held)
        try:
            got, kept, live = await asyncio.get_running_loop().run_in_executor(self._thread, self._renew_sync, holding)
        except Exception as err:  # noqa: BLE001 - retried at the next tick; the local deadline covers the rest
            log.warning("lease renewal failed: %s", err)
            self._expire_local()
            return
        if self._stopping:
            return
        self._live = live
        deadline = started + TTL_S - MARGIN_S
        gained_now: list[str] = []
        for name in NAMES:
            fence = got.get(name)
            if fence is None:
                if name in kept:
                    continue  # still ours, not renewed this time: its deadline stands
                if name in self._held:
                    log.warning("lease %s lost: taken by another instance", name)
                    self._held.pop(name, None)
                    self._deadline.pop(name, None)
                    self._spawn(self._stop_role(name))
                continue
            if time.monotonic() >= deadline:
                continue  # the answer came too late to count
            gained = self._held.get(name) != fence
            self._held[name] = fence
            self._deadline[name] = deadline
            if gained:
                gained_now.append(f"{name} (fence {fence})")
                self._spawn(self._start_role(name, fence))
        if gained_now:
            log.info("leases held: %s", ", ".join(gained_now))

    # -- roles ----------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_call(self, name: str, call: RoleCall, what: str) -> None:
        try:
            await call()
        except Exception:
            log.exception("role %s: %s failed", name, what)

    async def _start_role(self, name: str, fence: int) -> None:
        role = self._roles[name]
        async with role.lock:
            if role.running_fence == fence or self._held.get(name) != fence or self._stopping:
                return
            if role.running_fence is not None:
                for stop in list(role.stops):
                    await self._run_call(name, stop, "stop")
            role.running_fence = fence
            for start in list(role.starts):
                await self._run_call(name, start, "start")

    async def _stop_role(self, name: str) -> None:
        role = self._roles[name]
        async with role.lock:
            if role.running_fence is None:
                return
            role.running_fence = None
            for stop in reversed(role.stops):
                await self._run_call(name, stop, "stop")

    # -- PostgreSQL (on the lease thread, its own connection) -------------------------------

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg2

        db = self._hub.db.db
        params = dict(db.connect_params)
        params.setdefault("connect_timeout", 3)
        params["options"] = "-c lock_timeout=2000 -c statement_timeout=3000 -c idle_in_transaction_session_timeout=10000"
        self._conn = psycopg2.connect(database=db.database, **params)
        return self._conn

    def _renew_sync(self, holding: dict[str, int]) -> tuple[dict[str, int], set[str], set[str]]:
        """In one transaction: the instance row, renewals of what is held, takeovers of what is free or expired.

        Returns the leases held now with their fences (renewed or taken), those still held but not renewed (their
        row was locked by fenced work), and the live instances."""
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO hub_instance (id, host, pid, url, version, started_at, seen_at)"
                    " VALUES (%s, %s, %s, %s, %s, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')"
                    " ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at, url = EXCLUDED.url, stopped_at = NULL",
                    (self.instance_id, self.host, self.pid, self._url(), __version__[:40]),
                )
                now = "(now() AT TIME ZONE 'UTC')"
                until = f"{now} + make_interval(secs => %(ttl)s)"
                args: dict[str, Any] = {"me": self.instance_id, "ttl": TTL_S}
                got: dict[str, int] = {}
                kept: set[str] = set()
                if holding:
                    # Rows locked by fenced work in flight (FOR SHARE) are skipped, not waited for: that work
                    # delays nothing else, and a lease it keeps from being renewed stays held until its deadline.
                    args.update(names=list(holding), fences=[holding[n] for n in holding])
                    cur.execute(
                        f"UPDATE hub_lease SET expires_at = {until} WHERE name IN ("
                        " SELECT l.name FROM hub_lease l JOIN unnest(%(names)s::text[], %(fences)s::bigint[]) AS h(name, fence)"
                        " ON l.name = h.name AND l.fence = h.fence WHERE l.holder = %(me)s FOR UPDATE OF l SKIP LOCKED)"
                        " RETURNING name, fence",
                        args,
                    )
                    got.update({name: int(fence) for name, fence in cur.fetchall()})
                    skipped = [name for name in holding if name not in got]
                    if skipped:
                        cur.execute(
                            "SELECT name FROM hub_lease WHERE name = ANY(%s) AND holder = %s AND fence = ANY(%s)",
                            (skipped, self.instance_id, [holding[n] for n in skipped]),
                        )
                        kept = {row[0] for row in cur.fetchall()}
                wanted = [name for name in NAMES if name not in got and name not in kept]
                if wanted:
                    # A lease this instance does not hold (locally) is taken with a new fence, even from itself;
                    # a row locked by the holder's fenced work in flight is left until that work ends.
                    args["names"] = wanted
                    cur.execute(
                        "INSERT INTO hub_lease (name, holder, fence, acquired_at, expires_at)"
                        f" SELECT w.name, %(me)s, 1, {now}, {until} FROM unnest(%(names)s::text[]) AS w(name)"
                        " ON CONFLICT (name) DO NOTHING RETURNING name, fence",
                        args,
                    )
                    got.update({name: int(fence) for name, fence in cur.fetchall()})
                    args["names"] = [name for name in wanted if name not in got]
                    cur.execute(
                        f"UPDATE hub_lease SET holder = %(me)s, fence = fence + 1, acquired_at = {now}, expires_at = {until}"
                        " WHERE name IN (SELECT name FROM hub_lease WHERE name = ANY(%(names)s)"
                        f" AND (holder IS NULL OR holder = %(me)s OR expires_at <= {now}) FOR UPDATE SKIP LOCKED)"
                        " RETURNING name, fence",
                        args,
                    )
                    got.update({name: int(fence) for name, fence in cur.fetchall()})
                cur.execute(
                    "SELECT id FROM hub_instance WHERE stopped_at IS NULL"
                    " AND seen_at > (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)",
                    (LIVE_S,),
                )
                live = {row[0] for row in cur.fetchall()}
            return got, kept, live
        except Exception:
            self._drop_connection()
            raise

    def _prune_sync(self) -> None:
        """Rows of instances not seen for FORGET_AFTER_S go (every start makes a new instance)."""
        conn = self._connection()
        with conn, conn.cursor() as cur:
            cur.execute(
                "DELETE FROM hub_instance WHERE seen_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)",
                (FORGET_AFTER_S,),
            )

    def _release_sync(self) -> None:
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE hub_lease SET expires_at = now() AT TIME ZONE 'UTC' WHERE holder = %s",
                    (self.instance_id,),
                )
                cur.execute(
                    "UPDATE hub_instance SET stopped_at = now() AT TIME ZONE 'UTC', seen_at = now() AT TIME ZONE 'UTC'"
                    " WHERE id = %s",
                    (self.instance_id,),
                )
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - it is being dropped
                pass
            self._conn = None

    def _url(self) -> str:
        try:
            return self._hub.public_url[:500]
        except Exception:  # noqa: BLE001 - before the listener is up
            return ""
