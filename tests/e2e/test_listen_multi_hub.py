"""Live listen across two hub instances (issue 24) with real processes: two `hark-hub` on one PostgreSQL and one
Mosquitto with dynamic security, and a real node with a synthetic source.

Listeners of one format on both hubs get the node's chunks while the node runs one stream; a session opened on one
hub and streamed from the other is taken over there; a disconnect asked on one hub reaches the listener on the
other and leaves the other listeners flowing; `kill -9` of one hub leaves the survivor's listener flowing without a
gap and the survivor ends the dead hub's sessions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.e2e.listen_clients import Listener, ListenSniffer, listen_settings, open_session, session
from tests.harness import (
    HubProcess,
    MosquittoDynsec,
    NodeProcess,
    create_database,
    drop_database,
    wait_for,
)

SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
OPUS = {"codec": "opus", "bitrate": 64000}


@dataclass
class TwoHubs:
    database_url: str
    broker: MosquittoDynsec
    one: HubProcess
    two: HubProcess
    node: NodeProcess

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{proc.log()[-3000:]}"
            for name, proc in (("hub one", self.one), ("hub two", self.two), ("node", self.node))
        )


def start_hub(workdir: Path, database_url: str, broker: MosquittoDynsec, shared_data: Path) -> HubProcess:
    hub = HubProcess(
        workdir,
        database_url=database_url,
        mqtt_url=broker.admin_url,
        env_extra={"HARK_MQTT_DYNSEC": "true", "HARK_MQTT_SHARED": "on", "HARK_DATA_DIR": str(shared_data)},
    )
    hub.start()
    return hub


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[TwoHubs]:
    database_url = create_database()
    broker = MosquittoDynsec(tmp_path / "mosquitto")
    broker.start()
    shared = tmp_path / "shared-data"
    started: list[HubProcess] = []
    node: NodeProcess | None = None
    try:
        for name in ("one", "two"):  # one at a time: the first migrates the database and makes the first admin
            started.append(start_hub(tmp_path / name, database_url, broker, shared))
        one, two = started
        one.ensure_site("north")
        with one.admin() as admin:
            response = admin.post("/api/v1/nodes/enroll", json={"name": "box-listen", "site": "north"})
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        node = NodeProcess(
            tmp_path / "node", one.url, data["node"]["id"], data["credential"], env_extra={"HARK_NODE_AUDIO_SOURCE": SINE}
        )
        node.start()
        wait_for(lambda: node_status(two, data["node"]["id"]) == "online", 30, "the node online", 0.3)
        listen_settings(one, max_listeners_per_node=16, max_listeners_per_user=16, disconnect_grace_s=60)
        yield TwoHubs(database_url, broker, one, two, node)
    finally:
        if node is not None:
            node.stop()
        for hub in started:
            if hub.proc is not None:
                hub.stop()
        broker.stop()
        drop_database(database_url)


def node_status(hub: HubProcess, node_id: str) -> str:
    with hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}")
    return str(response.json()["data"]["status"]) if response.status_code == 200 else ""


def instance_of(database_url: str, hub: HubProcess) -> str:
    """The instance id the hub process registered (by its pid)."""
    assert hub.proc is not None
    pid = hub.proc.pid

    def registered() -> str | None:
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM hub_instance WHERE pid = %s AND stopped_at IS NULL", (pid,))
            row = cur.fetchone()
        return str(row[0]) if row else None

    found: str = wait_for(registered, 20, f"hub pid {pid} in hub_instance", interval=0.2)
    return found


def held_by(database_url: str, session_id: str) -> str | None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT hub_instance FROM listen_session WHERE id = %s", (session_id,))
        row = cur.fetchone()
    return row[0] if row else None


def listening(hub: HubProcess, token: str, opened: dict[str, Any], name: str) -> Listener:
    listener = Listener(hub, token, opened["stream_url"], name=name).start()
    listener.wait_frames(25)
    return listener


def flows(listener: Listener, frames: int = 100) -> None:
    """The listener receives `frames` more frames from now (2 s of audio)."""
    listener.wait_frames(listener.frames + frames, timeout=30)


def published_streams(sniffer: ListenSniffer, seconds: float = 3.0) -> set[str]:
    """The stream ids the node published chunks of over a window."""
    _, before = sniffer.snapshot()
    time.sleep(seconds)  # a measuring window, not a wait for a condition
    _, after = sniffer.snapshot()
    return {stream for stream, sent in after.items() if sent > before.get(stream, 0)}


def test_listeners_on_two_hubs_share_one_node_stream_and_survive_the_other_hub(hubs: TwoHubs) -> None:
    one, two, node = hubs.one, hubs.two, hubs.node
    token = one.login()
    broker = hubs.broker
    sniffer = ListenSniffer(broker.host, broker.port, broker.admin_username, broker.admin_password, node.node_id)
    listeners: list[Listener] = []
    try:
        on_one = open_session(one, token, node.node_id, **OPUS)
        on_two = open_session(two, token, node.node_id, **OPUS)
        moved = open_session(one, token, node.node_id, **OPUS)  # opened on one, its stream taken from two
        assert on_one["stream_id"] == on_two["stream_id"] == moved["stream_id"], (on_one, on_two, moved)
        a = listening(one, token, on_one, "a-on-one")
        b = listening(two, token, on_two, "b-on-two")
        c = listening(two, token, moved, "c-opened-on-one-streamed-from-two")
        listeners += [a, b, c]
        first, second = instance_of(hubs.database_url, one), instance_of(hubs.database_url, two)
        assert held_by(hubs.database_url, on_one["id"]) == first
        assert held_by(hubs.database_url, on_two["id"]) == second
        assert held_by(hubs.database_url, moved["id"]) == second
        assert published_streams(sniffer) == {on_one["stream_id"]}, "the node runs one stream for both hubs"

        # a disconnect asked on hub two reaches the listener on hub one; the others flow on
        with two.admin() as admin:
            response = admin.post(f"/api/v1/listen-sessions/{on_one['id']}/disconnect", json={"reason": "test"})
        assert response.status_code == 200, response.text
        wait_for(lambda: a.closed.is_set(), 20, "hub one to close the disconnected listener's socket")
        assert a.end == {"type": "end", "reason": "disconnected"}, a.summary()
        flows(b)
        flows(c)

        # a new listener on hub one, then hub two dies without a goodbye
        d = listening(one, token, open_session(one, token, node.node_id, **OPUS), "d-on-one")
        listeners.append(d)
        assert two.proc is not None
        two.proc.kill()
        two.proc.wait()
        two.proc = None
        killed_at = d.frames
        d.wait_frames(killed_at + 50 * 40, timeout=90)  # 40 s of audio: past the dead hub's 30 s lease on the node
        assert d.gaps == [] and d.discontinuities == 0 and d.error is None and not d.closed.is_set(), d.summary()
        for dead in (on_two, moved):
            ended = wait_for(
                lambda s=dead: (row := session(one, s["id"]))["state"] == "terminated" and row, 30, "the dead hub's session ended"
            )
            assert ended["end_reason"] == "hub_stopped", ended
        assert session(one, d.hello["session"]["id"] if d.hello else "")["state"] == "active"
        assert published_streams(sniffer) == {on_one["stream_id"]}
    except AssertionError:
        print(hubs.logs())
        raise
    finally:
        sniffer.stop()
        for listener in listeners:
            listener.close()
