"""A data directory whose database is missing or damaged: the hub refuses to start and says what to do."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from hark_fleet.hub.const import SQLITE_FILE

from tests.harness import ADMIN_PASSWORD, ROOT, HubProcess, running_hub


def hub_cli(hub: HubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`hark-hub <args>` with the hub's environment (its data dir and database)."""
    return subprocess.run(
        [sys.executable, "-m", "hark_fleet.hub", *args], env=hub.env(), cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def used_hub(tmp_path: Path) -> tuple[HubProcess, str]:
    """A hub that ran once with an enrolled node (credentials in its database), stopped; the node's id."""
    hub = HubProcess(tmp_path, env_extra={"HARK_ADMIN_PASSWORD": None})  # the generated password file is state too
    hub.start()
    password = (hub.data_dir / "admin-password.txt").read_text().strip()
    token = hub.login(password=password)
    with hub.client(token) as api:
        answer = api.post("/api/v1/nodes/enroll", json={"name": "box-1"})
        assert answer.status_code == 201, answer.text
    assert hub.stop() == 0, hub.log()
    return hub, answer.json()["data"]["node"]["id"]


def refused(hub: HubProcess) -> str:
    """Start the hub, expect it to exit 1 on its own; return its log."""
    hub.start(wait_ready=False)
    assert hub.proc is not None
    try:
        code = hub.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        hub.stop()
    assert code == 1, f"the hub did not refuse to start:\n{hub.log()}"
    log = hub.log()
    assert "Traceback" not in log
    return log


def test_a_zero_byte_database_beside_the_hubs_other_state_stops_the_hub_with_what_to_do(tmp_path: Path) -> None:
    hub, _ = used_hub(tmp_path)
    database = hub.data_dir / SQLITE_FILE
    database.write_bytes(b"")
    log = refused(hub)
    [line] = [x for x in log.splitlines() if "cannot start" in x]
    assert str(database) in line and "empty" in line
    assert "admin password file" in line
    assert "hark-hub restore" in line and "hark-hub db reset --move-aside" in line
    assert database.stat().st_size == 0  # untouched: no new admin, no new schema


def test_a_file_that_is_not_a_database_stops_the_hub_in_one_line(tmp_path: Path) -> None:
    hub, _ = used_hub(tmp_path)
    database = hub.data_dir / SQLITE_FILE
    database.write_bytes(b"this is not an SQLite database\n" * 200)
    log = refused(hub)
    [line] = [x for x in log.splitlines() if "cannot start" in x]
    assert "damaged" in line and str(database) in line and "hark-hub restore" in line


def test_a_database_with_damaged_pages_stops_the_hub(tmp_path: Path) -> None:
    hub, _ = used_hub(tmp_path)
    database = hub.data_dir / SQLITE_FILE
    with sqlite3.connect(database) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'node'").fetchone()[0]
    db.close()
    with database.open("r+b") as handle:  # scribble over the node table's first page, header intact
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)
    log = refused(hub)
    assert "damaged" in log and "hark-hub db reset --move-aside" in log


def test_a_missing_database_beside_the_hubs_other_state_stops_the_hub(tmp_path: Path) -> None:
    hub, _ = used_hub(tmp_path)
    (hub.data_dir / SQLITE_FILE).unlink()
    log = refused(hub)
    assert "missing" in log and "hark-hub restore" in log
    assert not (hub.data_dir / SQLITE_FILE).exists()


def test_a_first_start_beside_a_config_file_and_a_ca_made_beforehand_is_not_refused(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path)
    hub.data_dir.mkdir(parents=True)
    (hub.data_dir / "hark.toml").write_text("log_level = 'INFO'\n")
    made = subprocess.run(
        [sys.executable, "-m", "hark_fleet.provision", "ca", "--data-dir", str(hub.data_dir), "init"],
        cwd=ROOT,
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    with running_hub(tmp_path) as hub:
        assert hub.login()


def test_db_reset_moves_the_damaged_file_aside_and_the_hub_starts_fresh(tmp_path: Path) -> None:
    hub, node_id = used_hub(tmp_path)
    database = hub.data_dir / SQLITE_FILE
    database.write_bytes(b"")
    refused(hub)

    without_flag = hub_cli(hub, "db", "reset")
    assert without_flag.returncode != 0 and "--move-aside" in without_flag.stderr

    reset = hub_cli(hub, "db", "reset", "--move-aside")
    assert reset.returncode == 0, reset.stderr
    [aside] = [p for p in hub.data_dir.iterdir() if p.name.startswith(f"{SQLITE_FILE}.damaged-")]
    assert aside.stat().st_size == 0 and str(aside) in reset.stdout
    assert "enroll" in reset.stdout  # nodes must be enrolled again

    hub.env_extra["HARK_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    hub.start()
    try:
        with hub.admin() as api:
            assert api.get(f"/api/v1/nodes/{node_id}").status_code == 404
    finally:
        assert hub.stop() == 0, hub.log()


def test_db_reset_and_restore_refuse_while_a_hub_runs_on_the_data_dir(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        backup = hub_cli(hub, "backup", str(tmp_path / "backup.sqlite3"))
        assert backup.returncode == 0, backup.stderr
        for args in (("db", "reset", "--move-aside"), ("restore", str(tmp_path / "backup.sqlite3"))):
            answer = hub_cli(hub, *args)
            assert answer.returncode == 1
            assert "a hub is running" in answer.stderr and len(answer.stderr.strip().splitlines()) == 1
            assert "Traceback" not in answer.stderr
        assert httpx.get(f"{hub.url}/readyz").status_code == 200
