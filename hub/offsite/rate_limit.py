"""Token buckets that pace uploads (issue 20): one per provider (`rate_limit_bps`, shared by that
provider's concurrent uploads) and one per policy (`bandwidth_cap_bps`).

Uploads run on threads, so a bucket is guarded by a lock. `take(n)` reserves `n` bytes at once and
sleeps off any debt outside the lock: a part larger than the burst is allowed, and the next caller
waits for it, so the long-run rate holds whatever the part size and however many threads share the
bucket. The sleep is cut into short slices that look at `cancelled`, so a stopping runner is not held
up by a slow provider's pacing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

SLICE_S = 0.2


class TokenBucket:
    """At most `rate_bps` bytes per second over time, with bursts up to `burst` bytes."""

    def __init__(self, rate_bps: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_bps <= 0:
            raise ValueError("rate_bps must be positive")
        self._lock = threading.Lock()
        self._clock = clock
        self.rate_bps = float(rate_bps)
        self.burst = float(burst if burst is not None else rate_bps)  # one second's worth by default
        self._tokens = self.burst
        self._at = clock()

    def set_rate(self, rate_bps: float) -> None:
        """A changed limit applies from the next reservation on."""
        with self._lock:
            self._refill()
            self.rate_bps = float(rate_bps)
            self.burst = float(rate_bps)
            self._tokens = min(self._tokens, self.burst)

    def reserve(self, n: int) -> float:
        """Take `n` bytes' worth now; return how long the caller must wait before sending them."""
        with self._lock:
            self._refill()
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bps

    def take(self, n: int, cancelled: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Block until `n` bytes may be sent; False when `cancelled` turned true while waiting."""
        return wait(self.reserve(n), cancelled, sleep)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_bps)
        self._at = now


def wait(seconds: float, cancelled: Callable[[], bool], sleep: Callable[[float], None] = time.sleep) -> bool:
    """Sleep `seconds` in short slices; False as soon as `cancelled()` is true."""
    deadline = time.monotonic() + seconds
    while True:
        if cancelled():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        sleep(min(SLICE_S, left))


def throttle_for(buckets: Iterable[TokenBucket | None], cancelled: Callable[[], bool]) -> Callable[[int], None]:
    """The `throttle(n)` a provider calls before sending `n` bytes: waits on every bucket given (the slowest wins)."""
    active = [b for b in buckets if b is not None]

    def throttle(n: int) -> None:
        if not active or n <= 0:
            return
        wait(max(b.reserve(n) for b in active), cancelled)

    return throttle


class BucketRegistry:
    """One bucket per name (a provider's or a policy's id), made or re-rated as the limits are read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def get(self, name: str, rate_bps: int | None) -> TokenBucket | None:
        """The bucket for `name` at `rate_bps`; None when unlimited (and the old bucket is dropped)."""
        with self._lock:
            if not rate_bps or rate_bps <= 0:
                self._buckets.pop(name, None)
                return None
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = TokenBucket(rate_bps)
            elif bucket.rate_bps != rate_bps:
                bucket.set_rate(rate_bps)
            return bucket
