"""Query-string values: one parser per type, so every route reads `true`, `5` and `5.0` alike (API.md).

Booleans are `true` or `false`, nothing else. Integers are ASCII digits, optionally with a
fractional part of zeros (`5.0`, a JSON number with no fractional part); never Unicode digits,
signs, spaces, underscores or exponents, which Python's `int()` would take.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}(?:\.0{0,18})?")


def boolean(text: str) -> bool:
    """`true` or `false`; anything else is a ValueError."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("must be true or false")


def integer(text: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number (`5` or `5.0`) within the bounds given; anything else is a ValueError saying what is expected."""
    match = _WHOLE_NUMBER.fullmatch(text)
    value = int(text.partition(".")[0]) if match else None
    if value is None or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(_expected(minimum, maximum))
    return value


def integer_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """A parser of whole numbers from `minimum` to `maximum` (for list filters)."""
    return lambda text: integer(text, minimum, maximum)


def _expected(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"must be an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"must be an integer of at least {minimum}"
    if maximum is not None:
        return f"must be an integer of at most {maximum}"
    return "must be an integer"
