"""Log lines about dropped node messages, rate-limited: at most one per node and reason per window.

A node that sends garbage in a loop must not flood the hub's log: the first drop of a
kind is logged at once, the rest of the window is only counted, and the count is told
with the next line for that node and reason. The metrics count every drop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
MAX_KEYS = 10_000  # (node, reason) pairs remembered; past it the oldest quiet ones are forgotten


@dataclass(slots=True)
class _Seen:
    logged_at: float
    suppressed: int = 0


class DropLog:
    """Writes `message from node ... dropped` lines to `logger`, one per (node, reason) per `window_s`."""

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.logger = logger
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str], _Seen] = {}

    def dropped(self, node_id: str, reason: str, topic: str, detail: str = "", exc_info: bool = False) -> bool:
        """Note one dropped message; True when it was logged, False when only counted."""
        now = self.clock()
        key = (node_id, reason)
        seen = self._seen.get(key)
        if seen is not None and now - seen.logged_at < self.window_s:
            seen.suppressed += 1
            return False
        suppressed = seen.suppressed if seen is not None else 0
        if seen is None and len(self._seen) >= self.max_keys:
            self._forget(now)
        self._seen[key] = _Seen(now)
        more = f"; {suppressed} more like it in the last {self.window_s:.0f}s" if suppressed else ""
        self.logger.warning(
            "message from node %s on %s dropped (%s)%s%s",
            _printable(node_id),
            _printable(topic),
            reason,
            f": {_printable(detail)}" if detail else "",
            more,
            exc_info=exc_info,
        )
        return True

    def _forget(self, now: float) -> None:
        """Forget pairs whose window is over (their counts were lost only from the log, not from the metrics)."""
        self._seen = {k: v for k, v in self._seen.items() if now - v.logged_at < self.window_s}
        if len(self._seen) >= self.max_keys:
            self._seen.clear()


def _printable(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, with control characters escaped (one log line stays one line)."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
