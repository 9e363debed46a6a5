"""Schedules with real processes (issue 19): a node records its scheduled takes on its own clock, on time, while the hub
is away, and uploads them when the hub returns; a node off through a whole occurrence reports it missed; one that
boots in the middle of an occurrence records the remainder, marked late; a take moved while its node is away is
recorded at the new time only (the node learns of the change when it returns); a take the hub called missed while it
could not hear the node is completed when the node, which recorded it, gets through again.

The hub dispatches ahead of time (its lead window); the node holds the jobs in its book and starts each at the
planned instant from its audio ring, so the first sample is the plan within 50 ms by the node's clock (the node
and the test share this machine's clock).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import soundfile

from tests.e2e.conftest import Fleet
from tests.harness import NodeProcess, wait_for

SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
ZONE = "Europe/Berlin"  # the site is in UTC: the schedule's own zone is converted on the way
TERMINAL = ("completed", "interrupted", "failed", "cancelled", "missed")
ACCURACY_S = 0.050
# The dispatcher looks a day ahead (the default) and runs every second, so a schedule is dispatched at once.
HUB_ENV = {"HARK_SCHEDULE_LEAD_S": "86400", "HARK_SCHEDULE_DISPATCH_INTERVAL_S": "1"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A hub with the embedded broker and a dispatcher that runs every second."""
    running = Fleet(tmp_path, None)
    running.hub.env_extra.update(HUB_ENV)
    running.hub.start()
    yield running
    running.stop()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_start(in_s: float) -> tuple[str, datetime]:
    """A whole-second wall time in ZONE about `in_s` seconds from now, and the UTC instant it is."""
    wall = (datetime.now(ZoneInfo(ZONE)) + timedelta(seconds=in_s)).replace(microsecond=0)
    return wall.replace(tzinfo=None).isoformat(), wall.astimezone(UTC)


def create_schedule(fleet: Fleet, node: NodeProcess, **body: Any) -> dict[str, Any]:
    body = {
        "name": f"take-{uuid.uuid4().hex[:6]}",
        "target": {"node_ids": [node.node_id]},
        "time_zone": ZONE,
        "profile_id": "default",
        "metadata": {"drill": "outage"},
        **body,
    }
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def jobs_of(fleet: Fleet, node: NodeProcess, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's jobs on the node, in planned order."""
    with fleet.hub.admin() as admin:
        response = admin.get("/api/v1/recording-jobs", params={"node_id": node.node_id, "limit": 100})
    assert response.status_code == 200, response.text
    jobs = [j for j in response.json()["data"] if j.get("schedule_id") == schedule_id]
    return sorted(jobs, key=lambda j: utc(j["start_at"]))


def recording(fleet: Fleet, recording_id: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/recordings/{recording_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def occurrences(fleet: Fleet, schedule_id: str) -> list[dict[str, Any]]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/schedules/{schedule_id}/occurrences")
    assert response.status_code == 200, response.text
    return sorted(response.json()["data"], key=lambda o: utc(o["start_utc"]))


def frames_of(fleet: Fleet, recording_id: str) -> tuple[int, int]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/recordings/{recording_id}/file")
    assert response.status_code == 200, response.text
    info = soundfile.info(io.BytesIO(response.content))
    return info.frames, info.samplerate


def logs(fleet: Fleet, node: NodeProcess) -> str:
    return f"\n--- node log ---\n{node.log()[-5000:]}\n--- hub log ---\n{fleet.hub.log()[-5000:]}"


def held(fleet: Fleet, node: NodeProcess, schedule_id: str, count: int, before: datetime) -> list[dict[str, Any]]:
    """Wait until the node has synced (claimed) `count` jobs of the schedule; fail if that is not done by `before`."""

    def claimed() -> list[dict[str, Any]] | None:
        jobs = jobs_of(fleet, node, schedule_id)
        return jobs if len(jobs) == count and all(j["state"] == "claimed" for j in jobs) else None

    timeout = max((before - datetime.now(UTC)).total_seconds(), 1.0)
    try:
        found: list[dict[str, Any]] = wait_for(claimed, timeout, f"the node to hold {count} scheduled jobs", 0.2)
    except AssertionError as err:
        raise AssertionError(f"{err}: {jobs_of(fleet, node, schedule_id)}{logs(fleet, node)}") from None
    return found


def settled(fleet: Fleet, node: NodeProcess, recording_id: str, timeout: float) -> dict[str, Any]:
    try:
        return wait_for(lambda: (r := recording(fleet, recording_id))["status"] in TERMINAL and r, timeout, "the recording", 0.5)
    except AssertionError as err:
        raise AssertionError(f"{err}: {recording(fleet, recording_id)}{logs(fleet, node)}") from None


def sleep_until(moment: datetime) -> None:
    left = (moment - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left)


def assert_on_time(done: dict[str, Any], planned: datetime, duration_s: int) -> None:
    """A scheduled take that started at the planned instant (within 50 ms) and lasted its duration."""
    assert done["status"] == "completed" and not done["interrupted"], done
    assert utc(done["scheduled_start_at"]) == planned, (done["scheduled_start_at"], planned)
    assert abs((utc(done["started_at"]) - planned).total_seconds()) <= ACCURACY_S, (done["started_at"], planned)
    assert done["late_s"] is None, done
    ledger = done["integrity"]
    assert utc(ledger["scheduled_start"]) == planned, ledger
    assert abs(ledger["start_error_ms"]) <= ACCURACY_S * 1000, ledger
    assert not ledger.get("late_s"), ledger  # the node's ledger writes 0 when on time
    assert done["duration_s"] == pytest.approx(duration_s, abs=0.01), done
    assert done["time_quality"] in ("ntp", "unsynced"), done


def test_a_node_records_its_second_take_on_time_while_the_hub_is_away(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    duration = 5
    start_local, first = local_start(25)
    second = first + timedelta(seconds=40)
    schedule = create_schedule(
        fleet, node, start_local=start_local, duration_s=duration, rrule="FREQ=SECONDLY;INTERVAL=40;COUNT=2"
    )
    assert utc(schedule["next_occurrence"]["start_utc"]) == first, schedule

    jobs = held(fleet, node, schedule["id"], 2, before=first)
    assert [utc(j["start_at"]) for j in jobs] == [first, second], jobs
    assert [utc(j["end_at"]) for j in jobs] == [first + timedelta(seconds=duration), second + timedelta(seconds=duration)]

    # The first take goes up while the hub is here; the hub stops before the second starts, whatever happened.
    try:
        timeout = max((second - timedelta(seconds=8) - datetime.now(UTC)).total_seconds(), 0.5)
        wait_for(lambda: recording(fleet, jobs[0]["recording_id"])["status"] == "completed", timeout, "the first take", 0.3)
    except AssertionError:
        pass  # still uploading (or worse): it is checked after the hub returns
    assert datetime.now(UTC) < second - timedelta(seconds=2), "the hub could not be stopped before the second take"
    assert fleet.hub.stop() == 0
    sleep_until(second + timedelta(seconds=duration + 3))
    fleet.hub.start()

    takes = [settled(fleet, node, j["recording_id"], timeout=120) for j in jobs]
    for take, planned in zip(takes, (first, second), strict=True):
        assert_on_time(take, planned, duration)
        assert take["schedule_id"] == schedule["id"] and take["metadata"]["drill"] == "outage", take
        assert frames_of(fleet, take["id"]) == (duration * 48000, 48000)
    assert takes[0]["occurrence_id"] != takes[1]["occurrence_id"]

    listed = occurrences(fleet, schedule["id"])
    assert [(utc(o["start_utc"]), o["state"]) for o in listed] == [(first, "completed"), (second, "completed")], listed
    assert [[r["id"] for r in o["recordings"]] for o in listed] == [[t["id"]] for t in takes], listed
    with fleet.hub.admin() as admin:
        library = admin.get("/api/v1/recordings", params={"schedule_id": schedule["id"]}).json()["data"]
    assert sorted(r["id"] for r in library) == sorted(t["id"] for t in takes), library


def test_a_node_off_through_a_whole_occurrence_reports_it_missed(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    start_local, planned = local_start(20)
    schedule = create_schedule(fleet, node, start_local=start_local, duration_s=4, rrule=None)
    (job,) = held(fleet, node, schedule["id"], 1, before=planned - timedelta(seconds=5))
    assert node.stop() == 0
    assert datetime.now(UTC) < planned, "the node could not be stopped before the occurrence"
    sleep_until(planned + timedelta(seconds=4 + 2))
    node.start()

    done = settled(fleet, node, job["recording_id"], timeout=90)
    assert done["status"] == "missed", done
    assert done["error"], done
    (current,) = jobs_of(fleet, node, schedule["id"])
    assert current["state"] == "missed" and current["error"], current
    (occurrence,) = occurrences(fleet, schedule["id"])
    assert occurrence["state"] == "missed" and occurrence["reason"], occurrence


def test_a_node_that_boots_mid_occurrence_records_the_remainder_marked_late(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    duration = 20
    start_local, planned = local_start(20)
    end = planned + timedelta(seconds=duration)
    schedule = create_schedule(fleet, node, start_local=start_local, duration_s=duration, rrule=None)
    (job,) = held(fleet, node, schedule["id"], 1, before=planned - timedelta(seconds=5))
    assert node.stop() == 0
    assert datetime.now(UTC) < planned, "the node could not be stopped before the occurrence"
    sleep_until(planned + timedelta(seconds=6))
    node.start()

    done = settled(fleet, node, job["recording_id"], timeout=90)
    assert done["status"] == "completed", done
    late = done["late_s"]
    assert late is not None and 6 <= late < duration, done
    started = utc(done["started_at"])
    assert abs((started - planned).total_seconds() - late) <= ACCURACY_S, (done["started_at"], late)
    # it records until the planned end, not for the full duration
    assert done["duration_s"] + late == pytest.approx(duration, abs=0.1), done
    assert done["integrity"]["late_s"] == pytest.approx(late, abs=0.01), done["integrity"]
    assert utc(done["scheduled_start_at"]) == planned, done
    (occurrence,) = occurrences(fleet, schedule["id"])
    assert occurrence["state"] == "completed" and occurrence["late"], occurrence
    assert utc(occurrence["end_utc"]) == end


def test_a_take_moved_while_its_node_is_away_is_recorded_at_the_new_time_only(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    duration = 4
    start_local, planned = local_start(25)
    schedule = create_schedule(fleet, node, start_local=start_local, duration_s=duration, rrule=None)
    (old,) = held(fleet, node, schedule["id"], 1, before=planned - timedelta(seconds=8))
    assert node.stop() == 0
    moved_local, moved = local_start((planned - datetime.now(UTC)).total_seconds() + 20)
    with fleet.hub.admin() as admin:
        response = admin.patch(
            f"/api/v1/schedules/{schedule['id']}", json={"version": schedule["version"], "start_local": moved_local}
        )
    assert response.status_code == 200, response.text
    assert datetime.now(UTC) < planned, "the schedule could not be moved before the take"
    node.start()  # back before the old time: it learns of the change and must not record the old take

    def moved_job() -> dict[str, Any] | None:
        jobs = [j for j in jobs_of(fleet, node, schedule["id"]) if j["id"] != old["id"]]
        return jobs[0] if jobs else None

    new = wait_for(moved_job, 30, "the moved take's job", 0.3)
    assert utc(new["start_at"]) == moved, new
    done = settled(fleet, node, new["recording_id"], timeout=90)
    assert_on_time(done, moved, duration)

    withdrawn = recording(fleet, old["recording_id"])
    assert withdrawn["status"] == "cancelled" and withdrawn["started_at"] is None, withdrawn
    (old_now,) = [j for j in jobs_of(fleet, node, schedule["id"]) if j["id"] == old["id"]]
    assert old_now["state"] == "cancelled" and "withdrawn" in (old_now["error"] or ""), old_now
    assert not old_now["capture_started"], old_now
    cache = node.workdir / "data" / "recordings"
    assert (cache / new["recording_id"]).is_dir(), sorted(p.name for p in cache.iterdir())  # where takes are cached
    assert not (cache / old["recording_id"]).exists(), "the node recorded the withdrawn take"


class CuttableLink:
    """A TCP relay on loopback between a node and the hub's HTTP port that can be cut (every connection dropped,
    new ones refused) and mended: the node cannot reach the hub while both run."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def test_a_take_the_hub_called_missed_while_cut_off_from_the_node_completes_when_the_node_gets_through(fleet: Fleet) -> None:
    fleet.hub.stop()
    fleet.hub.env_extra["HARK_JOB_LEASE_TIMEOUT_S"] = "3"  # the hub calls an unheard take missed 3 s after its end
    fleet.hub.start()
    link = CuttableLink(fleet.hub.port)
    try:
        node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
        node.hub_url = link.url  # its HTTP goes through the link; MQTT goes straight to the hub's broker
        node.start()
        fleet.wait_status(node, "online")
        duration = 4
        start_local, planned = local_start(20)
        schedule = create_schedule(fleet, node, start_local=start_local, duration_s=duration, rrule=None)
        (job,) = held(fleet, node, schedule["id"], 1, before=planned - timedelta(seconds=5))
        link.cut()
        assert datetime.now(UTC) < planned, "the link could not be cut before the take"

        def called_missed() -> bool:
            return recording(fleet, job["recording_id"])["status"] == "missed"

        wait_for(called_missed, 60, "the hub to call the unheard take missed", 0.3)
        link.mend()
        done = wait_for(
            lambda: (r := recording(fleet, job["recording_id"]))["status"] == "completed" and r, 90, "the take to come in", 0.5
        )
        assert_on_time(done, planned, duration)
        (current,) = jobs_of(fleet, node, schedule["id"])
        assert current["state"] == "completed" and current["capture_started"], current
        (occurrence,) = occurrences(fleet, schedule["id"])
        assert occurrence["state"] == "completed", occurrence
    except AssertionError as err:
        raise AssertionError(f"{err}{logs(fleet, fleet.nodes[-1]) if fleet.nodes else ''}") from None
    finally:
        link.close()
