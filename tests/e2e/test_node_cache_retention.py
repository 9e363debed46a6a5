"""A real node's cache and retention: it keeps a recording under legal hold (the hub lists it in the node's config and
asks for a new fetch when the hold changes), evicts the others once uploaded, and tells the hub, which shows the node
copy as evicted; once the hold is released the node evicts that one too."""

from __future__ import annotations

from typing import Any

import pytest
from hark_fleet.hub.db.models import Node

from tests.conftest import hub_database
from tests.e2e.conftest import Fleet
from tests.e2e.test_recording import SINE, settled, start_recording
from tests.harness import wait_for

pytestmark = pytest.mark.parametrize("fleet", ["embedded"], indirect=True)


def node_copy(fleet: Fleet, recording_id: str) -> dict[str, Any]:
    with fleet.hub.admin() as admin:
        node: dict[str, Any] = admin.get(f"/api/v1/recordings/{recording_id}/copies").json()["data"]["node"]
        return node


def test_the_node_keeps_held_audio_evicts_the_rest_and_tells_the_hub(fleet: Fleet) -> None:
    node = fleet.enroll(HARK_NODE_AUDIO_SOURCE=SINE)
    with hub_database(fleet.hub):  # uploaded recordings leave the cache at once
        Node.update(settings={"cache_policy": {"keep_after_upload_s": 0}}).where(Node.id == node.node_id).execute()
    node.start()
    fleet.wait_status(node, "online")
    held = start_recording(fleet, node, duration_s=2, name="evidence")
    with fleet.hub.admin() as admin:  # held before it is even recorded: the node fetches its config again
        assert admin.put(f"/api/v1/recordings/{held['id']}/legal-hold", json={"reason": "case 12"}).status_code == 200
    assert settled(fleet, node, held["id"])["status"] == "completed"
    free = start_recording(fleet, node, duration_s=2, name="ordinary")
    assert settled(fleet, node, free["id"])["status"] == "completed"
    cache = node.workdir / "data" / "recordings"

    wait_for(lambda: node_copy(fleet, free["id"])["state"] == "evicted", 60, "the node to evict and report the free take")
    assert not (cache / free["id"]).exists()
    assert node_copy(fleet, held["id"])["state"] == "present" and (cache / held["id"] / "manifest.json").exists()

    with fleet.hub.admin() as admin:
        assert admin.delete(f"/api/v1/recordings/{held['id']}/legal-hold").status_code == 200
    wait_for(lambda: node_copy(fleet, held["id"])["state"] == "evicted", 60, "the node to evict the released take")
    assert not (cache / held["id"]).exists()
    assert not (cache / ".evictions-pending.json").exists()  # every report reached the hub
