"""A real `hark-node` with a flatline source against a real Mosquitto, a stub config route and a fake hub on MQTT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Mosquitto, wait_for
from tests.node.fakes import ConfigStub, FakeHub
from tests.node.test_agent_process import NodeProcess

pytestmark = pytest.mark.slow


def config_body(node_id: str, mqtt_url: str, version: int, hold_s: float) -> bytes:
    ladder = {"steps": [{"action": "restart-audio", "wait_s": 1}], "max_per_hour": 2, "max_per_day": 6, "cooldown_s": 0}
    watchdog = {
        "node": {
            "policy_id": "wdp_flat",
            "version": version,
            "detectors": {"flatline": {"hold_s": hold_s, "remediation": ladder}, "silence": {"enabled": False}},
        }
    }
    data = {"node_id": node_id, "mqtt_url": mqtt_url, "heartbeat_interval_s": 1, "meter_interval_ms": 100, "watchdog": watchdog}
    return json.dumps({"data": data}).encode()


def unique(hub: FakeHub, suffix: str) -> list[dict[str, Any]]:
    """The documents published on `.../{suffix}`, each once (the outbox sends again what nobody acknowledged)."""
    seen: dict[str, dict[str, Any]] = {}
    for received in hub.received():
        if received.topic.endswith("/" + suffix):
            document = received.json()
            seen.setdefault(document["msg_id"], document)
    return list(seen.values())


def outcomes(hub: FakeHub) -> list[tuple[int, str, str, str | None]]:
    return [(r["step"], r["action"], r["outcome"], r["reason"]) for r in unique(hub, "watchdog/remediation")]


def test_a_flatline_source_raises_flatline_restarts_audio_twice_and_the_rate_limit_holds_across_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None
) -> None:
    node_id, credential = "wd-flat", "cred-wd-flat-0123456789"
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        hub.auto_ack = True
        stub.body_override = config_body(node_id, mosquitto.url, 1, 0.5)
        node = NodeProcess(tmp_path, node_id, credential, stub.url, {"HARK_NODE_AUDIO_SOURCE": "synthetic:silence?channels=1"})
        node.start()
        try:
            hub.wait_status("online", timeout=20)
            applied = wait_for(lambda: unique(hub, "applied"), 20, "the policy confirmed")
            assert [(a["what"], a["ok"], a["id"], a["version"]) for a in applied] == [("watchdog", True, "wdp_flat", 1)]
            flat = wait_for(lambda: [d for d in hub.documents("health") if d["kind"] == "audio.flatline"], 20, "audio.flatline")[
                0
            ]
            assert flat["state"] == "open" and flat["severity"] == "critical" and flat["details"]["channels"] == ["M"]
            assert flat["details"]["policy_id"] == "wdp_flat" and flat["details"]["values"]["M"]["zeros"] is True
            limit = (0, "restart-audio", "skipped", "rate limit: 2 per hour reached")
            wait_for(lambda: limit in outcomes(hub), 30, "the third attempt stopped by the rate limit")
            assert outcomes(hub) == [
                (0, "restart-audio", "started", None),
                (0, "restart-audio", "succeeded", None),
                (0, "restart-audio", "started", None),
                (0, "restart-audio", "succeeded", None),
                limit,
            ]
            step = unique(hub, "watchdog/remediation")[1]
            assert step["event_kind"] == "audio.flatline" and step["output"].startswith("audio restarted: synthetic silence")
            beat = wait_for(lambda: [b for b in hub.documents("heartbeat") if b.get("applied")], 10, "a heartbeat")[-1]
            assert beat["applied"]["watchdog"] == {"id": "wdp_flat", "version": 1}
            assert beat["disk_hours_left"] is None and beat["recording_bytes_per_s"] is None  # not recording
            # a new version reaches the running node on cmd/config and applies without a restart
            stub.body_override = config_body(node_id, mosquitto.url, 2, 0.6)
            hub.send("config", {"changed": ["watchdog"]})
            wait_for(lambda: len(unique(hub, "applied")) == 2, 10, "the new version confirmed")
            assert unique(hub, "applied")[-1]["version"] == 2
            wait_for(
                lambda: any(b.get("applied", {}).get("watchdog", {}).get("version") == 2 for b in hub.documents("heartbeat")),
                10,
                "a heartbeat with the new version",
            )
            # calibration: one second of frames
            hub.send("calibrate", {"calibration_id": "cal_one", "duration_s": 1})
            result = wait_for(lambda: unique(hub, "watchdog/calibration/cal_one"), 15, "the calibration result")[0]
            assert result["error"] is None and result["baseline"]["sample_rate"] == 48000
            assert result["baseline"]["channel_count"] == 1 and 5 < result["baseline"]["frames"] <= 15
            assert result["baseline"]["channels"]["M"]["noise_floor_dbfs"] is None  # digital silence
        finally:
            code = node.stop()
        assert code == 0, node.log()
        # the hub goes away; the node starts again with the policy it kept and the attempts it counted
        stub.status_override = 503
        before = len(unique(hub, "watchdog/remediation"))
        beats_before = len(hub.documents("heartbeat"))
        log_before = len(node.log())
        node.start()
        try:
            wait_for(lambda: len(unique(hub, "watchdog/remediation")) > before, 30, "the ladder after the restart")
            assert outcomes(hub)[before:] == [limit]  # counted across the restart: still two this hour
            beat = wait_for(lambda: hub.documents("heartbeat")[beats_before:], 10, "a heartbeat of the new start")[-1]
            assert beat["applied"]["watchdog"] == {"id": "wdp_flat", "version": 2}
        finally:
            code = node.stop()
        assert code == 0, node.log()
        assert "watchdog policy wdp_flat v2 (kept from the hub)" in node.log()[log_before:]
