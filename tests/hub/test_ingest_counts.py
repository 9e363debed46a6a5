"""What the hub counts as ingested is what it applied: meter frames stored, outbox messages committed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.harness import HubProcess, Mosquitto, wait_for
from tests.hub.api.test_fleet import enroll, heartbeat, node_detail, now_iso
from tests.node.fakes import close, mqtt_client


def scrape(hub: HubProcess) -> dict[str, float]:
    with hub.admin() as admin:
        text = admin.get("/metrics").text
    found: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(hark_[a-z_]+_total)(\{[^}]*\})? ([0-9.e+]+)$", text, re.M):
        found[name + labels] = float(value)
    return found


def counted(hub: HubProcess, name: str, kind: str | None = None) -> float:
    return scrape(hub).get(name + (f'{{kind="{kind}"}}' if kind else ""), 0.0)


def frame(seq: int) -> dict:
    return {"ts": now_iso(), "seq": seq, "interval_ms": 100, "channels": [{"index": 0, "peak_dbfs": -6.0, "rms_dbfs": -9.0}]}


def test_only_applied_messages_count_as_ingested_and_heartbeats_as_stored_after_their_commit(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    hub = HubProcess(tmp_path / "hub", mqtt_url=own_mosquitto.url)  # an open broker: a node the hub does not know may publish
    hub.start()
    try:
        node, _ = enroll(hub)
        box = mqtt_client(own_mosquitto.host, own_mosquitto.port, client_id=node["id"])
        ghost = mqtt_client(own_mosquitto.host, own_mosquitto.port, client_id="nd_ghost")
        try:
            ghost.publish("hark/v1/nodes/nd_ghost/heartbeat", json.dumps(heartbeat("ghost-1")), qos=1).wait_for_publish(5)
            box.publish(f"hark/v1/nodes/{node['id']}/meters", b"{broken", qos=1).wait_for_publish(5)
            box.publish(f"hark/v1/nodes/{node['id']}/meters", json.dumps(frame(1)), qos=1).wait_for_publish(5)
            box.publish(f"hark/v1/nodes/{node['id']}/heartbeat", json.dumps(heartbeat("real-1")), qos=1).wait_for_publish(5)
            box.publish(f"hark/v1/nodes/{node['id']}/heartbeat", json.dumps(heartbeat("real-1")), qos=1).wait_for_publish(5)
        finally:
            close(box)
            close(ghost)
        wait_for(lambda: node_detail(hub, node["id"])["status"] == "online", 10, "the heartbeat stored")
        wait_for(
            lambda: counted(hub, "hark_mqtt_messages_received_total", "heartbeat") == 3, 10, "every heartbeat read off the wire"
        )
        wait_for(lambda: counted(hub, "hark_heartbeats_stored_total") >= 1, 10, "the stored heartbeat counted")
        wait_for(lambda: counted(hub, "hark_mqtt_ingested_total", "heartbeat") >= 2, 10, "the resent heartbeat counted")
        counts = scrape(hub)
        assert counts['hark_mqtt_messages_received_total{kind="meters"}'] == 2
        assert counts['hark_mqtt_ingested_total{kind="meters"}'] == 1  # the broken frame was read, not applied
        assert counts['hark_mqtt_messages_dropped_total{reason="invalid_json"}'] == 1
        # the ghost's heartbeat is read but applies to no node; the resent one is applied once (and acknowledged again)
        assert counts['hark_mqtt_ingested_total{kind="heartbeat"}'] == 2
        assert counts["hark_heartbeats_stored_total"] == 1
    finally:
        hub.stop()
