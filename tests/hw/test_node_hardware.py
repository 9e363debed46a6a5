"""A real hark-node process with systemd's notify socket and a front panel on a pty: READY, pings, LED colours, identify."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Fleet
from tests.harness import NotifySocket, wait_for
from tests.hw.conftest import PtyDevice


def panel_lines(panel: PtyDevice, wanted: str, timeout: float = 15.0) -> list[str]:
    """Read (and acknowledge, as the board would) the panel's commands up to `wanted`."""
    seen: list[str] = []

    def got() -> bool:
        line = panel.read_line(timeout)
        panel.write("OK\n")
        seen.append(line)
        return line == wanted

    wait_for(got, timeout, f"{wanted!r} on the front panel (saw {seen})", interval=0)
    return seen


def test_the_node_tells_systemd_it_is_ready_pings_it_and_drives_the_front_panel(
    notify: NotifySocket, pty_device: PtyDevice, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, None)
    fleet.hub.start()
    try:
        node = fleet.enroll(
            NOTIFY_SOCKET=notify.name,
            WATCHDOG_USEC="1000000",
            HARK_NODE_HARDWARE=json.dumps({"front_panel": pty_device.port}),
        )
        node.start()
        fleet.wait_status(node, "online")
        messages = [text for _, text in notify.messages_for(3.0)]
        assert any(text.startswith("READY=1") for text in messages), messages
        assert sum(1 for text in messages if text == "WATCHDOG=1") >= 3, messages
        panel_lines(pty_device, "LED green")

        with fleet.hub.admin() as admin:
            response = admin.post(f"/api/v1/nodes/{node.node_id}/lifecycle/identify")
        assert response.status_code == 202, response.text
        panel_lines(pty_device, "IDENTIFY 5")

        assert node.stop() == 0
        assert any(text.startswith("STOPPING=1") for _, text in notify.messages_for(1.0))
    finally:
        fleet.stop()
