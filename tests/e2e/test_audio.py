"""Audio end to end: a real node meters its source, follows the channel map the hub assigns, and reports silence."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Fleet
from tests.harness import wait_for

pytestmark = pytest.mark.parametrize("fleet", ["embedded"], indirect=True)


def latest_channels(fleet: Fleet, node_id: str) -> list[dict]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/nodes/{node_id}/meters")
    return response.json()["data"]["channels"] if response.status_code == 200 else []


def test_the_hub_shows_live_meters_and_the_node_follows_its_channel_map(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:sine?freq=1000&dbfs=-20&channels=2")
    node.start()
    fleet.wait_status(node, "online")
    wait_for(lambda: [c["name"] for c in latest_channels(fleet, node.node_id)] == ["L", "R"], 15, "stereo meters")
    left = latest_channels(fleet, node.node_id)[0]
    assert abs(left["peak_dbfs"] + 20.0) < 0.05 and abs(left["rms_dbfs"] + 23.01) < 0.05

    # the live stream carries the node's frames as they arrive over MQTT
    seqs: list[int] = []
    with httpx.Client(base_url=fleet.hub.url, headers={"Authorization": f"Bearer {fleet.hub.login()}"}, timeout=10) as client:
        with client.stream("GET", "/api/v1/meter-events", params={"node_id": node.node_id}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    frame = json.loads(line[6:])
                    assert frame["node_id"] == node.node_id
                    seqs.append(frame["seq"])
                    if len(seqs) == 5:
                        break
    assert seqs == sorted(seqs) and len(set(seqs)) == 5

    template = {
        "name": f"room-{uuid.uuid4().hex[:6]}",
        "channels": [{"input": 1, "name": "room", "calibration_db": 114.0}],
        "programmes": [{"name": "ambience", "channels": ["room"]}],
    }
    with fleet.hub.admin() as admin:
        created = admin.post("/api/v1/settings/channel-map-templates", json=template)
        assert created.status_code == 201, created.text
        assigned = admin.put(
            f"/api/v1/settings/channel-map-assignments/{node.node_id}", json={"template_id": created.json()["data"]["id"]}
        )
        assert assigned.status_code == 200, assigned.text
    wait_for(lambda: [c["name"] for c in latest_channels(fleet, node.node_id)] == ["room"], 15, "the mapped channel")
    room = latest_channels(fleet, node.node_id)[0]
    assert room["spl"] is not None and abs(room["spl"]["laeq_db"] - (114.0 - 23.01)) < 0.5, room

    with fleet.hub.admin() as admin:
        response = admin.delete(f"/api/v1/settings/channel-map-assignments/{node.node_id}")
        assert response.status_code in (200, 204), response.text
    wait_for(lambda: [c["name"] for c in latest_channels(fleet, node.node_id)] == ["L", "R"], 15, "every input again")


def test_a_silent_source_becomes_a_health_event_at_the_hub(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE="synthetic:silence?channels=1", HARK_NODE_SILENCE_HOLD_S="1")
    node.start()
    fleet.wait_status(node, "online")

    def silence_events() -> list[dict]:
        with fleet.hub.admin() as admin:
            params = {"node_id": node.node_id, "kind": "audio.silence"}
            return admin.get("/api/v1/health-events", params=params).json()["data"]

    events = wait_for(silence_events, 15, "an audio.silence event")
    assert events[0]["state"] == "open" and events[0]["details"]["channels"] == ["M"] and events[0]["count"] == 1
    assert events[0]["details"]["detector"] == "silence" and events[0]["details"]["thresholds"]["hold_s"] == 1.0
    assert fleet.status(node) == "online"  # a warning does not degrade the node


def test_a_node_playing_a_file_shows_its_level_at_the_hub(fleet: Fleet, tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = (10 ** (-12 / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone, rate, subtype="PCM_24")
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=f"file:{path}")
    node.start()
    fleet.wait_status(node, "online")
    wait_for(lambda: [c["name"] for c in latest_channels(fleet, node.node_id)] == ["M"], 15, "mono meters")
    channel = latest_channels(fleet, node.node_id)[0]
    assert abs(channel["peak_dbfs"] + 12.0) < 0.05 and abs(channel["rms_dbfs"] + 15.01) < 0.05, channel
    interfaces = wait_for(lambda: fleet.detail(node)["interfaces"], 15, "the interfaces from a heartbeat")
    assert interfaces[0]["id"] == "file" and interfaces[0]["channels"] == 1 and interfaces[0]["rates"] == [48000]
