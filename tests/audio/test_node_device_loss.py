"""A running hark-node capturing from PulseAudio loses its device and gets it back: the hub sees it all."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audio.conftest import PulseServer
from tests.e2e.conftest import Fleet
from tests.harness import terminate, wait_for


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_unplugging_the_device_degrades_the_node_and_plugging_it_back_recovers(
    backend: str, pulse: PulseServer, tone_wav: Path, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, None)
    player = pulse.play(tone_wav)
    fleet.hub.start()
    try:
        env = pulse.env()
        node = fleet.enroll(
            HARK_NODE_AUDIO_SOURCE=f"{backend}:pulse?channels=2&rate=48000",
            PULSE_SERVER=env["PULSE_SERVER"],
            PULSE_RUNTIME_PATH=env["PULSE_RUNTIME_PATH"],
            HOME=env["HOME"],
        )
        node.start()
        fleet.wait_status(node, "online")

        def peak() -> float | None:
            with fleet.hub.admin() as admin:
                response = admin.get(f"/api/v1/nodes/{node.node_id}/meters")
            return response.json()["data"]["channels"][0]["peak_dbfs"] if response.status_code == 200 else None

        wait_for(lambda: (p := peak()) is not None and abs(p + 20.0) < 0.3, 20, "the tone in the hub's meters")
        interfaces = wait_for(lambda: fleet.detail(node)["interfaces"], 15, "the interfaces from a heartbeat")
        assert "pulse" in {i["name"] for i in interfaces}, interfaces

        def device_lost() -> dict | None:
            with fleet.hub.admin() as admin:
                params = {"node_id": node.node_id, "kind": "audio.device_lost"}
                events = admin.get("/api/v1/health-events", params=params).json()["data"]
            return events[0] if events else None

        pulse.unload_null_sink()
        event = wait_for(device_lost, 20, "audio.device_lost at the hub")
        assert event["severity"] == "critical" and event["state"] == "open"
        fleet.wait_status(node, "degraded")

        pulse.load_null_sink()
        terminate(player)  # paplay's stream went with the sink
        player = pulse.play(tone_wav)
        wait_for(lambda: (e := device_lost()) is not None and e["state"] == "resolved", 30, "the device back")
        fleet.wait_status(node, "online")
        wait_for(lambda: (p := peak()) is not None and abs(p + 20.0) < 0.3, 20, "the tone again")
        assert node.proc is not None and node.proc.poll() is None  # the agent never died
    finally:
        terminate(player)
        if pulse.pactl("list", "short", "modules").count("module-null-sink") == 0:
            pulse.load_null_sink()
        fleet.stop()
