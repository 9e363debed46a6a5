"""Live listen end to end with real hub and node processes: a listen never disturbs a recording on the same box, ten
listeners of one format cost the node one stream, and sessions go through their states when the node stops, an
admin disconnects one, or its client goes away."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.listen_clients import (
    Listener,
    ListenSniffer,
    MeterWatch,
    listen_settings,
    open_session,
    refused_status,
    session,
)
from tests.e2e.test_recording import settled, start_recording
from tests.harness import HubProcess, NodeProcess, wait_for

SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
FRAME_S = 0.02  # every stream's frames are 20 ms
RATE = 48000
PASSWORD = "amber-Meadow-switch-61"


def online_node(fleet: Fleet) -> NodeProcess:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    return node


def listening(hub: HubProcess, token: str, opened: dict[str, Any], name: str, frames: int = 25) -> Listener:
    """A listener connected to the session's stream that already receives audio."""
    listener = Listener(hub, token, opened["stream_url"], name=name).start()
    listener.wait_frames(frames)
    return listener


def wait_session(hub: HubProcess, session_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    try:
        return wait_for(lambda: (s := session(hub, session_id))["state"] == state and s, timeout, f"session {state}", 0.2)
    except AssertionError as err:
        raise AssertionError(f"{err}: {session(hub, session_id)}") from None


def node_listeners(hub: HubProcess, node_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}/listen")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of the process and its children."""
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def assert_continuous(listener: Listener) -> None:
    assert listener.gaps == [] and listener.discontinuities == 0 and not listener.bad_chunks, listener.summary()
    assert listener.error is None, listener.summary()
    assert listener.chunks_before_hello == 0, "a chunk reached the listener before its hello"


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_three_listeners_leave_a_recording_on_the_same_box_intact(fleet: Fleet) -> None:
    node = online_node(fleet)
    token = fleet.hub.login()
    meters = MeterWatch(fleet.hub, token, node.node_id).start()
    formats = [
        {"codec": "opus", "bitrate": 64000},
        {"codec": "pcm16"},
        {"codec": "opus", "bitrate": 64000},
    ]
    opened = [open_session(fleet.hub, token, node.node_id, **body) for body in formats]
    assert len({s["stream_id"] for s in opened}) == 2, opened  # two formats: the node runs two streams
    listeners = [listening(fleet.hub, token, s, f"{s['codec']}-{i}") for i, s in enumerate(opened)]
    try:
        on_node = node_listeners(fleet.hub, node.node_id)
        assert sorted(s["id"] for s in on_node) == sorted(s["id"] for s in opened), on_node
        assert len({s["stream_id"] for s in on_node}) == 2 and {s["state"] for s in on_node} == {"active"}, on_node
        assert listeners[1].formats == {("pcm16", 2, RATE)} and listeners[0].formats == {("opus", 2, RATE)}
        before = [listener.window() for listener in listeners]

        started = start_recording(fleet, node, duration_s=20, name="heard live")
        wait_for(lambda: settled_status(fleet, started["id"]) == "recording", 20, "the take to start", 0.1)
        take_start = time.monotonic()
        done = settled(fleet, node, started["id"], timeout=60)
        take_end = time.monotonic()
        after = [listener.window() for listener in listeners]
    finally:
        meters.stop()
        for listener in listeners:
            listener.close()

    assert done["status"] == "completed" and not done["interrupted"], done
    ledger = done["integrity"]
    print(
        f"\nledger while three listened: frames_written {ledger['frames_written']}, frames_expected "
        f"{ledger['frames_expected']}, overruns {ledger['overruns']}, lost {ledger['lost_frames']}, gaps {ledger['gaps']}"
    )
    assert ledger["gaps"] == [] and ledger["overruns"] == 0 and ledger["lost_frames"] == 0, ledger
    assert ledger["frames_written"] == 20 * RATE and ledger["stop_reason"] == "duration", ledger
    # what a perfect device would have delivered over the take by the recorder's monotonic clock: within 100 ms
    assert abs(ledger["frames_expected"] - ledger["frames_written"]) <= RATE // 10, ledger
    assert done["duration_s"] == pytest.approx(20.0, abs=0.001)

    seqs = meters.seqs_between(take_start, take_end)
    assert len(seqs) >= 150, len(seqs)  # 10 meter frames a second over the take
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), [b - a for a, b in zip(seqs, seqs[1:], strict=False) if b - a != 1]

    for listener, start, end in zip(listeners, before, after, strict=True):
        print(listener.summary())
        assert_continuous(listener)
        # audio the whole time: the take's frames reached every listener (a second of slack for the window's edges)
        assert end.frames - start.frames >= (take_end - take_start) / FRAME_S - 50, (listener.summary(), start, end)


def settled_status(fleet: Fleet, recording_id: str) -> str:
    with fleet.hub.admin() as admin:
        return admin.get(f"/api/v1/recordings/{recording_id}").json()["data"]["status"]


@pytest.mark.parametrize("fleet", ["mosquitto"], indirect=True)
def test_ten_listeners_of_one_format_cost_the_node_one_stream(fleet: Fleet) -> None:
    assert fleet.broker is not None
    node = online_node(fleet)
    assert node.proc is not None
    listen_settings(fleet.hub, max_listeners_per_user=16)
    token = fleet.hub.login()
    broker = fleet.broker
    sniffer = ListenSniffer(broker.host, broker.port, broker.admin_username, broker.admin_password, node.node_id)
    process = psutil.Process(node.proc.pid)
    body = {"codec": "opus", "bitrate": 64000}
    listeners: list[Listener] = []

    def measure(seconds: float = 10.0) -> dict[str, Any]:
        """What the node published for listen per second over a window, per stream, and its CPU meanwhile."""
        marks = [listener.window() for listener in listeners]
        cpu_before, (at_before, sent_before) = cpu_s(process), sniffer.snapshot()
        time.sleep(seconds)  # a measuring window, not a wait for a condition
        cpu_after, (at_after, sent_after) = cpu_s(process), sniffer.snapshot()
        span = at_after - at_before
        streams = {s: (n - sent_before.get(s, 0)) / span for s, n in sent_after.items() if n > sent_before.get(s, 0)}
        received = [(listener.window().frames - mark.frames) for listener, mark in zip(listeners, marks, strict=True)]
        return {"streams": streams, "cpu_percent": 100 * (cpu_after - cpu_before) / span, "received": received, "span": span}

    try:
        first = open_session(fleet.hub, token, node.node_id, **body)
        listeners.append(listening(fleet.hub, token, first, "one-0", frames=50))
        one = measure()
        more = [open_session(fleet.hub, token, node.node_id, **body) for _ in range(9)]
        assert {s["stream_id"] for s in more} == {first["stream_id"]}, more
        listeners.extend(listening(fleet.hub, token, s, f"ten-{i + 1}", frames=50) for i, s in enumerate(more))
        assert {s["stream_id"] for s in node_listeners(fleet.hub, node.node_id)} == {first["stream_id"]}
        assert len(node_listeners(fleet.hub, node.node_id)) == 10
        ten = measure()
    finally:
        sniffer.stop()
        for listener in listeners:
            listener.close()

    stream = first["stream_id"]
    rate_one, rate_ten = one["streams"].get(stream, 0.0), ten["streams"].get(stream, 0.0)
    print(
        f"\nnode with 1 listener: {rate_one:.0f} B/s published for listen, CPU {one['cpu_percent']:.1f} %; "
        f"with 10: {rate_ten:.0f} B/s, CPU {ten['cpu_percent']:.1f} %; "
        f"streams {sorted(one['streams'])} / {sorted(ten['streams'])}"
    )
    assert list(one["streams"]) == [stream] and list(ten["streams"]) == [stream], (one, ten)
    assert rate_one > 4000 and abs(rate_ten - rate_one) <= 0.1 * rate_one, (one, ten)  # 64 kb/s Opus: ~8 kB/s
    for listener, received in zip(listeners, ten["received"], strict=True):
        assert_continuous(listener)
        assert received >= ten["span"] / FRAME_S - 50, (listener.summary(), received)  # all ten got the window's audio


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_sessions_end_node_offline_when_the_node_stops(fleet: Fleet) -> None:
    node = online_node(fleet)
    token = fleet.hub.login()
    opened = [open_session(fleet.hub, token, node.node_id, codec=codec) for codec in ("opus", "pcm16")]
    listeners = [listening(fleet.hub, token, s, s["codec"]) for s in opened]
    try:
        node.stop()
        for listener in listeners:
            assert listener.closed.wait(45), listener.summary()
    finally:
        for listener in listeners:
            listener.close()
    for listener, opened_session in zip(listeners, opened, strict=True):
        print(listener.summary())
        assert listener.end is not None and listener.end["reason"] in ("node_offline", "node_stopped"), listener.summary()
        assert listener.texts[-1] == listener.end, listener.texts[-3:]  # the end is the last message before the close
        assert_continuous(listener)
        ended = session(fleet.hub, opened_session["id"])
        assert ended["state"] == "terminated" and ended["end_reason"] in ("node_offline", "node_stopped"), ended
        assert ended["ended_at"] and ended["bytes_sent"] > 0 and ended["frames_sent"] > 0, ended
        assert refused_status(fleet.hub, token, opened_session["stream_url"]) == 409
    assert node_listeners(fleet.hub, node.node_id) == []


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_an_admin_disconnects_a_listener_and_the_audit_log_says_who_and_why(fleet: Fleet) -> None:
    node = online_node(fleet)
    username = f"op-{uuid.uuid4().hex[:8]}"
    with fleet.hub.admin() as admin:
        created = admin.post(
            "/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": ["operator"], "sites": ["north"]}
        )
        assert created.status_code == 201, created.text
        me = admin.get("/api/v1/auth/me").json()["data"]["user"]
    operator = fleet.hub.login(username, PASSWORD)
    opened = open_session(fleet.hub, operator, node.node_id, codec="opus")
    assert opened["user"]["name"] == username or opened["user"]["id"] == created.json()["data"]["id"], opened
    listener = listening(fleet.hub, operator, opened, "operator")
    try:
        assert refused_status(fleet.hub, fleet.hub.login(), opened["stream_url"]) == 403  # not even an admin may take it over
        reason = "the stage mic is private during rehearsal"
        with fleet.hub.admin() as admin:
            response = admin.post(f"/api/v1/listen-sessions/{opened['id']}/disconnect", json={"reason": reason})
        assert response.status_code == 200, response.text
        ended = response.json()["data"]
        assert listener.closed.wait(15), listener.summary()
    finally:
        listener.close()
    assert ended["state"] == "terminated" and ended["end_reason"] == "disconnected", ended
    assert ended["ended_by"]["id"] == me["id"] and ended["ended_by"]["reason"] == reason, ended
    assert listener.end is not None and listener.end["reason"] == "disconnected", listener.summary()
    assert_continuous(listener)
    assert session(fleet.hub, opened["id"])["state"] == "terminated"
    assert refused_status(fleet.hub, operator, opened["stream_url"]) == 409
    with fleet.hub.admin() as admin:
        found = admin.get("/api/v1/audit-events", params={"action": "listen_session.disconnect", "target_id": opened["id"]})
    assert found.status_code == 200, found.text
    events = found.json()["data"]
    assert len(events) == 1, events
    event = events[0]
    assert event["actor"]["id"] == me["id"] and event["outcome"] == "success", event
    assert reason in json.dumps(event), event


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_client_that_goes_away_is_disconnected_then_terminated_after_the_grace(fleet: Fleet) -> None:
    node = online_node(fleet)
    listen_settings(fleet.hub, disconnect_grace_s=4)
    token = fleet.hub.login()
    opened = open_session(fleet.hub, token, node.node_id, codec="pcm16", sample_rate=24000, channels=[1])
    assert opened["state"] == "active" and opened["connected_at"] is None, opened
    first = listening(fleet.hub, token, opened, "first")
    assert first.hello is not None and first.hello["session"]["id"] == opened["id"], first.hello
    assert (first.hello["codec"], first.hello["sample_rate"], first.hello["channels"]) == ("pcm16", 24000, 1), first.hello
    assert first.formats == {("pcm16", 1, 24000)}
    assert session(fleet.hub, opened["id"])["connected_at"] is not None
    first.close()
    gone = wait_session(fleet.hub, opened["id"], "disconnected", timeout=10)
    assert gone["disconnected_at"] is not None and gone["ended_at"] is None, gone

    again = listening(fleet.hub, token, opened, "again")  # back within the grace: the same session, active again
    try:
        back = wait_session(fleet.hub, opened["id"], "active", timeout=10)
        assert back["end_reason"] is None, back
    finally:
        again.close()
    assert_continuous(first)
    assert_continuous(again)
    wait_session(fleet.hub, opened["id"], "disconnected", timeout=10)
    ended = wait_session(fleet.hub, opened["id"], "terminated", timeout=30)
    assert ended["end_reason"] == "client_gone" and ended["ended_at"] is not None, ended
    assert ended["bytes_sent"] >= first.bytes + again.bytes - 65536 and ended["frames_sent"] > 0, ended
    assert ended["bytes_per_s"] > 40000, ended  # pcm16 mono at 24 kHz: 48 kB/s while connected
    assert refused_status(fleet.hub, token, opened["stream_url"]) == 409
