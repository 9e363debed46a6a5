"""Many nodes for the notification end-to-end tests, without a `hark-node` process each.

`SimulatedNodes` keeps N enrolled nodes online from one child process: one MQTT connection per node to the
hub's broker, made exactly as `hark_fleet.node.transport_mqtt` makes it (client id and user name = node id,
password = its credential, the retained `offline` status as last will, the retained `online` status on
connect), plus a heartbeat every few seconds so the hub's missed-heartbeat sweep leaves them alone. Killing
the child (SIGKILL) drops every connection without a DISCONNECT, like a dead switch: the broker publishes
each node's last will and the hub marks them offline, the same path a real node's power cut takes.

Measured on the project's 2-core VM: 10 real `hark-node` processes took 10.4 s to come online and then used
32 % of a core and 1.4 GiB between them (3 % and 141 MiB each, as `bench/node_footprint.py` says); 50 would
take most of both cores and about 7 GiB, so the storm test uses these instead.

Run as a script (the child), it imports nothing from the checkout's `tests` package.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_INTERVAL_S = 10.0  # what the heartbeats say the node uses: missed after 3 of them (30 s)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(state: str, boot_id: str) -> bytes:
    return json.dumps({"state": state, "ts": _now(), "agent_version": "simulated", "boot_id": boot_id}).encode()


def _heartbeat(seq: int) -> bytes:
    beat = {
        "msg_id": uuid.uuid4().hex,
        "ts": _now(),
        "seq": seq,
        "agent_version": "simulated",
        "uptime_s": float(seq) * HEARTBEAT_EVERY_S,
        "interval_s": HEARTBEAT_INTERVAL_S,
    }
    return json.dumps(beat).encode()


def _child(host: str, port: int, nodes_path: str, ready_path: str) -> None:
    """Connect every node of the file, write `ready_path` once all are connected, heartbeat until killed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    nodes: list[dict[str, str]] = json.loads(Path(nodes_path).read_text())
    connected: set[str] = set()
    lock = threading.Lock()
    clients: list[tuple[str, Any]] = []
    for node in nodes:
        node_id, boot_id = node["node_id"], uuid.uuid4().hex
        topic = f"hark/v1/nodes/{node_id}/status"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id, clean_session=False, protocol=mqtt.MQTTv311)
        client.username_pw_set(node_id, node["credential"])
        client.will_set(topic, _status("offline", boot_id), qos=1, retain=True)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any, node_id: str = node_id) -> None:
            if reason.is_failure:
                return  # a Mosquitto login the hub has not provisioned yet: paho tries again
            c.publish(f"hark/v1/nodes/{node_id}/status", _status("online", userdata), qos=1, retain=True)
            with lock:
                connected.add(node_id)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any, node_id: str = node_id) -> None:
            with lock:
                connected.discard(node_id)

        client.user_data_set(boot_id)
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.reconnect_delay_set(1, 2)
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        clients.append((node_id, client))
    while True:
        with lock:
            if len(connected) == len(nodes):
                break
        time.sleep(0.05)
    Path(ready_path).write_text(str(len(nodes)))
    seq = 0
    while True:
        seq += 1
        for node_id, client in clients:
            client.publish(f"hark/v1/nodes/{node_id}/heartbeat", _heartbeat(seq), qos=1)
        time.sleep(HEARTBEAT_EVERY_S)


class SimulatedNodes:
    """Enrolled nodes held online by one child process (see the module's docstring)."""

    def __init__(self, workdir: Path, host: str, port: int, nodes: list[tuple[str, str]]) -> None:
        self.workdir = workdir
        self.host, self.port = host, port
        self.nodes = nodes  # (node_id, credential)
        self.proc: Any = None

    @property
    def node_ids(self) -> list[str]:
        return [node_id for node_id, _ in self.nodes]

    def start(self, timeout: float = 60) -> None:
        from tests.harness import spawn, wait_for

        self.workdir.mkdir(parents=True, exist_ok=True)
        nodes_path, ready = self.workdir / "nodes.json", self.workdir / "ready"
        nodes_path.write_text(json.dumps([{"node_id": n, "credential": c} for n, c in self.nodes]))
        ready.unlink(missing_ok=True)
        args = [sys.executable, str(Path(__file__).resolve()), self.host, str(self.port), str(nodes_path), str(ready)]
        self.proc = spawn(args, log_path=self.workdir / "simulated.log")

        def connected() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the simulated nodes exited: {(self.workdir / 'simulated.log').read_text()}")
            return ready.exists()

        wait_for(connected, timeout, f"{len(self.nodes)} simulated nodes to connect", interval=0.1)

    def kill(self) -> None:
        """SIGKILL: every connection drops at once without a DISCONNECT (the broker sends the last wills)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
