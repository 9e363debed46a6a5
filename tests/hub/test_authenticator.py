"""The authenticator looks a secret up once, however many requests bring it at the same moment, and keeps nothing
that a revocation made meanwhile would have removed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hark_fleet.hub.auth.authenticator import Authenticator
from hark_fleet.hub.auth.principal import Grant, user_principal
from hark_fleet.hub.errors import Unauthenticated
from hark_fleet.hub.services.auth import TokenCheck

TOKEN = "hks_" + "a" * 43


class SlowDatabase:
    """Stands in for HubDatabase: each lookup waits until released, and is counted."""

    def __init__(self, check: TokenCheck) -> None:
        self.check = check
        self.calls = 0
        self.release = asyncio.Event()

    async def run(self, fn: Callable[..., Any], *args: Any) -> TokenCheck:
        self.calls += 1
        await self.release.wait()
        return self.check


async def lookups_begun(db: SlowDatabase, count: int) -> None:
    """Let the loop run until `count` lookups have reached the database (no clock involved)."""
    for _ in range(1000):
        if db.calls >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{db.calls} lookups began, expected {count}")


def principal() -> Any:
    return user_principal("usr_1", "ada", [Grant(frozenset({"node:read"}))])


def test_requests_arriving_during_a_lookup_share_it() -> None:
    asyncio.run(_requests_arriving_during_a_lookup_share_it())


async def _requests_arriving_during_a_lookup_share_it() -> None:
    db = SlowDatabase(TokenCheck(principal()))
    authenticator = Authenticator(db)  # type: ignore[arg-type]
    callers = [asyncio.create_task(authenticator.authenticate(TOKEN)) for _ in range(50)]
    await lookups_begun(db, 1)
    db.release.set()
    found = await asyncio.gather(*callers)
    assert db.calls == 1
    assert {p.id for p in found} == {"usr_1"}
    await authenticator.authenticate(TOKEN)  # kept: no second lookup
    assert db.calls == 1


def test_a_refusal_reaches_every_waiting_request() -> None:
    asyncio.run(_a_refusal_reaches_every_waiting_request())


async def _a_refusal_reaches_every_waiting_request() -> None:
    db = SlowDatabase(TokenCheck(None, "unknown"))
    authenticator = Authenticator(db)  # type: ignore[arg-type]
    callers = [asyncio.create_task(authenticator.authenticate(TOKEN)) for _ in range(5)]
    await lookups_begun(db, 1)
    db.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, Unauthenticated) for o in outcomes)
    assert db.calls == 1
    with pytest.raises(Unauthenticated):  # a refusal is not kept: the next request asks again
        await authenticator.authenticate(TOKEN)
    assert db.calls == 2


def test_a_lookup_begun_before_a_revocation_is_not_kept() -> None:
    asyncio.run(_a_lookup_begun_before_a_revocation_is_not_kept())


async def _a_lookup_begun_before_a_revocation_is_not_kept() -> None:
    db = SlowDatabase(TokenCheck(principal()))
    authenticator = Authenticator(db)  # type: ignore[arg-type]
    early = asyncio.create_task(authenticator.authenticate(TOKEN))
    await lookups_begun(db, 1)
    authenticator.forget_all()  # e.g. a logout through this hub while the lookup runs
    db.release.set()
    await early
    await authenticator.authenticate(TOKEN)
    assert db.calls == 2


def test_a_caller_that_goes_away_does_not_cancel_the_others_lookup() -> None:
    asyncio.run(_a_caller_that_goes_away_does_not_cancel_the_others_lookup())


async def _a_caller_that_goes_away_does_not_cancel_the_others_lookup() -> None:
    db = SlowDatabase(TokenCheck(principal()))
    authenticator = Authenticator(db)  # type: ignore[arg-type]
    leaving = asyncio.create_task(authenticator.authenticate(TOKEN))
    staying = asyncio.create_task(authenticator.authenticate(TOKEN))
    await lookups_begun(db, 1)
    leaving.cancel()
    db.release.set()
    assert (await staying).id == "usr_1"
    assert db.calls == 1
