"""`HARK_DATABASE_URL` as users write it: percent-encoded user names and passwords."""

from __future__ import annotations

from pathlib import Path

from hark_fleet.hub.db.database import describe, open_database


def test_a_percent_encoded_password_reaches_postgresql_decoded(tmp_path: Path) -> None:
    db = open_database("postgresql://hark%2Dhub:p%40ss%3Aw%2Frd@db.lan:5433/hark", tmp_path)
    assert db.connect_params["user"] == "hark-hub"
    assert db.connect_params["password"] == "p@ss:w/rd"
    assert db.connect_params["host"] == "db.lan"
    assert db.connect_params["port"] == 5433
    assert "p@ss" not in describe(db)
