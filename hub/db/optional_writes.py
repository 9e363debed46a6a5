"""Writes a read may do on the side (a last-used stamp, a built-in row made on first use): skipped, not failed, on a full disk."""

from __future__ import annotations

import logging

import peewee
from hark_fleet.hub.errors import is_storage_full

log = logging.getLogger(__name__)


def write_if_room(query: peewee.ModelUpdate | peewee.ModelInsert) -> bool:
    """Run `query`; False instead of an error when the disk is full, so the read that asked for it still answers."""
    try:
        query.execute()
    except peewee.DatabaseError as err:
        if not is_storage_full(err):
            raise
        log.warning("disk full: skipped an optional write to %s (the read goes on)", query.model._meta.table_name)
        return False
    return True
