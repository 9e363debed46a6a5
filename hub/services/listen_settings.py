"""Live listen and share link settings (issue 23): how many may listen, how long a gone client is waited for.

One `Setting` row, `listen`, hub-wide; defaults when it was never written. The listen runtime
reads `load()` when a session opens; the share link service when a link is made; an admin changes
it with `update()` (audited).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.db.models import database_proxy
from hark_fleet.hub.services import settings_documents
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.settings_documents import Bounds

KEY = "listen"
PERMISSION = "settings:manage"


@dataclass(frozen=True, slots=True)
class ListenSettings:
    max_listeners_per_node: int = 16  # sessions active or disconnected on one node
    max_listeners_per_user: int = 4  # sessions active or disconnected of one user (or key)
    disconnect_grace_s: float = 30.0  # a session whose client went away is terminated after this long
    share_link_max_days: int = 30  # the latest expires_at a share link may have, in days from now


FIELDS = tuple(f.name for f in dataclasses.fields(ListenSettings))
BOUNDS: dict[str, Bounds] = {
    "max_listeners_per_node": Bounds(1, 1000, whole=True),
    "max_listeners_per_user": Bounds(1, 100, whole=True),
    "disconnect_grace_s": Bounds(0, 3600),
    "share_link_max_days": Bounds(1, 3650, whole=True),
}


def load() -> ListenSettings:
    """The settings in force: the stored row's values (known names only), defaults for the rest."""
    return ListenSettings(**settings_documents.stored(KEY, FIELDS))


def to_api(settings: ListenSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def check(values: Any) -> dict[str, Any]:
    """The changes `values` asks for, validated; every problem named in one 400."""
    return settings_documents.changes(values, BOUNDS, "listen")


def update(actor: Actor, values: Any) -> dict[str, Any]:
    """Replace the settings given (those left out stay), audited `listen_settings.update` with before and after."""
    changes = check(values)
    with database_proxy.atomic():
        before = load()
        after = to_api(dataclasses.replace(before, **changes))
        settings_documents.save(actor, KEY, to_api(before), after, action="listen_settings.update", permission=PERMISSION)
    return after
