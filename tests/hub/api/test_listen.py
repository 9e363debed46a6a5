"""Live listen at the hub (issue 23) with a real hub process and a stand-in node on its broker: opening sessions
(validation, limits, offline nodes), one node stream per format, the WebSocket's hello, chunks relayed unchanged
and its end, session states (client gone, reconnect, DELETE, node offline, node stream error), and the agent's
chunk route."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hark_fleet.hub.db.models import ListenSession
from hark_fleet.hub.services.listen_sessions import to_api
from hark_fleet.protocol.listen import MAX_CHUNK_BYTES, encode_chunk, parse_chunk
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import hub_database
from tests.harness import HubProcess, wait_for
from tests.hub.api.listen_node import StandInNode

PASSWORD = "listen-test-password-1"


class Socket:
    """A listener's WebSocket: texts and binary chunks as they arrive, in a thread."""

    def __init__(self, hub: HubProcess, stream_url: str, token: str | None = None, via: str = "header") -> None:
        url = hub.url.replace("http", "ws", 1) + stream_url
        headers = {}
        if via == "header" and token:
            headers["Authorization"] = f"Bearer {token}"
        elif via == "query" and token:
            url += f"&token={token}"
        elif via == "cookie" and token:
            headers["Cookie"] = f"hark_session={token}"
        self.ws: ClientConnection = connect(url, additional_headers=headers, open_timeout=10, proxy=None, compression=None)
        self.texts: list[dict[str, Any]] = []
        self.chunks: list[bytes] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            for message in self.ws:
                if isinstance(message, str):
                    self.texts.append(json.loads(message))
                else:
                    self.chunks.append(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def text(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: next((t for t in self.texts if t.get("type") == kind), None), timeout, f"a {kind} message"
        )
        return found

    def close(self) -> None:
        self.ws.close()
        self._thread.join(10)


def handshake_status(hub: HubProcess, stream_url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        ws = connect(hub.url.replace("http", "ws", 1) + stream_url, additional_headers=headers, open_timeout=10, proxy=None)
    except InvalidStatus as err:
        return err.response.status_code
    ws.close()
    return 101


@pytest.fixture
def node(hub: HubProcess) -> Iterator[StandInNode]:
    standin = StandInNode(hub).start()
    yield standin
    standin.stop()


@pytest.fixture(autouse=True)
def roomy_limits(hub: HubProcess) -> Iterator[None]:
    set_settings(hub, max_listeners_per_node=16, max_listeners_per_user=50, disconnect_grace_s=30)
    yield


def set_settings(hub: HubProcess, **values: Any) -> None:
    with hub.admin() as admin:
        response = admin.put("/api/v1/settings/listen", json=values)
    assert response.status_code == 200, response.text


def open_session(hub: HubProcess, node_id: str, token: str | None = None, **body: Any) -> dict[str, Any]:
    with hub.client(token or hub.login()) as client:
        response = client.post(f"/api/v1/nodes/{node_id}/listen", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def node_sessions(hub: HubProcess, node_id: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}/listen")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def session_state(hub: HubProcess, node_id: str, session_id: str) -> dict[str, Any] | None:
    """The session among the node's open ones, else its row read through the audit log's `after`."""
    for found in node_sessions(hub, node_id):
        if found["id"] == session_id:
            return found
    return None


def ended_session(hub: HubProcess, session_id: str) -> dict[str, Any]:
    """The session's last audited state, or its row in the database once the hub terminated it."""
    with hub_database(hub):
        return to_api(ListenSession.get_by_id(session_id))


def wait_ended(hub: HubProcess, session_id: str, timeout: float = 20) -> dict[str, Any]:
    ended: dict[str, Any] = wait_for(
        lambda: (row := ended_session(hub, session_id))["state"] == "terminated" and row, timeout, "session terminated", 0.1
    )
    return ended


def new_user(hub: HubProcess, role: str = "operator") -> str:
    username = f"listen-{role}-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        created = admin.post("/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": [role]})
    assert created.status_code == 201, created.text
    return hub.login(username, PASSWORD)


# -- opening --------------------------------------------------------------------------------------


def test_a_session_opens_active_and_unconnected_with_the_defaults_and_is_audited(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id)
    assert opened["state"] == "active" and opened["connected_at"] is None
    assert opened["codec"] == "opus" and opened["bitrate"] == 64000 and opened["sample_rate"] == 48000
    assert opened["channels"] == [0, 1] and opened["stream_id"].startswith("lst_")
    assert opened["node_name"] == node.name and opened["user"]["name"] == "admin" and opened["bytes_per_s"] == 0
    assert opened["stream_url"] == f"/api/v1/nodes/{node.node_id}/listen/stream?session={opened['id']}"
    with hub.admin() as admin:
        audit = admin.get("/api/v1/audit-events", params={"target_id": opened["id"]}).json()["data"]
    assert [e["action"] for e in audit] == ["listen_session.open"]
    assert [s["id"] for s in node_sessions(hub, node.node_id)] == [opened["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": [0, 2]}, "channels"),
        ({"channels": [0, 1, 1]}, "channels"),
        ({"channels": []}, "channels"),
        ({"channels": [1, 1]}, "channels"),
        ({"channels": [0], "programme": "Main"}, "programme"),
        ({"programme": "Main"}, "programme"),
        ({"codec": "mp3"}, "codec"),
        ({"codec": "opus", "bitrate": 1000}, "bitrate"),
        ({"codec": "pcm16", "bitrate": 64000}, "bitrate"),
        ({"codec": "opus", "sample_rate": 44100}, "sample_rate"),
        ({"codec": "pcm16", "sample_rate": 8000}, "sample_rate"),
    ],
)
def test_a_bad_listen_request_is_a_400_naming_the_field(
    hub: HubProcess, node: StandInNode, body: dict[str, Any], field: str
) -> None:
    with hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{node.node_id}/listen", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["fields"], response.text
    assert node_sessions(hub, node.node_id) == []


def test_unknown_fields_and_nodes_are_refused(hub: HubProcess, node: StandInNode) -> None:
    with hub.admin() as admin:
        assert admin.post(f"/api/v1/nodes/{node.node_id}/listen", json={"volume": 11}).status_code == 400
        missing = admin.post("/api/v1/nodes/nod_nothere/listen", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_an_offline_node_answers_409_node_offline(hub: HubProcess) -> None:
    standin = StandInNode(hub)  # enrolled, never connected: pending
    with hub.admin() as admin:
        response = admin.post(f"/api/v1/nodes/{standin.node_id}/listen", json={})
    assert response.status_code == 409 and response.json()["error"]["code"] == "node_offline", response.text


def test_the_listener_limits_answer_409_listen_limit(hub: HubProcess, node: StandInNode) -> None:
    set_settings(hub, max_listeners_per_node=2, max_listeners_per_user=50)
    open_session(hub, node.node_id)
    open_session(hub, node.node_id, codec="pcm16")
    with hub.admin() as admin:
        refused = admin.post(f"/api/v1/nodes/{node.node_id}/listen", json={})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "listen_limit" and error["limit"] == "max_listeners_per_node"
    assert "2 listeners, the most allowed" in error["message"]

    set_settings(hub, max_listeners_per_node=16, max_listeners_per_user=1)
    operator = new_user(hub)
    open_session(hub, node.node_id, token=operator)
    with hub.client(operator) as client:
        refused = client.post(f"/api/v1/nodes/{node.node_id}/listen", json={})
    assert refused.status_code == 409 and refused.json()["error"]["limit"] == "max_listeners_per_user", refused.text


def test_sessions_of_one_format_share_one_node_stream(hub: HubProcess, node: StandInNode) -> None:
    first = open_session(hub, node.node_id, channels=[0])
    second = open_session(hub, node.node_id, channels=[0])
    other = open_session(hub, node.node_id, channels=[0], codec="pcm16", sample_rate=16000)
    assert first["stream_id"] == second["stream_id"] != other["stream_id"]
    streams = node.wait_streams(2)
    assert {s["stream_id"] for s in streams} == {first["stream_id"], other["stream_id"]}
    pcm = next(s for s in streams if s["codec"] == "pcm16")
    assert pcm == {"stream_id": other["stream_id"], "channels": [0], "codec": "pcm16", "sample_rate": 16000, "bitrate": None}
    versions = [c["version"] for c in node.commands]
    assert versions == sorted(set(versions)), versions

    with hub.admin() as admin:
        for opened in (first, other):
            assert admin.delete(f"/api/v1/nodes/{node.node_id}/listen/{opened['id']}").status_code == 204
    assert [s["stream_id"] for s in node.wait_streams(1)] == [second["stream_id"]]
    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/nodes/{node.node_id}/listen/{second['id']}").status_code == 204
    node.wait_streams(0)


def test_the_node_is_told_its_streams_again_within_the_renewal_period(hub: HubProcess, node: StandInNode) -> None:
    opened = open_session(hub, node.node_id)
    node.wait_streams(1)
    seen = len(node.commands)
    wait_for(lambda: len(node.commands) > seen, 15, "a renewed cmd/listen", 0.2)
    assert node.streams()[0]["stream_id"] == opened["stream_id"]


# -- the socket --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["opus", "pcm16"])
def test_the_socket_says_hello_then_relays_the_node_chunks_unchanged(hub: HubProcess, node: StandInNode, codec: str) -> None:
    token = hub.login()
    opened = open_session(hub, node.node_id, token=token, codec=codec, channels=[1])
    stream = node.wait_streams(1)[0]
    socket = Socket(hub, opened["stream_url"], token)
    hello = socket.text("hello")
    assert hello["session"]["id"] == opened["id"] and hello["session"]["state"] == "active"
    assert hello["session"]["connected_at"] is not None
    assert (hello["codec"], hello["sample_rate"], hello["channels"], hello["frame_ms"]) == (codec, 48000, 1, 20)
    sent = [node.send_chunk(stream, seq) for seq in range(10)]
    wait_for(lambda: len(socket.chunks) == 10, 10, "ten chunks")
    assert socket.chunks == sent
    assert [parse_chunk(c).seq for c in socket.chunks] == list(range(10))
    stats = wait_for(
        lambda: next((t for t in socket.texts if t["type"] == "stats" and t["frames_sent"] == 10), None), 10, "stats"
    )
    assert stats["bytes_sent"] == sum(len(c) for c in sent) and stats["listeners"] == 1
    with hub.admin() as admin:
        assert admin.delete(f"/api/v1/nodes/{node.node_id}/listen/{opened['id']}").status_code == 204
    assert socket.text("end") == {"type": "end", "reason": "ended"}
    assert socket.closed.wait(10)
    ended = wait_ended(hub, opened["id"])
    assert ended["end_reason"] == "ended" and ended["ended_by"]["name"] == "admin"
    assert ended["bytes_sent"] == sum(len(c) for c in sent) and ended["frames_sent"] == 10


def test_the_socket_authenticates_by_query_token_or_cookie_and_only_for_its_owner(hub: HubProcess, node: StandInNode) -> None:
    operator = new_user(hub)
    opened = open_session(hub, node.node_id, token=operator)
    node.wait_streams(1)
    assert handshake_status(hub, opened["stream_url"], None) == 401
    assert handshake_status(hub, opened["stream_url"], hub.login()) == 403  # an admin does not take someone's session
    assert handshake_status(hub, opened["stream_url"].replace(opened["id"], "lsn_nothere"), operator) == 404
    for via in ("query", "cookie"):
        socket = Socket(hub, opened["stream_url"], operator, via=via)
        assert socket.text("hello")["session"]["id"] == opened["id"]
        socket.close()
    with hub.client(operator) as client:
        assert client.delete(f"/api/v1/nodes/{node.node_id}/listen/{opened['id']}").status_code == 204
    assert handshake_status(hub, opened["stream_url"], operator) == 409


def test_a_plain_get_of_the_stream_is_refused(hub: HubProcess, node: StandInNode) -> None:
    with hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{node.node_id}/listen/stream").status_code == 400
        opened = open_session(hub, node.node_id)
        response = admin.get(opened["stream_url"])
    assert response.status_code == 400


# -- states --------------------------------------------------------------------------------------


def test_a_client_gone_disconnects_then_reconnects_within_the_grace_then_ends_client_gone(
    hub: HubProcess, node: StandInNode
) -> None:
    set_settings(hub, disconnect_grace_s=3)
    token = hub.login()
    opened = open_session(hub, node.node_id, token=token)
    Socket(hub, opened["stream_url"], token).text("hello")
    first = Socket(hub, opened["stream_url"], token)  # a second socket replaces the first
    first.text("hello")
    first.close()
    gone = wait_for(
        lambda: (s := session_state(hub, node.node_id, opened["id"])) and s["state"] == "disconnected" and s, 10, "disc"
    )
    assert gone["disconnected_at"] is not None
    again = Socket(hub, opened["stream_url"], token)
    assert again.text("hello")["session"]["state"] == "active"
    again.close()
    ended = wait_ended(hub, opened["id"])
    assert ended["end_reason"] == "client_gone" and ended["ended_by"]["type"] == "system"
    node.wait_streams(0)


def test_a_session_never_connected_ends_after_the_grace(hub: HubProcess, node: StandInNode) -> None:
    set_settings(hub, disconnect_grace_s=1)
    opened = open_session(hub, node.node_id)
    assert wait_ended(hub, opened["id"])["end_reason"] == "client_gone"


def test_a_node_going_offline_ends_its_sessions_node_offline(hub: HubProcess) -> None:
    standin = StandInNode(hub).start()
    token = hub.login()
    opened = open_session(hub, standin.node_id, token=token)
    socket = Socket(hub, opened["stream_url"], token)
    socket.text("hello")
    standin.go_offline()
    assert socket.text("end", timeout=20) == {"type": "end", "reason": "node_offline"}
    assert wait_ended(hub, opened["id"])["end_reason"] == "node_offline"


def test_a_stream_error_from_the_node_ends_its_sessions_node_stopped(hub: HubProcess, node: StandInNode) -> None:
    token = hub.login()
    opened = open_session(hub, node.node_id, token=token)
    stream = node.wait_streams(1)[0]
    socket = Socket(hub, opened["stream_url"], token)
    socket.text("hello")
    error = {"stream_id": stream["stream_id"], "error": "libopus is not installed"}
    node.publish(f"listen/{stream['stream_id']}/error", json.dumps(error).encode(), qos=1)
    assert socket.text("end") == {"type": "end", "reason": "node_stopped"}
    ended = wait_ended(hub, opened["id"])
    assert ended["end_reason"] == "node_stopped" and ended["ended_by"]["reason"] == "libopus is not installed"
    node.wait_streams(0)


def test_ending_is_for_the_owner_or_a_listen_manager(hub: HubProcess, node: StandInNode) -> None:
    operator, other = new_user(hub), new_user(hub)
    opened = open_session(hub, node.node_id, token=operator)
    url = f"/api/v1/nodes/{node.node_id}/listen/{opened['id']}"
    with hub.client(other) as client:
        assert client.delete(url).status_code == 404
    with hub.admin() as admin:
        assert admin.delete(url).status_code == 204
        again = admin.delete(url)
    assert again.status_code == 409 and again.json()["error"]["code"] == "session_ended"
    with hub.admin() as admin:
        audit = admin.get("/api/v1/audit-events", params={"target_id": opened["id"], "action": "listen_session.end"})
    assert audit.json()["data"][0]["actor"]["name"] == "admin"


# -- the agent's chunk route --------------------------------------------------------------------------------------


def test_the_agent_chunk_route_relays_like_mqtt_and_refuses_what_is_not_a_chunk(hub: HubProcess, node: StandInNode) -> None:
    token = hub.login()
    opened = open_session(hub, node.node_id, token=token, codec="pcm16", channels=[0])
    stream = node.wait_streams(1)[0]
    socket = Socket(hub, opened["stream_url"], token)
    socket.text("hello")
    payload = encode_chunk("pcm16", 1, 48000, 7, 0, [b"\x01\x00" * 960, b"\x02\x00" * 960])
    assert node.post_chunk(stream["stream_id"], payload).status_code == 204
    wait_for(lambda: socket.chunks == [payload], 10, "the chunk over HTTP")

    garbage = node.post_chunk(stream["stream_id"], b"not a chunk at all, certainly not")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_request"
    opus = encode_chunk("opus", 1, 48000, 9, 0, [b"x" * 100])
    assert node.post_chunk(stream["stream_id"], opus).status_code == 400  # not this stream's format
    unknown = node.post_chunk("lst_nothere", payload)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_stream"
    assert node.post_chunk(stream["stream_id"], b"\0" * (MAX_CHUNK_BYTES + 1)).status_code == 413

    other = StandInNode(hub)
    mismatch = node.post_chunk(stream["stream_id"], payload, node_id=other.node_id)
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "node_mismatch"
    assert socket.chunks == [payload]

    node.publish(f"listen/{stream['stream_id']}", b"garbage over mqtt")
    node.send_chunk(stream, 11)
    wait_for(lambda: len(socket.chunks) == 2, 10, "the next good chunk")
    with hub.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'hark_listen_chunks_total{outcome="invalid_chunk"}' in metrics


def stalled_socket(hub: HubProcess, stream_url: str, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (its receive buffer kept small)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", hub.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET {stream_url} HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


def test_a_listener_that_stops_reading_gets_frames_dropped_not_the_others_delayed(hub: HubProcess, node: StandInNode) -> None:
    token = hub.login()
    opened = [open_session(hub, node.node_id, token=token, codec="pcm16", channels=[0]) for _ in range(2)]
    stream = node.wait_streams(1)[0]
    reader = Socket(hub, opened[0]["stream_url"], token)
    reader.text("hello")
    stalled = stalled_socket(hub, opened[1]["stream_url"], token)
    try:
        frame = b"\x01\x00" * 960  # 20 ms of 48 kHz mono
        sent = [encode_chunk("pcm16", 1, 48000, i * 30, 0, [frame] * 30) for i in range(60)]  # 36 s of audio, 3.5 MB
        for payload in sent:
            assert node.post_chunk(stream["stream_id"], payload).status_code == 204
        wait_for(lambda: len(reader.chunks) == len(sent), 30, "every chunk at the reading listener")
        assert reader.chunks == sent
        with hub.admin() as admin:
            metrics = admin.get("/metrics").text.splitlines()
        dropped = [line for line in metrics if line.startswith("hark_listen_frames_dropped_total")]
        assert dropped and float(dropped[0].split()[-1]) >= 30 * 30, dropped
    finally:
        stalled.close()
