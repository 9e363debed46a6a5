"""When a failed upload is tried again (issue 20): exponential backoff with jitter, pure.

The n-th failure waits `min(cap, base * 2**(n-1))` scaled by a random factor in [0.5, 1.5), so items
that failed together (a provider outage) do not all come back in the same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BASE_S = 30.0
CAP_S = 3600.0
JITTER = (0.5, 1.5)


def delay_s(attempts: int, base_s: float = BASE_S, cap_s: float = CAP_S, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 is the first)."""
    steps = max(0, attempts - 1)
    plain = cap_s if steps >= 63 else min(cap_s, base_s * 2.0**steps)
    low, high = JITTER
    return plain * (low + (high - low) * rand())
