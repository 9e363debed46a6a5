"""Brute-force protection for logins: counted failures, then lockouts that double up to 15 minutes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from hark_fleet.hub.db.models import LoginThrottle

WINDOW = timedelta(minutes=15)
USER_THRESHOLD = 10
ADDRESS_THRESHOLD = 100
FIRST_LOCKOUT = timedelta(minutes=1)
MAX_LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    window_start: datetime
    locked_until: datetime | None
    lockouts: int


def retry_after(state: ThrottleState | None, now: datetime) -> int | None:
    """Seconds until attempts are accepted again, or None when they are accepted now."""
    if state is None or state.locked_until is None or state.locked_until <= now:
        return None
    return max(1, math.ceil((state.locked_until - now).total_seconds()))


def after_failure(state: ThrottleState | None, now: datetime, threshold: int) -> tuple[ThrottleState, bool]:
    """The state after one more failure, and whether it has just locked."""
    if state is None or now - state.window_start > WINDOW:
        state = ThrottleState(0, now, None, state.lockouts if state else 0)
    failures = state.failures + 1
    if failures < threshold:
        return ThrottleState(failures, state.window_start, state.locked_until, state.lockouts), False
    lockouts = state.lockouts + 1
    duration = min(MAX_LOCKOUT, FIRST_LOCKOUT * (2 ** (lockouts - 1)))
    return ThrottleState(0, now, now + duration, lockouts), True


def user_key(username: str) -> str:
    return f"user:{username.lower()}"


def address_key(address: str | None) -> str:
    return f"ip:{address or 'unknown'}"


def load(key: str) -> ThrottleState | None:
    row = LoginThrottle.get_or_none(LoginThrottle.key == key)
    if row is None:
        return None
    return ThrottleState(row.failures, row.window_start, row.locked_until, row.lockouts)


def store(key: str, state: ThrottleState) -> None:
    LoginThrottle.insert(
        key=key,
        failures=state.failures,
        window_start=state.window_start,
        locked_until=state.locked_until,
        lockouts=state.lockouts,
    ).on_conflict(
        conflict_target=[LoginThrottle.key],
        update={
            LoginThrottle.failures: state.failures,
            LoginThrottle.window_start: state.window_start,
            LoginThrottle.locked_until: state.locked_until,
            LoginThrottle.lockouts: state.lockouts,
        },
    ).execute()


def clear(key: str) -> None:
    LoginThrottle.delete().where(LoginThrottle.key == key).execute()
