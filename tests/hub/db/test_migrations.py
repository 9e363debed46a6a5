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
                "notify:read",
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


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_every_stored_site_string_becomes_a_site_and_recordings_know_who_started_them(
    tmp_path: Path, database_url: str | None
) -> None:
    """0013: sites named by nodes, grants, recordings and events become rows (UTC, public); created_by_id from created_by."""
    from hark_fleet.hub.clock import utcnow
    from hark_fleet.hub.db.models import ApiKey, Group, HealthEvent, Node, Recording, User, database_proxy

    db = open_database(database_url, tmp_path / "data")
    migrate(db, "0012_history")
    previous = database_proxy.obj
    database_proxy.initialize(db)
    try:
        with db.connection_context():
            now = utcnow()
            Node.insert(id="nod_1", name="box", site="north", created_at=now, updated_at=now).execute()
            User.insert(id="usr_1", username="ann", password_hash="x", roles=["viewer"], sites=["south", "east"]).execute()
            User.insert(id="usr_2", username="bob", password_hash="x", roles=["admin"], sites=None).execute()
            Group.insert(id="grp_1", name="crew", roles=["viewer"], sites=["west"]).execute()
            ApiKey.insert(
                id="key_1",
                name="k",
                kind="user",
                user_id="usr_1",
                scopes=["node:read"],
                sites=["north"],
                key_prefix="hkk_x",
                secret_hash="0" * 64,
            ).execute()
            take = {"node_id": "nod_1", "status": "completed", "format": "wav", "sample_rate": 48000, "bit_depth": 24}
            Recording.insert(id="rec_1", site="hall", name="a", created_by={"type": "user", "id": "usr_1"}, **take).execute()
            Recording.insert(id="rec_2", site="north", name="b", created_by={"type": "key", "id": "key_1"}, **take).execute()
            Recording.insert(id="rec_3", site=None, name="c", created_by={"type": "system", "id": None}, **take).execute()
            HealthEvent.insert(
                id="hev_1", node_id=None, site="yard", kind="x", severity="warning", state="open", first_seen=now, last_seen=now
            ).execute()
    finally:
        database_proxy.initialize(previous)
    assert migrate(db) == [name for name in ALL if name > "0012_history"]
    with db.connection_context():
        sites = db.execute_sql('SELECT id, name, time_zone, visibility, version FROM "site" ORDER BY id').fetchall()
        owners = dict(db.execute_sql('SELECT id, created_by_id FROM "recording"').fetchall())
    assert [tuple(row) for row in sites] == [
        (s, s, "UTC", "public", 1) for s in ("east", "hall", "north", "south", "west", "yard")
    ]
    assert owners == {"rec_1": "usr_1", "rec_2": "usr_1", "rec_3": None}  # a user key's recording is its user's
