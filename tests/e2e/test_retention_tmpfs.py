"""Retention on a real small disk: a `hark-hub` whose data dir is a tmpfs fills it with recordings; some reach a
directory provider through the upload runner (synced, checksum verified), some do not, one is under legal hold.

When the retention floor rises above the free space, the hub evicts confirmed recordings oldest first until the floor
is met, and nothing else: unconfirmed and held audio survive. When even that cannot meet the floor, a critical
`hub.retention_shortfall` health event says what is held and why; it resolves once there is room again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import Recording

from tests.conftest import hub_database
from tests.harness import HubProcess, create_database, drop_database, spawn, tmpfs, wait_for
from tests.hub.api.test_recording_upload import Take, completed_recording, enroll, stored_path
from tests.hub.api.uploads import provider

DISK = "128m"
SECONDS = 20.0  # 20 s of 24-bit stereo at 48 kHz: 5.76 MB a recording
POLICIES = "/api/v1/settings/retention-policies"
RUNS = "/api/v1/retention-runs"
SHORTFALL = "hub.retention_shortfall"


@dataclass
class Stored:
    take: Take
    path: Path
    size: int


class NamespacedHub(HubProcess):
    """A hub run by an unprivileged user: in its own user and mount namespace, with a tmpfs over its data dir there.

    The test reaches the hub's files through `/proc/<pid>/root` (the hub's view of the file system); the tmpfs goes
    away with the namespace when the hub exits. Its database is PostgreSQL: SQLite resolves `/proc/<pid>/root` to
    the test's own root, so the test could not open a database file inside the namespace.
    """

    @property
    def data_dir(self) -> Path:
        real = self.workdir / "data"
        return Path(f"/proc/{self.proc.pid}/root{real}") if self.proc is not None else real

    def start(self, wait_ready: bool = True) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        env = self.env()
        mount = f'mount -t tmpfs -o size={DISK} tmpfs "$0" && exec "$@"'
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, env["HARK_DATA_DIR"]]
        self.proc = spawn([*command, sys.executable, "-m", "hark_fleet.hub", "run"], env=env, log_path=self.log_path)
        if wait_ready:
            self.wait_ready()


def userns_tmpfs_works(directory: Path) -> bool:
    """Whether this user may mount a tmpfs inside its own user and mount namespace."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        probe = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.fixture(params=["mount", "userns"])
def small_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubProcess]:
    """A hub whose data dir is a tmpfs: mounted as root (SQLite in it), or inside the hub's own user namespace without
    root (PostgreSQL). Scheduled retention is far away, so only the floor triggers runs."""
    env = {"HARK_RETENTION_INTERVAL_S": "86400", "HARK_UPLOAD_PASS_INTERVAL_S": "0.5"}
    if request.param == "mount":
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (the userns variant runs without it)")
        hub = HubProcess(tmp_path / "hub", env_extra=env)
        mounted: contextlib.AbstractContextManager[Path] = tmpfs(hub.data_dir, DISK)
    else:
        if not userns_tmpfs_works(tmp_path / "probe"):
            pytest.skip("unshare --user --map-root-user --mount cannot mount a tmpfs here (user namespaces disabled)")
        hub = NamespacedHub(tmp_path / "hub", database_url=create_database(), env_extra=env)
        mounted = contextlib.nullcontext(hub.data_dir)
    code = 0
    try:
        with mounted:
            hub.start()
            try:
                yield hub
            finally:
                code = hub.stop()
    finally:
        if hub.database_url:
            drop_database(hub.database_url)
    assert code == 0, f"hark-hub exited with {code}:\n{hub.log()}"


def free_bytes(hub: HubProcess) -> int:
    stats = os.statvfs(hub.data_dir)
    return stats.f_bavail * stats.f_frsize


def store(hub: HubProcess, node: tuple[str, str], days_ago: float) -> Stored:
    """A recording uploaded to the hub for real, then made to have ended `days_ago`."""
    take, data = completed_recording(hub, node=node, site="north", seconds=SECONDS)
    with hub_database(hub):
        ended = utcnow() - timedelta(days=days_ago)
        Recording.update(ended_at=ended, started_at=ended - timedelta(seconds=SECONDS)).where(
            Recording.id == take.recording_id
        ).execute()
    return Stored(take, stored_path(hub, take), len(data))


def queue_item(hub: HubProcess, recording_id: str) -> dict[str, Any] | None:
    with hub.admin() as admin:
        items = admin.get("/api/v1/upload-queue", params={"recording_id": recording_id}).json()["data"]
    return items[0] if items else None


def runs(hub: HubProcess, trigger: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return admin.get(RUNS, params={"trigger": trigger, "limit": 200}).json()["data"]


def shortfall_event(hub: HubProcess) -> dict[str, Any] | None:
    with hub.admin() as admin:
        events = admin.get("/api/v1/health-events", params={"kind": SHORTFALL}).json()["data"]
    return events[0] if events else None


def test_confirmed_audio_is_evicted_oldest_first_until_the_floor_and_unconfirmed_or_held_audio_survives(
    small_hub: HubProcess, tmp_path: Path
) -> None:
    hub = small_hub
    archive_dir = tmp_path / "archive"  # the provider's directory: off the hub's disk
    archive_dir.mkdir()
    archived_node, other_node = enroll(hub, "north"), enroll(hub, "north")
    archive = provider(hub, "local", enabled=True, path=archive_dir)
    with hub.admin() as admin:
        policy = admin.post(
            "/api/v1/settings/upload-policies",
            json={"name": "to the archive", "provider_ids": [archive], "criteria": {"node_ids": [archived_node[0]]}},
        )
        assert policy.status_code == 201, policy.text

    # Fill the disk: five recordings of the archived node (one held), two of a node nothing uploads.
    held = store(hub, archived_node, days_ago=15)  # the oldest confirmed: kept by its legal hold
    confirmed = [store(hub, archived_node, days_ago=d) for d in (10, 9, 8, 7)]  # oldest first
    unconfirmed = [store(hub, other_node, days_ago=d) for d in (30, 20)]  # older than all: never confirmed
    for stored in [held, *confirmed]:
        item = wait_for(
            lambda s=stored: (i := queue_item(hub, s.take.recording_id)) and i["state"] == "synced" and i,
            120,
            "the upload to the archive",
        )
        assert item["checksum_sha256"] == hashlib.sha256(stored.path.read_bytes()).hexdigest()
    assert all(queue_item(hub, s.take.recording_id) is None for s in unconfirmed)
    with hub.admin() as admin:
        hold = admin.put(f"/api/v1/recordings/{held.take.recording_id}/legal-hold", json={"reason": "case 2026-7"})
        assert hold.status_code == 200, hold.text

    # The floor rises 2.5 recordings above the free space: the oldest confirmed go until it is met.
    size = confirmed[0].size
    floor = free_bytes(hub) + int(2.5 * size)
    with hub.admin() as admin:
        created = admin.post(
            POLICIES,
            json={"name": "keep room", "required_providers": [archive], "min_free_bytes_hub": floor},
        )
        assert created.status_code == 201, created.text
        retention_id = created.json()["data"]["id"]
    run = wait_for(lambda: (found := runs(hub, "emergency")) and found[0]["finished_at"] and found[0], 60, "an emergency run")
    evicted = [recording_id for recording_id, _ in run["details"]["deleted"]]
    order = [s.take.recording_id for s in confirmed]
    assert 0 < len(evicted) < len(order) and evicted == order[: len(evicted)]  # oldest confirmed first, not all
    assert run["free_bytes_after"] >= floor and run["free_bytes_after"] - size < floor  # until the floor is met
    assert run["shortfall_bytes"] == 0 and shortfall_event(hub) is None
    for stored in confirmed:
        assert stored.path.exists() == (stored.take.recording_id not in evicted)
    for stored in [held, *unconfirmed]:
        assert stored.path.exists()  # unconfirmed and held audio survive
        assert stored.path.stat().st_size == stored.size
    with hub.admin() as admin:
        gone = admin.get(f"/api/v1/recordings/{evicted[0]}/copies").json()["data"]
        assert gone["hub"]["state"] == "evicted" and gone["providers"][0]["confirmed"] is True
        assert (archive_dir / gone["providers"][0]["remote_key"]).exists()  # the archive still holds it
        assert admin.get(f"/api/v1/recordings/{evicted[0]}/file").status_code == 410
    assert all(Path(archive_dir, queue_item(hub, recording_id)["remote_key"]).exists() for recording_id in evicted)  # type: ignore[index]

    # More room than any confirmed recording can give: what may go goes, the rest is held, a critical event says why.
    floor = free_bytes(hub) + 10 * size
    with hub.admin() as admin:
        raised = admin.patch(f"{POLICIES}/{retention_id}", json={"min_free_bytes_hub": floor})
        assert raised.status_code == 200, raised.text
    event = wait_for(lambda: shortfall_event(hub), 60, "the shortfall health event")
    assert event["severity"] == "critical" and event["state"] == "open" and event["node_id"] is None
    held_reasons = {h["recording_id"]: h["reason"] for h in event["details"]["held"]}
    assert held_reasons[held.take.recording_id] == "legal hold"
    for stored in unconfirmed:
        assert held_reasons[stored.take.recording_id] == f"not yet confirmed on provider {archive}"
    assert event["details"]["shortfall_bytes"] > 0 and event["details"]["floor_bytes"] == floor
    for stored in confirmed:
        assert not stored.path.exists()  # every confirmed one went, oldest first
    for stored in [held, *unconfirmed]:
        assert stored.path.exists() and stored.path.stat().st_size == stored.size

    # Room again (the floor lowered): the event resolves by itself.
    with hub.admin() as admin:
        assert admin.patch(f"{POLICIES}/{retention_id}", json={"min_free_bytes_hub": 1}).status_code == 200
    wait_for(lambda: (e := shortfall_event(hub)) and e["state"] == "resolved", 30, "the shortfall event to resolve")
    for stored in [held, *unconfirmed]:
        assert stored.path.exists()
