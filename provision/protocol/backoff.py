"""Jittered exponential backoff, shared by the hub's bridge, the node's transports and audio capture."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter over a doubling window.

    Spreading each retry uniformly over [0, window] keeps a fleet that lost its broker
    at the same moment from reconnecting in one burst.
    """
    window = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, window)
