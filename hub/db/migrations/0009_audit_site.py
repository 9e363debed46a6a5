"""Audit events keep the site of their target, so a site-limited reader sees only its sites' events.

Backfilled from targets that still exist, else from the `site` the event's own after/before
recorded; events about hub-wide things (users, keys, settings) keep no site.
"""

import json

from peewee import CharField

# target type -> the table that holds such targets with a `site` column
SITED_TARGETS = {
    "node": "node",
    "recording": "recording",
    "recording_job": "recording_job",
    "health_event": "health_event",
    "lifecycle_job": "lifecycle_job",
}
BATCH = 500


def _recorded_site(text):
    """The `site` an event's JSON contents name, if they name one."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    site = value.get("site") if isinstance(value, dict) else None
    return site if isinstance(site, str) else None


def up(migrator, db):
    migrator.migrate(migrator.add_column("audit_event", "site", CharField(max_length=100, null=True, index=True)))
    mark = db.param
    for target_type, table in SITED_TARGETS.items():
        db.execute_sql(
            f'UPDATE "audit_event" SET site = (SELECT t.site FROM "{table}" t WHERE t.id = "audit_event".target_id) '
            f"WHERE target_type = {mark} AND site IS NULL",
            (target_type,),
        )
    # Targets deleted since: the site the event itself recorded. In batches, by id.
    types = list(SITED_TARGETS)
    marks = ", ".join([mark] * len(types))
    after = ""
    while True:
        rows = db.execute_sql(
            f'SELECT id, after, before FROM "audit_event" WHERE site IS NULL AND target_type IN ({marks}) AND id > {mark} '
            f"ORDER BY id LIMIT {BATCH}",
            (*types, after),
        ).fetchall()
        for event_id, after_text, before_text in rows:
            site = _recorded_site(after_text) or _recorded_site(before_text)
            if site is not None:
                db.execute_sql(f'UPDATE "audit_event" SET site = {mark} WHERE id = {mark}', (site[:100], event_id))
        if len(rows) < BATCH:
            break
        after = rows[-1][0]


def down(migrator, db):
    migrator.migrate(migrator.drop_column("audit_event", "site"))
