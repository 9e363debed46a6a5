"""Notification settings (issue 21): where notifications may go and how bursts and flapping are held back.

One `Setting` row, `notify`, hub-wide; defaults when it was never written. The notifier reads
`load()` when it routes and sends; an admin changes it with `update()` (audited).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.db.models import database_proxy
from hark_fleet.hub.services import settings_documents
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.settings_documents import Bounds

KEY = "notify"
PERMISSION = "settings:manage"


@dataclass(frozen=True, slots=True)
class NotifySettings:
    allow_private_destinations: bool = False  # private and loopback addresses (never link-local or metadata)
    storm_window_s: float = 5.0  # notices of one kind and site this close together are one message...
    storm_threshold: int = 3  # ...once there are at least this many
    flap_hold_s: float = 300.0  # a condition that flaps is told once per this many seconds


# the numbers' ranges; the flag is checked apart.
BOUNDS: dict[str, Bounds] = {
    "storm_window_s": Bounds(0, 120),
    "storm_threshold": Bounds(2, 1000, whole=True),
    "flap_hold_s": Bounds(0, 86400),
}
FIELDS = tuple(f.name for f in dataclasses.fields(NotifySettings))


def load() -> NotifySettings:
    """The settings in force: the stored row's values (known names only), defaults for the rest."""
    return NotifySettings(**settings_documents.stored(KEY, FIELDS))


def to_api(settings: NotifySettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def check(values: Any) -> dict[str, Any]:
    """The changes `values` asks for, validated; every problem named in one 400."""
    return settings_documents.changes(values, BOUNDS, "notification", flags=("allow_private_destinations",))


def update(actor: Actor, values: Any) -> dict[str, Any]:
    """Replace the settings given (those left out stay), audited `notify_settings.update` with before and after."""
    changes = check(values)
    with database_proxy.atomic():
        before = load()
        after = dataclasses.replace(before, **changes)
        value = to_api(after)
        settings_documents.save(actor, KEY, to_api(before), value, action="notify_settings.update", permission=PERMISSION)
    return value
