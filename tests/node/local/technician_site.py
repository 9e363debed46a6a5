"""A real hub with one enrolled node whose technician PIN is set: shared by the endpoint and browser tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness import HubProcess, NodeProcess, wait_for

PIN = "482913"


@dataclass
class Site:
    hub: HubProcess
    node: NodeProcess
    node_id: str
    credential: str

    @property
    def access_file(self) -> Path:
        return self.node.workdir / "data" / "technician.json"

    def local(self, path: str) -> str:
        return f"{self.node.local_url}/local/v1/{path}"

    def login(self, **secret: str) -> httpx.Response:
        return httpx.post(self.local("login"), json=secret, timeout=10)

    def session(self, **secret: str) -> httpx.Client:
        response = self.login(**secret)
        assert response.status_code == 200, response.text
        token = response.json()["data"]["session"]
        return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def audit_actions(self) -> list[dict]:
        """The hub's audit lines for technicians' actions at this node, newest first."""
        with self.hub.admin() as admin:
            rows = admin.get("/api/v1/audit-events", params={"limit": 200, "target_id": self.node_id}).json()["data"]
        return [r for r in rows if r["action"].startswith("technician.")]


def start_site(workdir: Path, source: str = "synthetic:sine?freq=440&dbfs=-12&channels=2") -> Site:
    hub = HubProcess(workdir / "hub")
    hub.start()
    hub.ensure_site("hall")
    with hub.admin() as admin:
        enrolled = admin.post("/api/v1/nodes/enroll", json={"name": "Box", "site": "hall"}).json()["data"]
    node_id, credential = enrolled["node"]["id"], enrolled["credential"]
    node = NodeProcess(workdir / "node", hub.url, node_id, credential, env_extra={"HARK_NODE_AUDIO_SOURCE": source})
    node.start()
    site = Site(hub, node, node_id, credential)
    with hub.admin() as admin:
        wait_for(lambda: admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"] == "online", 30, "the node online")
        assert admin.patch(f"/api/v1/nodes/{node_id}", json={"technician_pin": PIN}).status_code == 200
    wait_for(lambda: site.access_file.exists() and json.loads(site.access_file.read_text())["pin_hash"], 20, "the PIN's hash")
    return site
