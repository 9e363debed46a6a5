"""The fleet on the hub: enrollment, node credentials, agent routes, status, outbox dedup, broker identity, events."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from hark_fleet.hub.auth.tokens import secret_hash
from hark_fleet.hub.db.models import Node
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import hub_database
from tests.harness import HubProcess, Mosquitto, running_hub, wait_for


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enroll(hub: HubProcess, **body: object) -> tuple[dict, str]:
    if isinstance(body.get("site"), str):
        hub.ensure_site(str(body["site"]))  # a node's site must exist
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}", **body})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"], data["credential"]


def heartbeat(msg_id: str, seq: int = 1, **extra: object) -> dict:
    return {"msg_id": msg_id, "ts": now_iso(), "seq": seq, "agent_version": "0.1.0", "uptime_s": 5.0, **extra}


def mqtt_client(hub: HubProcess, username: str, password: str) -> tuple[mqtt.Client, list[bool]]:
    """A connected paho client on the hub's embedded broker (or a refusal recorded in the list)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(c, userdata, flags, reason, properties) -> None:
        outcome.append(not reason.is_failure)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    done.wait(5)
    return client, outcome


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def node_detail(hub: HubProcess, node_id: str) -> dict:
    with hub.admin() as admin:
        return admin.get(f"/api/v1/nodes/{node_id}").json()["data"]


# -- enrollment and credentials -----------------------------------------------------------


def test_enrollment_shows_the_credential_once_and_stores_only_its_hash(hub: HubProcess) -> None:
    node, credential = enroll(hub, site="north", tags=["roof"], hardware_id=f"hw-{uuid.uuid4().hex[:6]}")
    assert credential.startswith("hkn_")
    assert node["status"] == "pending" and node["site"] == "north" and node["tags"] == ["roof"]
    with hub_database(hub):
        stored = Node.get_by_id(node["id"])
    assert stored.credential_hash == secret_hash(credential)
    assert credential not in json.dumps(node_detail(hub, node["id"]))
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"action": "node.enroll", "target_id": node["id"]}).json()["data"]
    assert len(events) == 1 and credential not in json.dumps(events)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": ""}, "name"), ({"name": "x", "tags": ["no spaces"]}, "tags"), ({"name": "x", "site": "../etc"}, "site")],
)
def test_enrollment_validates_its_fields(hub: HubProcess, body: dict, field: str) -> None:
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_a_hardware_id_enrolls_once(hub: HubProcess) -> None:
    hardware_id = f"hw-{uuid.uuid4().hex[:6]}"
    enroll(hub, hardware_id=hardware_id)
    with hub.admin() as admin:
        assert admin.post("/api/v1/nodes/enroll", json={"name": "again", "hardware_id": hardware_id}).status_code == 409


def test_the_agent_config_route_answers_its_own_node_only(hub: HubProcess) -> None:
    node_a, credential_a = enroll(hub)
    node_b, _ = enroll(hub)
    with hub.client(credential_a) as client:
        config = client.get(f"/api/v1/nodes/{node_a['id']}/config")
        mismatch = client.get(f"/api/v1/nodes/{node_b['id']}/config")
        users_route = client.get("/api/v1/nodes")
    assert config.status_code == 200
    data = config.json()["data"]
    assert data["node_id"] == node_a["id"]
    assert data["mqtt_url"] == f"mqtt://127.0.0.1:{hub.mqtt_port}"
    assert data["heartbeat_interval_s"] == 10
    assert abs(datetime.fromisoformat(data["hub_time"].replace("Z", "+00:00")).timestamp() - time.time()) < 5
    assert mismatch.status_code == 403
    assert mismatch.json()["error"]["code"] == "node_mismatch"
    assert users_route.status_code == 403


def test_rotation_without_grace_refuses_the_old_credential_at_once(hub: HubProcess) -> None:
    node, old = enroll(hub)
    client, outcome = mqtt_client(hub, node["id"], old)
    assert outcome == [True]
    dropped = threading.Event()
    client.on_disconnect = lambda *a: dropped.set()
    with hub.admin() as admin:
        rotated = admin.post(f"/api/v1/nodes/{node['id']}/credentials/rotate")
    assert rotated.status_code == 201
    new = rotated.json()["data"]["credential"]
    assert dropped.wait(5), "the connected session was not dropped"
    client.loop_stop()
    with hub.client(old) as c:
        assert c.get(f"/api/v1/nodes/{node['id']}/config").status_code == 401
    with hub.client(new) as c:
        assert c.get(f"/api/v1/nodes/{node['id']}/config").status_code == 200
    again, outcome = mqtt_client(hub, node["id"], old)
    assert outcome == [False]
    again.loop_stop()
    fresh, outcome = mqtt_client(hub, node["id"], new)
    assert outcome == [True]
    close(fresh)


def test_rotation_with_grace_and_delivery_pushes_the_new_credential(hub: HubProcess) -> None:
    node, old = enroll(hub)
    client, outcome = mqtt_client(hub, node["id"], old)
    received: list[dict] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: received.append({"topic": m.topic, **json.loads(m.payload)})
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(f"hark/v1/nodes/{node['id']}/cmd/#", qos=1)
    assert subscribed.wait(5)
    with hub.admin() as admin:
        rotated = admin.post(f"/api/v1/nodes/{node['id']}/credentials/rotate", json={"grace_s": 2, "deliver": True})
    new = rotated.json()["data"]["credential"]
    wait_for(lambda: received, 5, "the new credential on cmd/credentials")
    assert received[0]["topic"].endswith("/cmd/credentials") and received[0]["credential"] == new
    assert client.is_connected(), "a rotation with grace keeps the session"
    with hub.client(old) as c:
        assert c.get(f"/api/v1/nodes/{node['id']}/config").status_code == 200
    close(client)
    time.sleep(2.5)
    with hub.client(old) as c:
        assert c.get(f"/api/v1/nodes/{node['id']}/config").status_code == 401
    _, outcome = mqtt_client(hub, node["id"], old)
    assert outcome == [False]


# -- broker identity --------------------------------------------------------------------------


def test_a_node_publishes_only_under_its_own_prefix_and_subscribes_only_to_its_commands(hub: HubProcess) -> None:
    node_a, credential_a = enroll(hub)
    node_b, credential_b = enroll(hub)
    a, _ = mqtt_client(hub, node_a["id"], credential_a)
    b, _ = mqtt_client(hub, node_b["id"], credential_b)
    granted: list[list[int]] = []
    b_got: list[str] = []
    done = threading.Event()

    def on_subscribe(c, u, mid, reason_codes, properties) -> None:
        granted.append([rc.value for rc in reason_codes])
        done.set()

    a.on_subscribe = on_subscribe
    b.on_message = lambda c, u, m: b_got.append(m.topic)
    b.subscribe(f"hark/v1/nodes/{node_b['id']}/cmd/#", qos=1)
    for topic in ("#", f"hark/v1/nodes/{node_b['id']}/cmd/#", "hark/v1/nodes/+/heartbeat"):
        done.clear()
        a.subscribe(topic, qos=1)
        assert done.wait(5)
    assert granted == [[128], [128], [128]]
    # A forging a command to B and a heartbeat in B's name: neither is delivered or stored.
    a.publish(f"hark/v1/nodes/{node_b['id']}/cmd/credentials", b'{"credential": "hkn_forged"}', qos=1).wait_for_publish(5)
    a.publish(f"hark/v1/nodes/{node_b['id']}/heartbeat", json.dumps(heartbeat("forged-1")), qos=1).wait_for_publish(5)
    # B's own heartbeat is accepted, so the check above is not vacuous.
    b.publish(f"hark/v1/nodes/{node_b['id']}/heartbeat", json.dumps(heartbeat("real-1", uptime_s=42.0)), qos=1).wait_for_publish(
        5
    )
    wait_for(lambda: node_detail(hub, node_b["id"])["metrics"].get("uptime_s") == 42.0, 5, "B's own heartbeat")
    time.sleep(0.5)
    assert b_got == [f"hark/v1/nodes/{node_b['id']}/cmd/ack"]  # the hub acknowledging B's heartbeat, nothing forged
    with hub_database(hub):
        from hark_fleet.hub.db.models import ReceivedMessage

        stored = [r.msg_id for r in ReceivedMessage.select().where(ReceivedMessage.node_id == node_b["id"])]
    assert stored == ["real-1"]
    close(a)
    close(b)


def test_a_node_never_receives_another_nodes_retained_messages(hub: HubProcess) -> None:
    node_a, credential_a = enroll(hub)
    a, _ = mqtt_client(hub, node_a["id"], credential_a)
    a.publish(
        f"hark/v1/nodes/{node_a['id']}/status", json.dumps({"state": "online", "ts": now_iso()}), qos=1, retain=True
    ).wait_for_publish(5)
    wait_for(lambda: node_detail(hub, node_a["id"])["status"] == "online", 5, "A online")
    node_b, credential_b = enroll(hub)
    b, _ = mqtt_client(hub, node_b["id"], credential_b)
    got: list[str] = []
    subscribed = threading.Event()
    b.on_message = lambda c, u, m: got.append(m.topic)
    b.on_subscribe = lambda *a: subscribed.set()
    b.subscribe(f"hark/v1/nodes/{node_b['id']}/cmd/#", qos=1)
    assert subscribed.wait(5)
    time.sleep(0.5)
    assert got == []
    close(a)
    close(b)


def test_strangers_and_wrong_passwords_cannot_log_in(hub: HubProcess) -> None:
    node, _ = enroll(hub)
    for username, password in ((node["id"], "hkn_wrong"), ("nobody", "x"), ("", "")):
        client, outcome = mqtt_client(hub, username, password)
        client.loop_stop()
        assert outcome == [False], username


# -- status, heartbeats and the outbox ---------------------------------------------------------------


def test_status_online_then_last_will_offline(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node["id"], clean_session=False)
    client.username_pw_set(node["id"], credential)
    status_topic = f"hark/v1/nodes/{node['id']}/status"
    client.will_set(status_topic, json.dumps({"state": "offline", "ts": now_iso()}), qos=1, retain=True)
    client.connect("127.0.0.1", hub.mqtt_port)
    client.loop_start()
    client.publish(status_topic, json.dumps({"state": "online", "ts": now_iso(), "agent_version": "9.9"}), qos=1, retain=True)
    wait_for(lambda: node_detail(hub, node["id"])["status"] == "online", 5, "online")
    # An abrupt loss of the connection: the broker publishes the will.
    client.loop_stop()
    client.socket().close()
    wait_for(lambda: node_detail(hub, node["id"])["status"] == "offline", 60, "offline from the last will")
    detail = node_detail(hub, node["id"])
    assert [c["to"] for c in detail["status_changes"]][:3] == ["offline", "online", "pending"]
    assert detail["version"] == "9.9"


def test_outbox_messages_are_applied_once_and_acknowledged(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    client, _ = mqtt_client(hub, node["id"], credential)
    acks: list[list[str]] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: acks.append(json.loads(m.payload)["ids"])
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(f"hark/v1/nodes/{node['id']}/cmd/ack", qos=1)
    assert subscribed.wait(5)
    topic = f"hark/v1/nodes/{node['id']}/health"
    report = {
        "msg_id": "h-1",
        "ts": now_iso(),
        "kind": "outbox.high",
        "state": "open",
        "severity": "warning",
        "details": {"depth": 9},
    }
    for _ in range(3):  # the same message replayed three times
        client.publish(topic, json.dumps(report), qos=1).wait_for_publish(5)
    wait_for(lambda: sum(len(a) for a in acks) == 3, 5, "three acknowledgements")
    assert {i for a in acks for i in a} == {"h-1"}
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events").json()  # the admin token still works
        assert events["data"] is not None
    with hub_database(hub):
        from hark_fleet.hub.db.models import HealthEvent

        stored = list(HealthEvent.select().where(HealthEvent.node_id == node["id"]))
    assert [(e.kind, e.count, e.state) for e in stored] == [("outbox.high", 1, "open")]
    close(client)


def test_heartbeats_over_http_update_the_node_and_bring_it_online(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    body = heartbeat(
        "hb-1",
        cpu_pct=12.5,
        memory={"used_pct": 40.0, "total_bytes": 1024},
        disk={"path": "/var", "used_pct": 50.0, "free_bytes": 2048},
        temperature_c=48.5,
        interfaces=[{"id": "hw:0", "name": "USB Audio", "channels": 2, "rates": [48000], "default": True}],
        clock={"offset_ms": -12.5, "quality": "unsynced"},
        outbox={"depth": 3, "capacity": 100},
    )
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=body).status_code == 200
        assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json={"seq": "x"}).status_code == 400
    detail = node_detail(hub, node["id"])
    assert detail["status"] == "online"
    assert detail["time_quality"] == "unsynced" and detail["clock_offset_ms"] == -12.5
    assert detail["metrics"]["temperature_c"] == 48.5 and detail["metrics"]["outbox"] == {"depth": 3, "capacity": 100}
    assert detail["interfaces"][0]["name"] == "USB Audio"
    with hub.admin() as admin:
        labelled = admin.patch(f"/api/v1/nodes/{node['id']}/interfaces/hw:0", json={"label": "Stage mics"})
        assert labelled.status_code == 200 and labelled.json()["data"]["label"] == "Stage mics"
        assert admin.patch(f"/api/v1/nodes/{node['id']}/interfaces/hw:9", json={"label": "x"}).status_code == 404


def test_missed_heartbeats_turn_a_node_offline(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    with hub.admin() as admin:
        assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"heartbeat_interval_s": 1}).status_code == 200
    with hub.client(credential) as client:
        client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("m-1"))
    assert node_detail(hub, node["id"])["status"] == "online"
    wait_for(lambda: node_detail(hub, node["id"])["status"] == "offline", 10, "offline after 3 missed heartbeats")
    assert node_detail(hub, node["id"])["status_changes"][0]["reason"] == "heartbeat.missed"


def test_the_hub_judges_missed_heartbeats_by_the_interval_the_node_reports(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    with hub.admin() as admin:  # the hub asks for 1 s; the node (configured locally) keeps 5 s and says so
        assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"heartbeat_interval_s": 1}).status_code == 200
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("i-1", interval_s=5)).status_code == 200
    before = len(node_detail(hub, node["id"])["status_changes"])
    time.sleep(5)  # longer than 3 of the hub's intervals, within the node's next one
    detail = node_detail(hub, node["id"])
    assert (detail["status"], len(detail["status_changes"])) == ("online", before)
    assert detail["heartbeat_interval_s"] == 1 and detail["reported_heartbeat_interval_s"] == 5
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("i-2", seq=2)).status_code == 200
    assert node_detail(hub, node["id"])["reported_heartbeat_interval_s"] == 5  # a heartbeat without it changes nothing
    wait_for(lambda: node_detail(hub, node["id"])["status"] == "offline", 25, "offline after 3 of the node's intervals")
    assert node_detail(hub, node["id"])["status_changes"][0]["reason"] == "heartbeat.missed"


def heartbeat_missed(hub: HubProcess, node_id: str) -> list[dict]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/health-events", params={"node_id": node_id, "limit": 200}).json()["data"]
    return [e for e in events if e["kind"] == "heartbeat.missed"]


def changes_since(hub: HubProcess, node_id: str, count_before: int) -> list[tuple[str, str]]:
    """The node's status changes after the first `count_before`, oldest first, as (to, reason)."""
    changes = node_detail(hub, node_id)["status_changes"]
    return [(c["to"], c["reason"]) for c in reversed(changes[: len(changes) - count_before])]


def test_after_a_hub_restart_a_node_gets_a_full_heartbeat_window_before_being_judged(tmp_path: Path) -> None:
    quick = HubProcess(tmp_path / "hub")
    quick.start()
    try:
        node, credential = enroll(quick)
        with quick.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"heartbeat_interval_s": 2}).status_code == 200
        with quick.client(credential) as client:
            assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("r-1")).status_code == 200
        assert node_detail(quick, node["id"])["status"] == "online"
        before = len(node_detail(quick, node["id"])["status_changes"])
        assert quick.stop() == 0
        time.sleep(7)  # longer than 3 intervals: the node's last heartbeat is old when the hub comes back
        quick.start()
        time.sleep(3)  # the node takes a while to find the hub again (reconnect backoff), within its window of 6 s
        with quick.client(credential) as client:
            for n in range(3):
                assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat(f"r-{n + 2}")).status_code == 200
                time.sleep(1)
        assert changes_since(quick, node["id"], before) == []
        assert node_detail(quick, node["id"])["status"] == "online"
        assert heartbeat_missed(quick, node["id"]) == []
    finally:
        assert quick.stop() == 0, quick.log()


def test_after_a_broker_outage_the_hub_gives_nodes_a_full_heartbeat_window(tmp_path: Path, own_mosquitto: Mosquitto) -> None:
    quick = HubProcess(tmp_path / "hub", mqtt_url=own_mosquitto.url)
    quick.start()
    try:
        node, _ = enroll(quick)
        with quick.admin() as admin:
            assert admin.patch(f"/api/v1/nodes/{node['id']}", json={"heartbeat_interval_s": 2}).status_code == 200

        def beat(msg_id: str) -> None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node["id"])
            client.connect(own_mosquitto.host, own_mosquitto.port)
            client.loop_start()
            topic = f"hark/v1/nodes/{node['id']}/heartbeat"
            client.publish(topic, json.dumps(heartbeat(msg_id)), qos=1).wait_for_publish(5)
            close(client)

        beat("o-1")
        wait_for(lambda: node_detail(quick, node["id"])["status"] == "online", 10, "online from a heartbeat")
        before = len(node_detail(quick, node["id"])["status_changes"])
        own_mosquitto.stop()
        time.sleep(7)  # longer than 3 intervals, with the hub deaf to every node
        own_mosquitto.start()
        wait_for(lambda: quick.client().get("/readyz").status_code == 200, 40, "the hub to reconnect")
        time.sleep(3)  # the node reconnects too, within its window of 6 s after the hub did
        for n in range(3):
            beat(f"o-{n + 2}")
            time.sleep(1)
        assert changes_since(quick, node["id"], before) == []
        assert heartbeat_missed(quick, node["id"]) == []
    finally:
        assert quick.stop() == 0, quick.log()


# -- inventory edits and deletion ------------------------------------------------------------------------


def test_edit_and_delete_with_preview_and_force(hub: HubProcess) -> None:
    node, credential = enroll(hub, site="north")
    hub.ensure_site("south")
    with hub.admin() as admin:
        patched = admin.patch(f"/api/v1/nodes/{node['id']}", json={"name": "Renamed", "tags": ["a", "b"], "site": "south"})
        assert patched.status_code == 200 and patched.json()["data"]["site"] == "south"
        with hub.client(credential) as client:
            client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("d-1"))
        preview = admin.get(f"/api/v1/nodes/{node['id']}/delete-preview").json()["data"]
        assert preview["requires_force"] is True and preview["reasons"] == ["the node is online"]
        refused = admin.delete(f"/api/v1/nodes/{node['id']}")
        assert refused.status_code == 409
        assert admin.get(f"/api/v1/nodes/{node['id']}").status_code == 200
        assert admin.delete(f"/api/v1/nodes/{node['id']}", params={"force": "true"}).status_code == 204
        assert admin.get(f"/api/v1/nodes/{node['id']}").status_code == 404
    with hub.client(credential) as client:
        assert client.get(f"/api/v1/nodes/{node['id']}/config").status_code == 401


def test_the_delete_preview_names_unfinished_recordings(hub: HubProcess) -> None:
    node, _ = enroll(hub, site="north")  # never connected: pending, so only the recording stands in the way
    with hub.admin() as admin:
        assert admin.post("/api/v1/recordings", json={"node_id": node["id"], "duration_s": 60}).status_code == 201
        preview = admin.get(f"/api/v1/nodes/{node['id']}/delete-preview").json()["data"]
        assert preview["reasons"] == ["1 recording queued, in progress or still uploading"]
        assert preview["dependents"]["unfinished_recording_jobs"] == 1 and preview["requires_force"] is True
        assert admin.delete(f"/api/v1/nodes/{node['id']}").status_code == 409


def test_other_sites_nodes_answer_404(hub: HubProcess) -> None:
    node, _ = enroll(hub, site="south")
    hub.ensure_site("north")
    username = f"north-{uuid.uuid4().hex[:6]}"
    with hub.admin() as admin:
        admin.post(
            "/api/v1/auth/users",
            json={"username": username, "password": "fleet-test-password", "roles": ["technician"], "sites": ["north"]},
        )
    with hub.client(hub.login(username, "fleet-test-password")) as client:
        assert client.get(f"/api/v1/nodes/{node['id']}").status_code == 404
        assert client.patch(f"/api/v1/nodes/{node['id']}", json={"name": "mine"}).status_code == 404
        assert client.post("/api/v1/nodes/enroll", json={"name": "elsewhere", "site": "south"}).status_code == 400
        assert client.post("/api/v1/nodes/enroll", json={"name": "here", "site": "north"}).status_code == 201


# -- the events stream ----------------------------------------------------------------------------------------


class EventReader:
    """Reads one SSE stream on a thread over a raw socket, collecting (id, type, data) until closed."""

    def __init__(self, hub: HubProcess, token: str, params: dict | None = None, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str, str, dict]] = []
        self.comments: list[str] = []
        self.status = 0
        query = "?" + "&".join(f"{k}={v}" for k, v in (params or {}).items()) if params else ""
        headers = f"Authorization: Bearer {token}\r\n" + (f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else "")
        self._sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        self._sock.sendall(f"GET /api/v1/events/stream{query} HTTP/1.1\r\nHost: hub\r\n{headers}\r\n".encode())
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._open.wait(5), "the stream did not open"

    def _chunks(self) -> Iterator[bytes]:
        """The decoded body of a chunked response, as it arrives."""
        buffer = b""
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            if not self._open.is_set():
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.status = int(head.split()[1])
                self._open.set()
            while b"\r\n" in buffer:
                size_line, rest = buffer.split(b"\r\n", 1)
                size = int(size_line, 16)
                if len(rest) < size + 2:
                    break
                yield rest[:size]
                buffer = rest[size + 2 :]

    def _run(self) -> None:
        text = ""
        current: dict[str, str] = {}
        for chunk in self._chunks():
            text += chunk.decode()
            while "\n" in text:
                line, text = text.split("\n", 1)
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    current[key] = value.strip()
                elif line == "" and "data" in current:
                    self.events.append((current.get("id", ""), current.get("event", "message"), json.loads(current["data"])))
                    current = {}
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def enrolled_ids(reader: EventReader) -> list[str]:
    return [data["node_id"] for _, kind, data in reader.events if kind == "node.enrolled"]


def test_an_sse_client_that_resumes_with_last_event_id_misses_nothing(hub: HubProcess) -> None:
    token = hub.login()
    live = EventReader(hub, token, params={"type": "node.enrolled"})
    first, _ = enroll(hub)
    wait_for(lambda: first["id"] in enrolled_ids(live), 5, "the live event")
    last_id = next(event_id for event_id, _, data in live.events if data["node_id"] == first["id"])
    live.close()
    missed = [enroll(hub)[0]["id"] for _ in range(3)]  # while the client is away
    resumed = EventReader(hub, token, params={"type": "node.enrolled"}, last_event_id=last_id)
    later, _ = enroll(hub)
    wait_for(lambda: later["id"] in enrolled_ids(resumed), 5, "the live event after the replay")
    resumed.close()
    assert enrolled_ids(resumed) == [*missed, later["id"]]
    ids = [int(event_id) for event_id, _, _ in resumed.events]
    assert ids == sorted(ids) and ids[0] > int(last_id)


def test_the_stream_is_scoped_to_the_callers_sites(hub: HubProcess) -> None:
    username = f"sse-{uuid.uuid4().hex[:6]}"
    hub.ensure_site("north")
    with hub.admin() as admin:
        admin.post(
            "/api/v1/auth/users",
            json={"username": username, "password": "fleet-test-password", "roles": ["viewer"], "sites": ["north"]},
        )
    reader = EventReader(hub, hub.login(username, "fleet-test-password"), params={"type": "node.enrolled"})
    south, _ = enroll(hub, site="south")
    north, _ = enroll(hub, site="north")
    wait_for(lambda: north["id"] in enrolled_ids(reader), 5, "the north event")
    reader.close()
    assert enrolled_ids(reader) == [north["id"]]


def test_a_stream_opens_with_a_retry_hint_and_answers_401_without_a_token(hub: HubProcess) -> None:
    reader = EventReader(hub, hub.login(), params={"type": "nothing.ever"})
    time.sleep(0.3)
    reader.close()
    assert reader.status == 200 and reader.events == []
    assert httpx.get(f"{hub.url}/api/v1/events/stream").status_code == 401


def test_an_idle_stream_gets_a_keepalive_comment(tmp_path: Path) -> None:
    with running_hub(tmp_path, env_extra={"HARK_SSE_KEEPALIVE_S": "0.5"}) as quick:
        reader = EventReader(quick, quick.login(), params={"type": "nothing.ever"})
        wait_for(lambda: len(reader.comments) >= 2, 5, "two keepalive comments")
        reader.close()
    assert reader.comments[:2] == [": keepalive", ": keepalive"]


def test_state_changes_a_node_causes_are_audited_with_the_node_as_actor(hub: HubProcess) -> None:
    node, credential = enroll(hub)
    report = {"ts": now_iso(), "kind": "disk.low", "severity": "critical", "details": {"free_pct": 3.0}}
    with hub.client(credential) as client:
        assert client.post(f"/api/v1/nodes/{node['id']}/heartbeat", json=heartbeat("a-1")).status_code == 200
        for n, state in enumerate(("open", "open", "resolved")):
            body = {**report, "msg_id": f"a-h{n}", "state": state}
            assert client.post(f"/api/v1/nodes/{node['id']}/health-events", json=body).status_code == 200
    with hub.admin() as admin:
        node_rows = admin.get("/api/v1/audit-events", params={"target_id": node["id"], "limit": 100}).json()["data"]
        health_rows = admin.get("/api/v1/audit-events", params={"actor_id": node["id"], "limit": 100}).json()["data"]
    statuses = [(r["action"], r["after"]["reason"]) for r in reversed(node_rows) if r["action"].startswith("node.status.")]
    assert statuses == [
        ("node.status.online", "heartbeat"),
        ("node.status.degraded", "health disk.low open"),
        ("node.status.online", "health disk.low resolved"),
    ], statuses
    health = sorted(r["action"] for r in health_rows if r["action"].startswith("health."))
    assert health == ["health.opened", "health.resolved"]  # the repeat only counted up
    assert {r["actor"]["type"] for r in health_rows} == {"node"}
