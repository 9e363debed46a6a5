"""A node whose own files were damaged (power cut mid-write, a bad SD card) still starts and records."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.harness import Mosquitto, spawn, terminate
from tests.node.fakes import ConfigStub, FakeHub

pytestmark = pytest.mark.slow


def test_a_damaged_outbox_is_moved_aside_and_reported_and_the_node_runs(tmp_path: Path, mosquitto: Mosquitto) -> None:
    node_id, credential = "damaged-outbox", "cred-damaged-outbox-0123456789"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    damaged = b"this was an outbox before the SD card lost a block\x00" * 200
    (data_dir / "outbox.sqlite3").write_bytes(damaged)
    (data_dir / "technician.json").write_text("[1, 2, 3]")  # valid JSON, not the object the node wrote
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(
            HARK_DATA_DIR=str(data_dir),
            HARK_HUB_URL=stub.url,
            HARK_NODE_ID=node_id,
            HARK_NODE_CREDENTIAL=credential,
            HARK_HEARTBEAT_INTERVAL_S="1",
        )
        log_path = tmp_path / "node.log"
        proc = spawn([sys.executable, "-m", "hark_fleet.node"], env=env, log_path=log_path)
        try:
            hub.wait_status("online", timeout=20)
            hub.wait_documents("heartbeat", 2)
            reports = [d for d in hub.wait_documents("health", 1) if d["kind"] == "outbox.damaged"]
            assert reports and reports[0]["state"] == "open" and reports[0]["severity"] == "warning"
            moved = Path(reports[0]["details"]["moved_to"])
            assert moved.parent == data_dir and moved.read_bytes() == damaged  # kept for whoever investigates
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
            terminate(proc)
    log = log_path.read_text()
    assert code == 0, log
    assert "Traceback" not in log
