"""Sites become objects: every site string already stored becomes a site row (named as its id, UTC, public).

Also: users approved to see a site whose visibility is `approved`, and who started each recording
(`created_by_id`: the user, or for a key the key's user, else the key) so ownership is one indexed column.
"""

import json
from datetime import UTC, datetime

from peewee import CharField, CompositeKey, DateTimeField, FloatField, IntegerField, Model, TextField

# table -> column holding one site
SITE_COLUMNS = {
    "node": "site",
    "recording": "site",
    "recording_job": "site",
    "lifecycle_job": "site",
    "health_event": "site",
}
# table -> column holding a JSON list of sites (null: every site)
SITE_LISTS = {"user": "sites", "group": "sites", "api_key": "sites"}
BATCH = 500


def _owner(created_by, key_users):
    try:
        who = json.loads(created_by) if created_by else None
    except ValueError:
        return None
    if not isinstance(who, dict) or not isinstance(who.get("id"), str):
        return None
    if who.get("type") == "user":
        return who["id"]
    if who.get("type") == "key":
        return key_users.get(who["id"]) or who["id"]
    return None


def up(migrator, db):
    class Site(Model):
        id = CharField(primary_key=True, max_length=100)
        name = CharField(max_length=200, index=True)
        time_zone = CharField(max_length=64, default="UTC", index=True)
        latitude = FloatField(null=True)
        longitude = FloatField(null=True)
        elevation_m = FloatField(null=True)
        visibility = CharField(max_length=16, default="public", index=True)
        notes = TextField(default="")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        version = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "site"

    class SiteApprovedUser(Model):
        site_id = CharField(max_length=100, index=True)
        user_id = CharField(max_length=40, index=True)
        approved_at = DateTimeField()
        approved_by = TextField(default="{}")

        class Meta:
            database = db
            table_name = "site_approved_user"
            primary_key = CompositeKey("site_id", "user_id")

    db.create_tables([Site, SiteApprovedUser])

    found = set()
    for table, column in SITE_COLUMNS.items():
        rows = db.execute_sql(f'SELECT DISTINCT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL').fetchall()
        found.update(site for (site,) in rows if site)
    for table, column in SITE_LISTS.items():
        rows = db.execute_sql(f'SELECT DISTINCT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL').fetchall()
        for (text,) in rows:
            try:
                sites = json.loads(text)
            except ValueError:
                continue
            if isinstance(sites, list):
                found.update(s for s in sites if isinstance(s, str) and s)
    mark = db.param
    now = datetime.now(UTC).replace(tzinfo=None)
    for site in sorted(found):
        db.execute_sql(
            f'INSERT INTO "site" (id, name, time_zone, visibility, notes, created_at, updated_at, version) '
            f"VALUES ({mark}, {mark}, 'UTC', 'public', '', {mark}, {mark}, 1)",
            (site[:100], site[:200], now, now),
        )

    migrator.migrate(migrator.add_column("recording", "created_by_id", CharField(max_length=40, null=True, index=True)))
    key_users = dict(db.execute_sql('SELECT id, user_id FROM "api_key" WHERE user_id IS NOT NULL').fetchall())
    after = ""
    while True:
        rows = db.execute_sql(
            f'SELECT id, created_by FROM "recording" WHERE id > {mark} ORDER BY id LIMIT {BATCH}', (after,)
        ).fetchall()
        for recording_id, created_by in rows:
            owner = _owner(created_by, key_users)
            if owner is not None:
                db.execute_sql(f'UPDATE "recording" SET created_by_id = {mark} WHERE id = {mark}', (owner[:40], recording_id))
        if len(rows) < BATCH:
            break
        after = rows[-1][0]


def down(migrator, db):
    migrator.migrate(migrator.drop_column("recording", "created_by_id"))
    for table in ("site_approved_user", "site"):
        db.execute_sql(f'DROP TABLE "{table}"')
