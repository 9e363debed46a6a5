"""Node telemetry into a real hub: what one node sends never holds back what the others send."""

from __future__ import annotations

import json
import threading

from tests.harness import HubProcess, wait_for
from tests.hub.api.test_fleet import close, enroll, heartbeat, mqtt_client, node_detail, now_iso


def test_a_message_the_database_refuses_is_dropped_alone_and_the_rest_of_the_batch_is_stored(hub: HubProcess) -> None:
    bad, bad_credential = enroll(hub)
    good, good_credential = enroll(hub)
    bad_client, _ = mqtt_client(hub, bad["id"], bad_credential)
    good_client, _ = mqtt_client(hub, good["id"], good_credential)
    acks: list[str] = []
    subscribed = threading.Event()
    bad_client.on_message = lambda c, u, m: acks.extend(json.loads(m.payload)["ids"])
    bad_client.on_subscribe = lambda *a: subscribed.set()
    bad_client.subscribe(f"hark/v1/nodes/{bad['id']}/cmd/ack", qos=1)
    assert subscribed.wait(5)
    poison = [
        {"msg_id": "nul-\u0000", "ts": now_iso(), "kind": "disk.low", "state": "open"},  # PostgreSQL refuses NUL
        {"msg_id": "long-kind", "ts": now_iso(), "kind": "k" * 5000, "state": "open"},
        {"msg_id": "nul-detail", "ts": now_iso(), "kind": "disk.low", "state": "open", "details": {"x": "\u0000"}},
    ]
    try:
        for _ in range(3):  # the node's outbox sends them again and again
            for report in poison:
                bad_client.publish(f"hark/v1/nodes/{bad['id']}/health", json.dumps(report), qos=1)
            good_client.publish(f"hark/v1/nodes/{good['id']}/heartbeat", json.dumps(heartbeat(f"g-{now_iso()}")), qos=1)
        wait_for(lambda: node_detail(hub, good["id"])["status"] == "online", 10, "the good node online")
        bad_client.publish(f"hark/v1/nodes/{bad['id']}/heartbeat", json.dumps(heartbeat("b-ok")), qos=1)
        wait_for(lambda: node_detail(hub, bad["id"])["status"] == "online", 10, "the bad node's valid heartbeat stored")
        wait_for(lambda: {"nul-\u0000", "long-kind", "nul-detail", "b-ok"} <= set(acks), 10, "every message acknowledged")
    finally:
        close(bad_client)
        close(good_client)
    with hub.client(bad_credential) as agent:
        for report in poison:
            refused = agent.post(
                f"/api/v1/nodes/{bad['id']}/health-events", json={**report, "msg_id": f"http-{report['msg_id']}"}
            )
            assert refused.status_code in (200, 400), refused.text  # 400 where the database refuses it, never a 500
    dropped = [line for line in hub.log().splitlines() if f"node {bad['id']}" in line and "not_stored" in line]
    assert len(dropped) <= 1, dropped  # once a minute per node and reason
