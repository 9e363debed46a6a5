"""The hub's own broker session on an external broker: one per hub, kept across restarts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.harness import HubProcess, Mosquitto, wait_for
from tests.hub.api.test_fleet import enroll, now_iso
from tests.node.fakes import close, mqtt_client


def test_what_a_node_reports_while_the_hub_restarts_is_stored_when_it_is_back(tmp_path: Path, own_mosquitto: Mosquitto) -> None:
    hub = HubProcess(tmp_path / "hub", mqtt_url=own_mosquitto.url)
    hub.start()
    try:
        node, _ = enroll(hub)
        hub.stop()  # the hub's session stays at the broker, subscribed, and queues what arrives meanwhile
        kind = f"test.while-away-{uuid.uuid4().hex[:6]}"
        report = {"msg_id": f"away-{uuid.uuid4().hex}", "ts": now_iso(), "kind": kind, "state": "open", "severity": "warning"}
        box = mqtt_client(own_mosquitto.host, own_mosquitto.port, client_id=node["id"])
        try:
            info = box.publish(f"hark/v1/nodes/{node['id']}/health", json.dumps(report), qos=1)
            info.wait_for_publish(5)
        finally:
            close(box)
        hub.start()

        def stored() -> bool:
            with hub.admin() as admin:
                events = admin.get("/api/v1/health-events", params={"node_id": node["id"]}).json()["data"]
            return any(e["kind"] == kind for e in events)

        wait_for(stored, 15, "the report sent while the hub was away")
    finally:
        hub.stop()
