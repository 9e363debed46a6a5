"""Leases for singleton work (issue 24): two lease managers in one process on one real PostgreSQL database, each as
one hub instance. One holds each lease at a time; a clean stop hands it over at once; a holder that stops renewing
loses it to the other after the TTL with a larger fence; the stale holder's fenced writes are refused by the database
even when its own clock still says it holds the lease; a takeover waits for fenced work in flight. On SQLite every
role runs at once and nothing is written."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hark_fleet.hub.cluster import leases as L
from hark_fleet.hub.cluster.leases import LeaseLost, LeaseManager
from hark_fleet.hub.db.database import HubDatabase, open_database
from hark_fleet.hub.db.models import HubInstance, HubLease, database_proxy


class Instance:
    """One hub instance's part in the test: its database handle, lease manager and a log of role starts and stops."""

    def __init__(self, url: str | None, data_dir: Path, name: str) -> None:
        self.db = HubDatabase(open_database(url, data_dir))
        self.hub = SimpleNamespace(db=self.db, instance_id=name, public_url=f"http://{name}")
        self.leases = LeaseManager(self.hub)  # type: ignore[arg-type]
        self.log: list[str] = []
        for lease in L.NAMES:
            self.leases.role(lease, self._note(f"+{lease}"), self._note(f"-{lease}"))

    def _note(self, what: str) -> Any:
        async def note() -> None:
            self.log.append(what)

        return note

    def freeze(self) -> None:
        """Stop renewing and stop watching the deadlines, as a process paused or killed would (no release)."""
        for task in (self.leases._loop_task, self.leases._watch_task):
            assert task is not None
            task.cancel()


async def until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def rows(db: HubDatabase) -> dict[str, tuple[str | None, int]]:
    with db.db.connection_context():
        return {row.name: (row.holder, row.fence) for row in HubLease.select()}


def run(coro: Any) -> Any:
    previous = database_proxy.obj  # the fenced work runs on the models' database: this test's, then the one before
    try:
        return asyncio.run(coro)
    finally:
        database_proxy.initialize(previous)


def test_one_instance_holds_each_lease_and_a_clean_stop_hands_it_over_with_a_larger_fence(
    postgres_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        a = Instance(postgres_url, tmp_path / "a", "hub-a")
        await asyncio.get_running_loop().run_in_executor(None, a.db.start)
        b = Instance(postgres_url, tmp_path / "b", "hub-b")
        try:
            await a.leases.start()
            await b.leases.start()
            await until(lambda: a.leases.held().keys() == set(L.NAMES))
            # a role starts as a task once its lease is held: wait for the starts, not only the holding
            await until(lambda: sorted(a.log) == sorted(f"+{n}" for n in L.NAMES))
            await until(lambda: {"hub-a", "hub-b"} <= a.leases.live_instances() and "hub-a" in b.leases.live_instances())
            assert b.leases.held() == {}
            assert all(not b.leases.holds(name) for name in L.NAMES) and b.leases.fence(L.SWEEP) is None
            assert b.log == []
            first = rows(a.db)
            assert first == {name: ("hub-a", 1) for name in L.NAMES}
            await a.leases.stop()
            assert sorted(a.log) == sorted([*(f"+{n}" for n in L.NAMES), *(f"-{n}" for n in L.NAMES)])
            await until(lambda: b.leases.held().keys() == set(L.NAMES), timeout_s=L.RENEW_S * 3)
            assert rows(b.db) == {name: ("hub-b", 2) for name in L.NAMES}
            assert b.leases.fence(L.DISPATCHER) == 2
            await until(lambda: sorted(b.log) == sorted(f"+{n}" for n in L.NAMES))
            with b.db.db.connection_context():
                stopped = HubInstance.get_by_id("hub-a")
            assert stopped.stopped_at is not None
            await until(lambda: "hub-a" not in b.leases.live_instances())
        finally:
            await a.leases.stop()
            await b.leases.stop()
            a.db.close()
            b.db.close()

    run(scenario())


def test_a_holder_that_stops_renewing_loses_its_leases_after_the_ttl_and_its_fenced_writes_are_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        a = Instance(postgres_url, tmp_path / "a", "hub-a")
        await asyncio.get_running_loop().run_in_executor(None, a.db.start)
        b = Instance(postgres_url, tmp_path / "b", "hub-b")
        try:
            await a.leases.start()
            await b.leases.start()
            await until(lambda: a.leases.holds(L.RETENTION))
            database_proxy.initialize(a.db.db)
            wrote: list[str] = []

            def write(what: str) -> str:
                wrote.append(what)
                return what

            assert await a.db.run(a.leases.fenced(L.RETENTION, write), "while held") == "while held"
            a.freeze()  # a paused process: its clock says it holds the lease for another 100 s
            for name in L.NAMES:
                a.leases._deadline[name] = time.monotonic() + 100
            frozen_at = time.monotonic()
            await until(lambda: b.leases.held().keys() == set(L.NAMES), timeout_s=L.TTL_S + 3 * L.RENEW_S)
            assert time.monotonic() - frozen_at >= L.TTL_S - L.MARGIN_S - 0.5  # not before the lease expired
            assert rows(b.db)[L.RETENTION] == ("hub-b", 2)
            assert a.leases.holds(L.RETENTION)  # still believed...
            with pytest.raises(LeaseLost):  # ...but the database refuses its fenced work
                await a.db.run(a.leases.fenced(L.RETENTION, write), "stale")
            assert wrote == ["while held"]
            assert await b.db.run(b.leases.fenced(L.RETENTION, write), "new holder") == "new holder"
        finally:
            await a.leases.stop()
            await b.leases.stop()
            a.db.close()
            b.db.close()

    run(scenario())


def test_a_holder_gives_a_lease_up_at_its_own_deadline_when_it_cannot_renew(postgres_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Instance(postgres_url, tmp_path / "a", "hub-a")
        await asyncio.get_running_loop().run_in_executor(None, a.db.start)
        try:
            await a.leases.start()
            await until(lambda: a.leases.holds(L.SWEEP))
            assert a.leases._loop_task is not None
            a.leases._loop_task.cancel()  # no more renewals; the deadline watch goes on
            await until(lambda: not a.leases.holds(L.SWEEP), timeout_s=L.TTL_S + 2)
            await until(lambda: "-sweep" in a.log)
            assert a.leases.held() == {}
        finally:
            await a.leases.stop()
            a.db.close()

    run(scenario())


def test_a_takeover_waits_for_fenced_work_in_flight(postgres_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Instance(postgres_url, tmp_path / "a", "hub-a")
        await asyncio.get_running_loop().run_in_executor(None, a.db.start)
        b = Instance(postgres_url, tmp_path / "b", "hub-b")
        database_proxy.initialize(a.db.db)
        inside, release = threading.Event(), threading.Event()

        def long_work() -> str:
            inside.set()
            assert release.wait(30)
            return "done"

        try:
            await a.leases.start()
            await until(lambda: a.leases.holds(L.UPLOADS))
            work = asyncio.ensure_future(a.db.run(a.leases.fenced(L.UPLOADS, long_work)))
            await until(inside.is_set)
            a.freeze()
            for name in L.NAMES:
                a.leases._deadline[name] = time.monotonic() + 100
            await b.leases.start()
            # the lease expires in the database; the other instance keeps trying and takes the leases not locked
            await until(lambda: b.leases.holds(L.SWEEP), timeout_s=L.TTL_S + 3 * L.RENEW_S)
            assert not b.leases.holds(L.UPLOADS), "taken while fenced work of the holder was in flight"
            release.set()
            assert await work == "done"  # committed: it ran under a lease nobody else held meanwhile
            await until(lambda: b.leases.holds(L.UPLOADS), timeout_s=3 * L.RENEW_S + 3)
            assert rows(b.db)[L.UPLOADS] == ("hub-b", 2)
        finally:
            release.set()
            await a.leases.stop()
            await b.leases.stop()
            a.db.close()
            b.db.close()

    run(scenario())


def test_on_sqlite_every_role_runs_at_once_and_nothing_is_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        one = Instance(None, tmp_path / "one", "hub-one")
        await asyncio.get_running_loop().run_in_executor(None, one.db.start)
        try:
            assert one.leases.holds(L.HISTORY)  # before start too: nobody else can hold it
            await one.leases.start()
            assert sorted(one.log) == sorted(f"+{n}" for n in L.NAMES)
            assert one.leases.live_instances() == {"hub-one"}
            assert one.leases.fence(L.SWEEP) == 0
            database_proxy.initialize(one.db.db)
            assert await one.db.run(one.leases.fenced(L.SWEEP, lambda: "ran")) == "ran"
            assert await one.db.run(lambda: (HubLease.select().count(), HubInstance.select().count())) == (0, 0)
            await one.leases.stop()
            assert sorted(one.log) == sorted([*(f"+{n}" for n in L.NAMES), *(f"-{n}" for n in L.NAMES)])
        finally:
            one.db.close()

    run(scenario())
