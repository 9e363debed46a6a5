"""Live listen and share link settings (issue 23): how many may listen, how long a gone client is waited for.

One `Setting` row, `listen`, hub-wide; defaults when it was never written. The listen runtime
reads `load()` when a session opens; the share link service when a link is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.db.models import Setting

KEY = "listen"
PERMISSION = "settings:manage"


@dataclass(frozen=True, slots=True)
class ListenSettings:
    max_listeners_per_node: int = 16  # sessions active or disconnected on one node
    max_listeners_per_user: int = 4  # sessions active or disconnected of one user (or key)
    disconnect_grace_s: float = 30.0  # a session whose client went away is terminated after this long
    share_link_max_days: int = 30  # the latest expires_at a share link may have, in days from now


FIELDS = tuple(f.name for f in dataclasses.fields(ListenSettings))


def load() -> ListenSettings:
    """The settings in force: the stored row's values (known names only), defaults for the rest."""
    row = Setting.get_or_none(Setting.key == KEY)
    stored = row.value if row is not None and isinstance(row.value, dict) else {}
    return ListenSettings(**{name: stored[name] for name in FIELDS if name in stored})


def to_api(settings: ListenSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
