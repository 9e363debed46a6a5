"""Migrations upgrade an existing database in place, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import peewee
import pytest

from hub.db.database import MIGRATIONS_DIR, migrate, open_database, schema_status
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
    from hub.auth.passwords import hash_password

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
                "schedule:read",
                "settings:read",
            ]
            assert client.get("/api/v1/nodes").json() == {"data": [], "meta": {"next_cursor": None}}
    assert schema_status(db) == [(name, True) for name in ALL]
