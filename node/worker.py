"""The shape every node worker shares: an asyncio task looping until its stop event is set."""

from __future__ import annotations

import asyncio


async def wait_any(timeout: float | None, *events: asyncio.Event) -> bool:
    """Wait until one of `events` is set or `timeout` passes; True when one is set."""
    if any(event.is_set() for event in events):
        return True
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


async def stopped(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep up to `timeout` seconds; True as soon as `stop` is set (the worker should return)."""
    return await wait_any(max(0.0, timeout), stop)
