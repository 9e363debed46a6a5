"""Several hubs on one data directory (issue 24): what they make once is made once, and an upload moves between them.

Real `hark-hub` processes on one PostgreSQL database share one HARK_DATA_DIR (each with its own in-process
broker: nothing here needs MQTT across hubs). The first-use files are also raced by plain processes, many at once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hark_fleet.hub.const import ADMIN_PASSWORD_FILE
from hark_fleet.hub.db.models import AuditEvent, User
from hark_fleet.hub.secret_box import KEY_FILE, SecretBox
from hark_fleet.protocol.file_lock import read_or_create
from hark_fleet.provision.ca import CertificateAuthority

from tests.conftest import hub_database
from tests.harness import HubProcess, create_database, drop_database, wait_for
from tests.hub.api.test_recording_upload import cache_file, enroll, head, put_chunk, sine_wav, uploading_recording

RACERS = 6


def _race(barrier: Any, what: str, directory: str, out: Any) -> None:
    barrier.wait()
    path = Path(directory)
    if what == "ca":
        out.put(CertificateAuthority.open(path).fingerprint)
    elif what == "secret-box":
        out.put(SecretBox.open_dir(path).seal("sealed by one of the racers", "race"))
    else:

        def make() -> bytes:
            (path / "made").open("a").write("1\n")  # every call of `make` leaves a line
            time.sleep(0.2)  # long enough for every racer to find the file missing
            return str(multiprocessing.current_process().pid).encode()

        out.put(read_or_create(path / "value", make).decode())


def raced(what: str, directory: Path) -> list[str]:
    """What RACERS processes released at one moment each got from `what` in `directory`."""
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(RACERS), context.Queue()
    procs = [context.Process(target=_race, args=(barrier, what, str(directory), out)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return results


def test_processes_racing_to_make_a_file_make_it_once_and_all_read_it(tmp_path: Path) -> None:
    results = raced("value", tmp_path)
    assert (tmp_path / "made").read_text() == "1\n"
    assert len(set(results)) == 1 and results[0] == (tmp_path / "value").read_text()


def test_processes_racing_to_open_the_ca_make_one_ca(tmp_path: Path) -> None:
    fingerprints = raced("ca", tmp_path)
    assert len(set(fingerprints)) == 1
    assert CertificateAuthority.open(tmp_path, create=False).fingerprint == fingerprints[0]
    assert json.loads((tmp_path / "ca" / "issued.json").read_text()) == []


def test_processes_racing_to_open_the_secret_box_use_one_key(tmp_path: Path) -> None:
    sealed = raced("secret-box", tmp_path)
    box = SecretBox.open_dir(tmp_path)  # the key on disk opens what every racer sealed with the key it held
    assert [box.unseal(text, "race") for text in sealed] == ["sealed by one of the racers"] * RACERS
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]  # the lock file is gone with the race


# -- hub processes -------------------------------------------------------------------------------


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def hubs_on(tmp_path: Path, database_url: str, count: int = 2, **env: str | None) -> list[HubProcess]:
    """`count` hubs on `database_url` and the one data directory `tmp_path/shared` (each its own workdir and log)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    hubs = []
    for n in range(count):
        workdir = tmp_path / f"hub{n + 1}"
        workdir.mkdir()
        (workdir / "data").symlink_to(shared)  # the harness finds the CA there
        extra = {"HARK_DATA_DIR": str(shared), "HARK_EMBEDDED_BROKER": "in-process", **env}
        hubs.append(HubProcess(workdir, database_url=database_url, env_extra=extra))
    return hubs


def start_together(hubs: list[HubProcess]) -> None:
    for hub in hubs:
        hub.start(wait_ready=False)
    for hub in hubs:
        hub.wait_ready(timeout=90)


def kill(hub: HubProcess) -> None:
    """SIGKILL: the hub ends mid-request, as in a power cut."""
    assert hub.proc is not None
    hub.proc.kill()
    hub.proc.wait()
    hub.proc = None


def test_two_hubs_starting_at_once_on_an_empty_database_make_one_ca_and_one_admin(tmp_path: Path, database_url: str) -> None:
    hubs = hubs_on(tmp_path, database_url, HARK_TLS="on", HARK_ADMIN_PASSWORD=None)
    for hub in hubs:
        hub.tls = True
    try:
        start_together(hubs)  # ready means each serves HTTPS with a certificate of the CA now in the data directory
        shared = tmp_path / "shared"
        issued = json.loads((shared / "ca" / "issued.json").read_text())
        assert sorted(r["kind"] for r in issued) == ["server", "server"]  # each hub's certificate, none lost
        announced = [hub for hub in hubs if "First start: created user 'admin'" in hub.log()]
        assert len(announced) == 1, [hub.log() for hub in hubs]
        password = (shared / ADMIN_PASSWORD_FILE).read_text().strip()
        assert password in announced[0].log()
        for hub in hubs:
            assert hub.login(password=password)
        with hub_database(hubs[0]):
            assert [u.username for u in User.select()] == ["admin"]
            assert AuditEvent.select().where(AuditEvent.action == "user.create").count() == 1
    finally:
        for hub in hubs:
            hub.stop()


def test_an_upload_cut_off_by_a_killed_hub_completes_through_the_other(tmp_path: Path, database_url: str) -> None:
    hub1, hub2 = hubs = hubs_on(tmp_path, database_url)
    try:
        start_together(hubs)
        take = uploading_recording(hub1, node=enroll(hub1))
        data = sine_wav(20.0)  # 5.8 MB
        digest = hashlib.sha256(data).hexdigest()
        # A first chunk through hub 2, which then keeps a running hash that the rest must not trust.
        assert put_chunk(hub2, take, data, 0, 99_999).status_code == 200

        # The rest through hub 1, cut off: hub 1 dies with part of it on disk and the connection open.
        rest = (
            f"PUT {cache_file(take)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {take.credential}\r\n"
            f"Content-Length: {len(data) - 100_000}\r\nContent-Range: bytes 100000-{len(data) - 1}/{len(data)}\r\n"
            f"X-Content-SHA256: {digest}\r\nX-Lease-Epoch: {take.epoch}\r\n\r\n"
        ).encode()
        part = tmp_path / "shared" / "uploads" / f"{take.recording_id}.part"
        with socket.create_connection(("127.0.0.1", hub1.port)) as conn:
            conn.sendall(rest + data[100_000:3_500_000])
            wait_for(lambda: part.stat().st_size >= 2_000_000, 30, "hub 1 to write two blocks")
            busy = put_chunk(hub2, take, data, part.stat().st_size, len(data) - 1)
            assert busy.status_code == 409, busy.text  # hub 1 still writes this part
            assert busy.json()["error"]["code"] == "upload_in_progress"
            kill(hub1)

        answer = head(hub2, take)
        offset = int(answer.headers["Upload-Offset"])
        assert answer.headers["Upload-Complete"] == "false"
        assert 2_000_000 <= offset <= 3_500_000 and offset == part.stat().st_size
        done = put_chunk(hub2, take, data, offset, len(data) - 1)
        assert done.status_code == 200, done.text
        assert done.headers["Upload-Complete"] == "true"
        assert done.json()["data"]["recording"]["sha256"] == digest
        assert "re-hashed" in hub2.log()

        hub1.start()
        for hub in hubs:
            with hub.admin() as admin:
                played = admin.get(f"/api/v1/recordings/{take.recording_id}/stream")
            assert played.status_code == 200 and played.content == data
        assert not part.exists() and not part.with_suffix(".lock").exists()
    finally:
        for hub in hubs:
            hub.stop()


def test_a_hub_refuses_a_part_another_hub_is_writing(tmp_path: Path, database_url: str) -> None:
    hub1, hub2 = hubs = hubs_on(tmp_path, database_url)
    try:
        start_together(hubs)
        take = uploading_recording(hub1, node=enroll(hub1))
        data = sine_wav(10.0)
        request = (
            f"PUT {cache_file(take)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {take.credential}\r\n"
            f"Content-Length: {len(data)}\r\nContent-Range: bytes 0-{len(data) - 1}/{len(data)}\r\n"
            f"X-Content-SHA256: {hashlib.sha256(data).hexdigest()}\r\nX-Lease-Epoch: {take.epoch}\r\n\r\n"
        ).encode()
        part = tmp_path / "shared" / "uploads" / f"{take.recording_id}.part"
        with socket.create_connection(("127.0.0.1", hub1.port)) as conn:
            conn.sendall(request + data[:1_500_000])
            wait_for(lambda: part.exists() and part.stat().st_size >= 1_000_000, 30, "hub 1 to write a block")
            busy = put_chunk(hub2, take, data, part.stat().st_size, len(data) - 1)
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "upload_in_progress", busy.text
        # The node hung up: hub 1 lets go of the part, and hub 2 takes the upload on from what hub 1 wrote.

        def resumed() -> httpx.Response | None:
            offset = int(head(hub2, take).headers["Upload-Offset"])
            answer = put_chunk(hub2, take, data, offset, len(data) - 1)
            busy = answer.status_code == 409 and answer.json()["error"]["code"] == "upload_in_progress"
            return None if busy else answer

        done = wait_for(resumed, 30, "hub 1 to let go of the part")
        assert done.status_code == 200 and done.headers["Upload-Complete"] == "true", done.text
        with hub1.admin() as admin:
            assert admin.get(f"/api/v1/recordings/{take.recording_id}/stream").content == data
    finally:
        for hub in hubs:
            hub.stop()
