"""The one check every family makes of a name or label: 1-N printable characters, no surrounding spaces."""

from __future__ import annotations

import re
from typing import Any

PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


def text_problem(value: Any, max_len: int) -> str | None:
    """Why `value` is not an acceptable name or label of at most `max_len` characters, or None."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or value != value.strip() or not PRINTABLE.fullmatch(value):
        return f"1-{max_len} characters, no control characters or surrounding spaces"
    return None
