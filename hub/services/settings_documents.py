"""Hub-wide settings documents, one `Setting` row each (notifications, live listen): what is stored, numbers within
their bounds, and a change written with its audit entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Setting
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services.audit import Actor, record


@dataclass(frozen=True, slots=True)
class Bounds:
    """The range a numeric setting may take; `whole` when it counts things."""

    low: float
    high: float
    whole: bool = False

    def check(self, value: Any) -> tuple[float | int | None, str | None]:
        """`value` as the setting's number, or why it is refused (a bool is not a number here)."""
        kind = "an integer" if self.whole else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"must be {kind} from {self.low:g} to {self.high:g}"
        if self.whole and value != int(value):
            return None, f"must be {kind} from {self.low:g} to {self.high:g}"
        if not self.low <= value <= self.high:
            return None, f"must be from {self.low:g} to {self.high:g}"
        return (int(value) if self.whole else float(value)), None


def changes(values: Any, bounds: dict[str, Bounds], what: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """The changes `values` asks for: numbers within their `bounds`, `flags` true or false; every problem in one 400."""
    if not isinstance(values, dict):
        raise InvalidRequest("The body must be a JSON object.", fields={"body": "must be an object"})
    problems: dict[str, str] = {}
    found: dict[str, Any] = {}
    for name, value in values.items():
        if name in flags:
            if isinstance(value, bool):
                found[name] = value
            else:
                problems[name] = "must be true or false"
        elif name in bounds:
            number, problem = bounds[name].check(value)
            if problem is not None:
                problems[name] = problem
            else:
                found[name] = number
        else:
            problems[name] = "unknown field"
    if problems:
        raise InvalidRequest(f"Some {what} settings are invalid.", fields=problems)
    return found


def stored(key: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The stored values of the document `key` under known `names` (nothing when it was never written)."""
    row = Setting.get_or_none(Setting.key == key)
    value = row.value if row is not None and isinstance(row.value, dict) else {}
    return {name: value[name] for name in names if name in value}


def save(actor: Actor, key: str, before: dict[str, Any], after: dict[str, Any], *, action: str, permission: str) -> None:
    """Write `after` as the document `key`, audited `action` with before and after (call it inside a transaction)."""
    now = utcnow()
    Setting.insert(key=key, value=after, updated_at=now).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: after, Setting.updated_at: now}
    ).execute()
    record(actor, action, permission=permission, target=(action.split(".")[0], key), before=before, after=after)
