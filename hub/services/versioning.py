"""Optimistic concurrency for versioned settings: a change applies only to the version the caller read."""

from __future__ import annotations

from typing import Any

import peewee
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.errors import Conflict


def update_if_unchanged(model: type[peewee.Model], row: Any, fields: dict[str, Any], what: str) -> None:
    """Write `fields` (and the next version, and `updated_at`) to `row` only while it still holds the version it was
    read at; otherwise 409: "The {what} changed meanwhile; read it again." Call it inside the change's transaction."""
    updated = (
        model.update(**fields, updated_at=utcnow(), version=model.version + 1)  # type: ignore[attr-defined]
        .where(model.id == row.id, model.version == row.version)  # type: ignore[attr-defined]
        .execute()
    )
    if not updated:
        raise Conflict(f"The {what} changed meanwhile; read it again.")
