"""What a delivery attempt's result means, and when to try again.

Pure decisions, no I/O: 2xx is delivered; timeouts, connection errors, 5xx and 429 are retried with
exponential backoff and full jitter (never sooner than the provider's `Retry-After`); any other 4xx
fails at once. A notification is given up `GIVE_UP_AFTER_S` after its first attempt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

Outcome = Literal["delivered", "retry", "failed"]

BASE_DELAY_S = 5.0
MAX_DELAY_S = 15 * 60.0
MAX_RETRY_AFTER_S = 3600.0
GIVE_UP_AFTER_S = 24 * 3600


class Random(Protocol):
    def uniform(self, a: float, b: float, /) -> float: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    retry_after_s: float | None
    reason: str


def classify(status: int | None, error: str | None, headers: Mapping[str, str], now: datetime) -> Verdict:
    """The verdict on one attempt: its HTTP status (None when no response came) and transport error."""
    if status is None:
        return Verdict("retry", None, f"no response: {error or 'unknown error'}")
    if 200 <= status < 300:
        return Verdict("delivered", None, f"HTTP {status}")
    if status == 429 or 500 <= status < 600:
        return Verdict("retry", retry_after_s(headers, now), f"HTTP {status}" + (f": {error}" if error else ""))
    return Verdict("failed", None, f"HTTP {status}" + (f": {error}" if error else "") + " (not retried)")


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """`Retry-After` in seconds from now (delay-seconds or an HTTP-date), clamped to [0, 3600]; None if absent or bad."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    seconds: float
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def next_delay_s(attempt: int, retry_after_s: float | None, rng: Random, base_s: float = BASE_DELAY_S) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1): full jitter, at least Retry-After."""
    ceiling = min(MAX_DELAY_S, base_s * 2.0 ** min(max(attempt - 1, 0), 32))
    delay = rng.uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def should_give_up(first_attempt_at: datetime, now: datetime, after_s: float = GIVE_UP_AFTER_S) -> bool:
    """True once a notification has been trying for `after_s` (`GIVE_UP_AFTER_S` unless the hub's config says)."""
    return now - first_attempt_at >= timedelta(seconds=after_s)
