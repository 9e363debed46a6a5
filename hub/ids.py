"""Opaque, time-ordered identifiers (ULID-like: 48 bits of milliseconds + 80 random bits).

Within one process ids are strictly increasing, even inside one millisecond, so
ordering by id is ordering by creation.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last = 0


def new_id(prefix: str) -> str:
    """A new id such as `nod_01jd3...`; ids made later sort after earlier ones."""
    global _last
    with _lock:
        value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
        if value <= _last:
            value = _last + secrets.randbelow(1 << 16) + 1
        _last = value
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
