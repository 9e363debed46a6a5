"""Notification settings (issue 21): where notifications may go and how bursts and flapping are held back.

One `Setting` row, `notify`, hub-wide; defaults when it was never written. The notifier reads
`load()` when it routes and sends; an admin changes it with `update()` (audited).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Setting, database_proxy
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services.audit import Actor, record

KEY = "notify"
PERMISSION = "settings:manage"


@dataclass(frozen=True, slots=True)
class NotifySettings:
    allow_private_destinations: bool = False  # private and loopback addresses (never link-local or metadata)
    storm_window_s: float = 5.0  # notices of one kind and site this close together are one message...
    storm_threshold: int = 3  # ...once there are at least this many
    flap_hold_s: float = 300.0  # a condition that flaps is told once per this many seconds


# name -> (minimum, maximum) for the numbers; the flag is checked apart.
BOUNDS: dict[str, tuple[float, float]] = {
    "storm_window_s": (0, 120),
    "storm_threshold": (2, 1000),
    "flap_hold_s": (0, 86400),
}
FIELDS = tuple(f.name for f in dataclasses.fields(NotifySettings))


def load() -> NotifySettings:
    """The settings in force: the stored row's values (known names only), defaults for the rest."""
    row = Setting.get_or_none(Setting.key == KEY)
    stored = row.value if row is not None and isinstance(row.value, dict) else {}
    return NotifySettings(**{name: stored[name] for name in FIELDS if name in stored})


def to_api(settings: NotifySettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def _number(name: str, value: Any) -> tuple[float | int | None, str | None]:
    """The value of a numeric setting, or why it is refused."""
    low, high = BOUNDS[name]
    whole = name == "storm_threshold"
    kind = "an integer" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"must be {kind} from {low:g} to {high:g}"
    if whole and value != int(value):
        return None, f"must be {kind} from {low:g} to {high:g}"
    if not low <= value <= high:
        return None, f"must be from {low:g} to {high:g}"
    return (int(value) if whole else float(value)), None


def check(values: Any) -> dict[str, Any]:
    """The changes `values` asks for, validated; every problem named in one 400."""
    if not isinstance(values, dict):
        raise InvalidRequest("The body must be a JSON object.", fields={"body": "must be an object"})
    problems: dict[str, str] = {}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS:
            problems[name] = "unknown field"
        elif name == "allow_private_destinations":
            if isinstance(value, bool):
                changes[name] = value
            else:
                problems[name] = "must be true or false"
        else:
            number, problem = _number(name, value)
            if problem is not None:
                problems[name] = problem
            else:
                changes[name] = number
    if problems:
        raise InvalidRequest("Some notification settings are invalid.", fields=problems)
    return changes


def update(actor: Actor, values: Any) -> dict[str, Any]:
    """Replace the settings given (those left out stay), audited `notify_settings.update` with before and after."""
    changes = check(values)
    with database_proxy.atomic():
        before = load()
        after = dataclasses.replace(before, **changes)
        value = to_api(after)
        now = utcnow()
        Setting.insert(key=KEY, value=value, updated_at=now).on_conflict(
            conflict_target=[Setting.key], update={Setting.value: value, Setting.updated_at: now}
        ).execute()
        target = ("notify_settings", KEY)
        record(actor, "notify_settings.update", permission=PERMISSION, target=target, before=to_api(before), after=value)
    return value
