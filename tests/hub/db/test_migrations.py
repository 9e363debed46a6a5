"""Migrations upgrade an existing database in place, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.db.database import MIGRATIONS_DIR, migrate, open_database, schema_status

from tests.harness import running_hub

FIRST = "0001_users_and_sessions"
ALL = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))


def _table_names(db: peewee.Database) -> set[str]:
    with db.connection_context():
        return set(db.get_tables())


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_fresh_database_gets_every_migration_once(tmp_path: Path, database_url: str | None) -> None:
    db = open_database(database_url, tmp_path)
    assert migrate(db) == ALL
    assert migrate(db) == []
    assert schema_status(db) == [(name, True) for name in ALL]
    assert {"user", "auth_session", "node", "schema_migration"} <= _table_names(db)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_an_old_database_is_upgraded_by_the_hub_keeping_its_data(tmp_path: Path, database_url: str | None) -> None:
    data_dir = tmp_path / "data"
    db = open_database(database_url, data_dir)
    assert migrate(db, FIRST) == [FIRST]
    assert "node" not in _table_names(db)
    # A user made by the old schema, with a password the hub can verify.
    from hark_fleet.hub.auth.passwords import hash_password

    with db.connection_context():
        db.execute_sql(
            'INSERT INTO "user" (id, username, password_hash, roles, sites, disabled, created_at, updated_at) '
            "VALUES ('usr_old', 'olduser', %s, '[\"viewer\"]', NULL, %s, '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
            % (("?", "?") if isinstance(db, peewee.SqliteDatabase) else ("%s", "%s")),
            (hash_password("an-old-users-password"), False),
        )
    with running_hub(tmp_path, database_url=database_url) as hub:
        assert "0002_nodes" in hub.log()
        token = hub.login("olduser", "an-old-users-password")
        with hub.client(token) as client:
            assert client.get("/api/v1/auth/me").json()["data"]["permissions"] == [
                "node:read",
                "health:read",
                "recording:read",
                "recording:read_own",
                "schedule:read",
                "settings:read",
                "site:read",
            ]
            assert client.get("/api/v1/nodes").json() == {"data": [], "meta": {"next_cursor": None}}
    assert schema_status(db) == [(name, True) for name in ALL]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_audit_events_get_the_site_of_their_target_backfilled(tmp_path: Path, database_url: str | None) -> None:
    """From a target that still exists, else from the site the event's own contents recorded; hub-wide stays empty."""
    db = open_database(database_url, tmp_path / "data")
    migrate(db, "0002_nodes")
    mark = "?" if isinstance(db, peewee.SqliteDatabase) else "%s"
    rows = (
        ("aud_1", "node", "nod_here", None),  # the node still exists, on north
        ("aud_2", "recording", "rec_gone", '{"site": "south", "name": "take"}'),  # deleted: its site from `after`
        ("aud_3", "user", "usr_x", '{"sites": ["north"]}'),  # a user is hub-wide, whatever it holds
        ("aud_4", "node", "nod_gone", None),  # deleted, nothing recorded: unknown
    )
    with db.connection_context():
        db.execute_sql(
            'INSERT INTO "node" (id, name, site, tags, status, hardware, interfaces, capacity, metrics, created_at, updated_at) '
            f"VALUES ({mark}, 'here', 'north', '[]', 'online', '{{}}', '[]', '{{}}', '{{}}', {mark}, {mark})",
            ("nod_here", "2025-01-01 00:00:00", "2025-01-01 00:00:00"),
        )
    migrate(db, "0008_technician")
    with db.connection_context():
        for event_id, target_type, target_id, after in rows:
            db.execute_sql(
                'INSERT INTO "audit_event" (id, at, actor_type, action, target_type, target_id, after, outcome) '
                f"VALUES ({mark}, {mark}, 'system', 'x.y', {mark}, {mark}, {mark}, 'success')",
                (event_id, "2025-01-01 00:00:00", target_type, target_id, after),
            )
    migrate(db)
    with db.connection_context():
        found = dict(db.execute_sql('SELECT id, site FROM "audit_event" ORDER BY id').fetchall())
    assert found == {"aud_1": "north", "aud_2": "south", "aud_3": None, "aud_4": None}
