"""Refused bearer secrets, audited at most once a window per source address, with a count of the rest.

Anyone can send bad tokens, without an account: an audit row for each would let them grow the
hub's database (and fill its disk) without bound. The first refusal from an address is audited
at once; the ones after it within WINDOW_S are counted and the count is written with the next
audited one. Every refusal is still answered 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_S = 60.0
MAX_SOURCES = 10_000  # addresses remembered; past this the memory starts afresh


class RepeatedRefusals:
    """Per source address: when its last refusal was audited, and how many came since without a row."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._sources: dict[str, tuple[float, int]] = {}

    def admit(self, source: str | None) -> int | None:
        """None: only count this refusal; otherwise audit it, with the returned number of earlier ones not audited."""
        now = self._clock()
        key = source or "unknown"
        last = self._sources.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._sources[key] = (last[0], last[1] + 1)
            return None
        if len(self._sources) >= MAX_SOURCES:
            self._sources.clear()
        self._sources[key] = (now, 0)
        return last[1] if last is not None else 0
