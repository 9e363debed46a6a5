"""`hark-hub backup` while the hub runs and `hark-hub restore` after a loss, on SQLite; guidance for PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
from hark_fleet.hub.const import SQLITE_FILE

from tests.harness import HubProcess, running_hub
from tests.hub.db.test_damaged_database import hub_cli


def test_a_backup_taken_while_the_hub_writes_restores_every_node_and_credential(tmp_path: Path) -> None:
    backup = tmp_path / "backups" / "hark.backup"
    backup.parent.mkdir()
    stop = threading.Event()
    with running_hub(tmp_path / "hub") as hub:
        with hub.admin() as api:
            answer = api.post("/api/v1/nodes/enroll", json={"name": "box-1"})
            assert answer.status_code == 201, answer.text
        node_id, credential = answer.json()["data"]["node"]["id"], answer.json()["data"]["credential"]

        def keep_writing() -> None:
            with hub.admin() as api:
                n = 0
                while not stop.is_set():
                    n += 1
                    api.patch(f"/api/v1/nodes/{node_id}", json={"tags": [f"t{n}"]})

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            taken = hub_cli(hub, "backup", str(backup))
        finally:
            stop.set()
            writer.join(10)
        assert taken.returncode == 0, taken.stderr
        assert str(backup) in taken.stdout
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert db.execute("SELECT name FROM node WHERE id = ?", (node_id,)).fetchone() == ("box-1",)
    db.close()

    database = hub.data_dir / SQLITE_FILE
    database.write_bytes(b"")  # the loss
    restored = hub_cli(hub, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    [aside] = [p for p in hub.data_dir.iterdir() if p.name.startswith(f"{SQLITE_FILE}.before-restore-")]
    assert aside.stat().st_size == 0 and str(aside) in restored.stdout

    with running_hub(tmp_path / "hub") as hub:
        with hub.admin() as api:
            assert api.get(f"/api/v1/nodes/{node_id}").json()["data"]["name"] == "box-1"
        with hub.client(credential) as node:
            assert node.get(f"/api/v1/nodes/{node_id}/config").status_code == 200


def test_restore_refuses_a_file_that_is_not_a_hark_database(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    junk, other = tmp_path / "junk.bin", tmp_path / "other.sqlite3"
    junk.write_bytes(b"junk" * 1000)
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    for path, why in ((junk, "not an SQLite database"), (other, "not a hark hub database"), (tmp_path / "none", "no file")):
        answer = hub_cli(hub, "restore", str(path))
        assert answer.returncode == 1, answer.stdout
        assert why in answer.stderr and len(answer.stderr.strip().splitlines()) == 1, answer.stderr
    assert not (hub.data_dir / SQLITE_FILE).exists()


def test_a_backup_to_a_place_that_does_not_exist_fails_in_one_line(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub:
        answer = hub_cli(hub, "backup", str(tmp_path / "no" / "such" / "dir" / "x.backup"))
        assert answer.returncode == 1 and len(answer.stderr.strip().splitlines()) == 1, answer.stderr
        assert "Traceback" not in answer.stderr
        assert httpx.get(f"{hub.url}/readyz").status_code == 200


def test_on_postgresql_backup_and_restore_point_to_pg_dump_and_pg_restore(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", database_url="postgresql://hark:s3cret@db.example:5432/hark")
    backup = hub_cli(hub, "backup", str(tmp_path / "x.dump"))
    assert backup.returncode == 2
    assert "pg_dump" in backup.stderr and "s3cret" not in backup.stderr and "db.example" in backup.stderr
    restore = hub_cli(hub, "restore", str(tmp_path / "x.dump"))
    assert restore.returncode == 2 and "pg_restore" in restore.stderr and "s3cret" not in restore.stderr
    assert not (tmp_path / "x.dump").exists()
