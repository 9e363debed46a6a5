"""Live listen when the hub is one instance of several (issue 24), with a real hub process on PostgreSQL and a
stand-in node: what the other instances would do is written into the shared database as they would write it.

`cmd/listen` names the instance and the format's stream id; a session ended or taken over by another instance is
let go here; sessions of an instance gone are ended and those of a live one kept; chunks of streams nobody here
listens to are not counted as drops; the limits count every instance's sessions.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import HubInstance, ListenSession
from hark_fleet.protocol.listen import stream_id_for

from tests.conftest import hub_database
from tests.harness import HubProcess, hub_on, wait_for
from tests.hub.api.listen_node import StandInNode
from tests.hub.api.test_listen import Socket, open_session, set_settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with hub_on("postgres", tmp_path_factory.mktemp("hub-cluster")) as process:
        yield process


@pytest.fixture
def node(hub: HubProcess) -> Iterator[StandInNode]:
    standin = StandInNode(hub).start()
    yield standin
    standin.stop()


@pytest.fixture(autouse=True)
def roomy_limits(hub: HubProcess) -> Iterator[None]:
    set_settings(hub, max_listeners_per_node=16, max_listeners_per_user=50, disconnect_grace_s=30)
    yield


def instance_of(hub: HubProcess, session_id: str) -> str | None:
    with hub_database(hub):
        return ListenSession.get_by_id(session_id).hub_instance


def other_instance(hub: HubProcess, name: str, seen_ago_s: float) -> str:
    """A hub instance row as another process would keep it: seen `seen_ago_s` ago (negative: in the future)."""
    instance = f"{name}-{uuid.uuid4().hex[:6]}"
    with hub_database(hub):
        HubInstance.create(id=instance, host="elsewhere", pid=1, seen_at=utcnow() - timedelta(seconds=seen_ago_s))
    return instance


def session_row(hub: HubProcess, node: StandInNode, instance: str) -> str:
    """An open session of `node` whose listener is on `instance` (as that instance's POST would make it)."""
    session_id = f"lsn_{uuid.uuid4().hex[:20]}"
    with hub_database(hub):
        ListenSession.create(
            id=session_id,
            node_id=node.node_id,
            site=None,
            actor={"type": "user", "id": "usr_x", "name": "elsewhere"},
            codec="pcm16",
            sample_rate=48000,
            channels=[0],
            stream_id=stream_id_for(node.node_id, [0], "pcm16", 48000, None),
            hub_instance=instance,
            state="active",
            started_at=utcnow(),
        )
    return session_id


def state_of(hub: HubProcess, session_id: str) -> tuple[str, str | None]:
    with hub_database(hub):
        row = ListenSession.get_by_id(session_id)
        return row.state, row.end_reason


def test_cmd_listen_names_this_instance_and_the_stream_id_is_the_node_and_formats(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id, codec="opus", bitrate=32000, sample_rate=24000, channels=[1])
    assert opened["stream_id"] == stream_id_for(node.node_id, [1], "opus", 24000, 32000)
    node.wait_streams(1)
    command = node.latest()
    assert command is not None and command["hub"] == instance_of(hub, opened["id"]) and command["hub"]
    assert [s["stream_id"] for s in command["streams"]] == [opened["stream_id"]]


def test_sessions_of_an_instance_gone_are_ended_and_those_of_a_live_one_kept(hub: HubProcess, node: StandInNode) -> None:
    gone = session_row(hub, node, other_instance(hub, "gone", seen_ago_s=60))
    never_seen = session_row(hub, node, "never-registered")
    live = session_row(hub, node, other_instance(hub, "live", seen_ago_s=-3600))
    wait_for(lambda: state_of(hub, gone)[0] == "terminated", 30, "the gone instance's session ended", 0.2)
    assert state_of(hub, gone) == ("terminated", "hub_stopped")
    assert state_of(hub, never_seen) == ("terminated", "hub_stopped")  # ended by the same pass
    assert state_of(hub, live) == ("active", None)
    with hub_database(hub):
        assert "gone" in ListenSession.get_by_id(gone).ended_by["reason"]


def test_a_session_ended_by_another_instance_closes_its_socket_here(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id, codec="pcm16")
    socket = Socket(hub, opened["stream_url"], hub.login())
    try:
        socket.text("hello")
        stream = node.wait_streams(1)[0]
        with hub_database(hub):  # as a disconnect handled by another instance writes it
            ListenSession.update(state="terminated", end_reason="disconnected", ended_at=utcnow()).where(
                ListenSession.id == opened["id"]
            ).execute()
        assert socket.text("end", timeout=15) == {"type": "end", "reason": "disconnected"}
        assert socket.closed.wait(10)
        wait_for(lambda: stream["stream_id"] not in [s["stream_id"] for s in node.streams()], 10, "the stream dropped")
    finally:
        socket.close()


def test_a_session_taken_over_by_another_instance_is_let_go_without_ending_it(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id, codec="pcm16", channels=[1])
    other = other_instance(hub, "other", seen_ago_s=-3600)
    socket = Socket(hub, opened["stream_url"], hub.login())
    try:
        socket.text("hello")
        node.wait_streams(1)
        with hub_database(hub):  # as another instance's take-over writes it (its client's stream reached it)
            ListenSession.update(hub_instance=other).where(ListenSession.id == opened["id"]).execute()
        assert socket.closed.wait(15)
        assert [t for t in socket.texts if t.get("type") == "end"] == []
        wait_for(lambda: node.streams() == [], 10, "an empty set for the node from this instance")
        assert state_of(hub, opened["id"]) == ("active", None)  # the other instance holds it now
    finally:
        socket.close()


def test_a_session_opened_elsewhere_is_taken_over_when_its_stream_connects_here(hub: HubProcess, node: StandInNode) -> None:
    busy = other_instance(hub, "busy", seen_ago_s=-3600)
    opened = open_session(hub, node.node_id, codec="pcm16")
    with hub_database(hub):  # as if another instance had opened it (its listener not here)
        ListenSession.update(hub_instance=busy).where(ListenSession.id == opened["id"]).execute()
    wait_for(lambda: node.streams() == [], 10, "this instance to let go of the session")
    socket = Socket(hub, opened["stream_url"], hub.login())
    try:
        assert socket.text("hello")["session"]["id"] == opened["id"]
        stream = node.wait_streams(1)[0]
        assert instance_of(hub, opened["id"]) == node.latest()["hub"]  # type: ignore[index]
        payload = node.send_chunk(stream, 1)
        wait_for(lambda: socket.chunks == [payload], 10, "the chunk relayed to the listener taken over")
    finally:
        socket.close()


def test_chunks_of_a_stream_nobody_here_listens_to_are_not_counted_as_drops(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id, codec="pcm16")
    socket = Socket(hub, opened["stream_url"], hub.login())
    try:
        socket.text("hello")
        stream = node.wait_streams(1)[0]
        before = unknown_drops(hub)
        for seq in range(5):
            node.send_chunk({**stream, "stream_id": "lst_another_instances"}, seq)
        payload = node.send_chunk(stream, 7)
        wait_for(lambda: payload in socket.chunks, 10, "the listened stream's chunk")
        assert unknown_drops(hub) == before
    finally:
        socket.close()


def unknown_drops(hub: HubProcess) -> float:
    with hub.admin() as admin:
        metrics = admin.get("/metrics").text
    found = re.search(r'hark_listen_chunks_total\{outcome="unknown_stream"\} ([0-9.e+]+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_the_per_node_limit_counts_the_sessions_of_every_instance(hub: HubProcess, node: StandInNode) -> None:
    set_settings(hub, max_listeners_per_node=2)
    live = other_instance(hub, "live", seen_ago_s=-3600)
    session_row(hub, node, live)
    open_session(hub, node.node_id)
    with hub.admin() as admin:
        refused = admin.post(f"/api/v1/nodes/{node.node_id}/listen", json={})
    error = refused.json()["error"]
    assert refused.status_code == 409 and error["limit"] == "max_listeners_per_node", refused.text
