"""Recording end to end: real hub and node processes record, recover and upload; the library gives the audio back."""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from tests.e2e.conftest import Fleet
from tests.harness import NodeProcess, wait_for

pytestmark = pytest.mark.parametrize("fleet", ["embedded"], indirect=True)

SINE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
TERMINAL = ("completed", "interrupted", "failed", "cancelled")


def start_recording(fleet: Fleet, node: NodeProcess, **body: Any) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.post("/api/v1/recordings", json={"node_id": node.node_id, **body})
    assert response.status_code == 201, response.text
    return response.json()["data"]["recording"]


def recording(fleet: Fleet, recording_id: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/recordings/{recording_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def settled(fleet: Fleet, node: NodeProcess, recording_id: str, timeout: float = 40) -> dict[str, Any]:
    try:
        return wait_for(lambda: (r := recording(fleet, recording_id))["status"] in TERMINAL and r, timeout, "the recording", 0.3)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{recording(fleet, recording_id)}\n--- node log ---\n{node.log()[-4000:]}") from None


def audio(fleet: Fleet, recording_id: str) -> tuple[np.ndarray, int]:
    with fleet.hub.admin() as admin:
        response = admin.get(f"/api/v1/recordings/{recording_id}/file")
    assert response.status_code == 200, response.text
    data, rate = soundfile.read(io.BytesIO(response.content), dtype="float64", always_2d=True)
    return data, rate


def test_a_three_second_recording_comes_back_sample_accurate(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    started = start_recording(fleet, node, duration_s=3, name="three seconds")
    done = settled(fleet, node, started["id"])
    assert done["status"] == "completed" and not done["interrupted"], done
    data, rate = audio(fleet, started["id"])
    assert rate == 48000 and data.shape == (3 * 48000, 2)
    peak = 20 * np.log10(np.abs(data).max())
    assert abs(peak - (-20.0)) < 0.05, peak
    assert done["size_bytes"] > 3 * 48000 * 2 * 3 and len(done["sha256"]) == 64
    ledger = done["integrity"]
    assert ledger["frames_written"] >= 3 * 48000 and ledger["gaps"] == [], ledger
    assert done["duration_s"] == pytest.approx(3.0, abs=0.001) and done["time_quality"] in ("ntp", "unsynced")
    manifest = node.workdir / "data" / "recordings" / started["id"] / "manifest.json"
    wait_for(lambda: json.loads(manifest.read_text())["state"] == "uploaded", 10, "the node's cache to mark it uploaded")


def test_kill_9_mid_recording_keeps_the_audio_and_settles_as_interrupted(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    node.start()
    fleet.wait_status(node, "online")
    started = start_recording(fleet, node, name="cut short")
    wait_for(lambda: recording(fleet, started["id"])["status"] == "recording", 20, "capture to start")
    time.sleep(4.0)
    node.kill()
    time.sleep(1.0)
    node.start()
    done = settled(fleet, node, started["id"], timeout=60)
    assert done["status"] == "interrupted" and done["interrupted"], done
    data, rate = audio(fleet, started["id"])
    assert data.shape[0] >= 3 * rate, data.shape  # at most the last second lost
    assert abs(20 * np.log10(np.abs(data).max()) - (-20.0)) < 0.05
    kinds = [gap.get("kind") for gap in done["integrity"]["gaps"]]
    assert "interruption" in kinds, done["integrity"]["gaps"]


def test_a_full_disk_stops_the_recording_cleanly_and_raises_a_health_event(fleet: Fleet, tmp_path: Path) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    data_dir = node.workdir / "data"
    data_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(data_dir)], check=True)
    try:
        node.start()
        fleet.wait_status(node, "online")
        started = start_recording(fleet, node, name="fills the disk")
        done = settled(fleet, node, started["id"], timeout=60)
        assert done["status"] in ("completed", "interrupted"), done
        data, rate = audio(fleet, started["id"])
        assert data.shape[0] > rate and abs(20 * np.log10(np.abs(data).max()) - (-20.0)) < 0.05
        assert done["integrity"].get("stop_reason") in ("disk_low", "disk_full"), done["integrity"]

        def disk_events() -> list[dict[str, Any]]:
            with fleet.hub.admin() as admin:
                rows = admin.get("/api/v1/health-events", params={"node_id": node.node_id}).json()["data"]
            return [r for r in rows if r["kind"] in ("recording.cache_full", "disk.low")]

        assert wait_for(disk_events, 30, "a disk health event")
    finally:
        node.stop()
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
