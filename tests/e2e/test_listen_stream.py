"""Live listen through the hub with a real node process (issue 23): the WebSocket gets the hello and the node's
chunks (opus and pcm16, consecutive seq, over MQTT and over the agent HTTP route), two sessions of one format cost
the node one stream, the node stopping ends its sessions `node_offline`, and a hub restart ends what was open."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from hark_fleet.hub.db.models import ListenSession
from hark_fleet.hub.services.listen_sessions import to_api
from hark_fleet.protocol.listen import parse_chunk
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import hub_database
from tests.e2e.conftest import Fleet
from tests.harness import HubProcess, NodeProcess, wait_for

SOURCE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"


class Ear:
    """A listener's socket: its texts, and every chunk parsed (seq continuity checked by the test)."""

    def __init__(self, hub: HubProcess, stream_url: str, token: str) -> None:
        url = hub.url.replace("http", "ws", 1) + stream_url
        self.ws: ClientConnection = connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10, proxy=None, compression=None
        )
        self.texts: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.formats: set[tuple[str, int, int]] = set()
        self.bytes = 0
        self.closed = threading.Event()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        try:
            for message in self.ws:
                if isinstance(message, str):
                    self.texts.append(json.loads(message))
                    continue
                chunk = parse_chunk(message)
                self.formats.add((chunk.codec, chunk.channels, chunk.sample_rate))
                self.seqs.extend(range(chunk.seq, chunk.seq + len(chunk.frames)))
                self.bytes += len(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def text(self, kind: str, timeout: float = 20) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(lambda: next((t for t in self.texts if t["type"] == kind), None), timeout, kind)
        return found

    def frames(self, count: int, timeout: float = 30) -> list[int]:
        wait_for(lambda: len(self.seqs) >= count, timeout, f"{count} frames")
        return list(self.seqs)

    def close(self) -> None:
        self.ws.close()


def online(fleet: Fleet, **env: str) -> NodeProcess:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SOURCE, **env)
    node.start()
    fleet.wait_status(node, "online")
    wait_for(lambda: fleet.detail(node)["metrics"].get("audio"), 20, "the node's first heartbeat with its audio", 0.2)
    return node


def open_session(hub: HubProcess, token: str, node_id: str, **body: Any) -> dict[str, Any]:
    with hub.client(token) as client:
        response = client.post(f"/api/v1/nodes/{node_id}/listen", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def stored(hub: HubProcess, session_id: str) -> dict[str, Any]:
    with hub_database(hub):
        return to_api(ListenSession.get_by_id(session_id))


def wait_state(hub: HubProcess, session_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(lambda: (s := stored(hub, session_id))["state"] == state and s, timeout, state, 0.2)
    return found


def consecutive(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_real_node_streams_opus_and_pcm16_to_listeners_sharing_one_stream_per_format(fleet: Fleet) -> None:
    node = online(fleet)
    token = fleet.hub.login()
    opus = [open_session(fleet.hub, token, node.node_id, codec="opus", channels=[0, 1]) for _ in range(2)]
    pcm = open_session(fleet.hub, token, node.node_id, codec="pcm16", channels=[1], sample_rate=16000)
    assert opus[0]["stream_id"] == opus[1]["stream_id"] != pcm["stream_id"]
    ears = [Ear(fleet.hub, s["stream_url"], token) for s in (*opus, pcm)]
    for ear in ears:
        assert ear.text("hello")["session"]["state"] == "active"
    for ear in ears:
        seqs = ear.frames(50)
        assert consecutive(seqs), seqs[:60]
    assert ears[0].formats == ears[1].formats == {("opus", 2, 48000)}
    assert ears[2].formats == {("pcm16", 1, 16000)}
    # the two opus listeners got the same frames of the one stream
    common = sorted(set(ears[0].seqs) & set(ears[1].seqs))
    assert len(common) >= 25

    with fleet.hub.client(token) as client:
        for opened in (*opus, pcm):
            assert client.delete(f"/api/v1/nodes/{node.node_id}/listen/{opened['id']}").status_code == 204
    for ear in ears:
        assert ear.text("end") == {"type": "end", "reason": "ended"}
    ended = stored(fleet.hub, opus[0]["id"])
    assert ended["bytes_sent"] > 0 and ended["frames_sent"] >= 50


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_a_node_sending_over_http_reaches_the_listener_through_the_agent_route(fleet: Fleet) -> None:
    fleet.hub.env_extra["HARK_LISTEN_TRANSPORT"] = "http"
    fleet.hub.stop()
    fleet.hub.start()
    node = online(fleet)
    token = fleet.hub.login()
    opened = open_session(fleet.hub, token, node.node_id, codec="pcm16", channels=[0])
    ear = Ear(fleet.hub, opened["stream_url"], token)
    ear.text("hello")
    seqs = ear.frames(50)
    assert consecutive(seqs), seqs[:60]
    with fleet.hub.admin() as admin:
        metrics = admin.get("/metrics").text.splitlines()
    posted = [line for line in metrics if line.startswith("hark_http_requests_total") and "/listen/chunk" in line]
    assert any('status="204"' in line for line in posted), posted


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_the_node_stopping_ends_its_sessions_and_a_hub_restart_ends_those_left_open(fleet: Fleet) -> None:
    node = online(fleet)
    token = fleet.hub.login()
    opened = open_session(fleet.hub, token, node.node_id)
    ear = Ear(fleet.hub, opened["stream_url"], token)
    ear.frames(10)
    node.stop()
    assert ear.text("end", timeout=40) == {"type": "end", "reason": "node_offline"}
    assert wait_state(fleet.hub, opened["id"], "terminated")["end_reason"] == "node_offline"

    node.start()
    fleet.wait_status(node, "online")
    left = open_session(fleet.hub, token, node.node_id, codec="pcm16")
    ear = Ear(fleet.hub, left["stream_url"], token)
    ear.frames(10)
    fleet.hub.stop()  # a graceful stop: the socket hears it
    assert ear.text("end") == {"type": "end", "reason": "hub_stopped"}
    assert stored(fleet.hub, left["id"])["end_reason"] == "hub_stopped"
    fleet.hub.start()
    fleet.wait_status(node, "online")
    crashed = open_session(fleet.hub, token := fleet.hub.login(), node.node_id)
    Ear(fleet.hub, crashed["stream_url"], token).frames(10)
    assert fleet.hub.proc is not None
    fleet.hub.proc.kill()  # no goodbye: the session stays open in the database until the next start
    fleet.hub.proc.wait()
    fleet.hub.proc = None
    assert stored(fleet.hub, crashed["id"])["state"] == "active"
    fleet.hub.start()
    assert stored(fleet.hub, crashed["id"])["end_reason"] == "hub_stopped"
    with fleet.hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{node.node_id}/listen").json()["data"] == []
