"""A fleet of real processes for the end-to-end tests: a hub (with the embedded broker or Mosquitto) and nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import HubProcess, MosquittoDynsec, NodeProcess, wait_for

BROKERS = ("embedded", "mosquitto")


class Fleet:
    """A hub (and, for Mosquitto, the broker it manages) plus helpers to enroll and run nodes."""

    def __init__(self, workdir: Path, broker: MosquittoDynsec | None) -> None:
        self.workdir = workdir
        self.broker = broker
        env = {"HARK_MQTT_DYNSEC": "true"} if broker else {}
        self.hub = HubProcess(workdir / "hub", mqtt_url=broker.admin_url if broker else None, env_extra=env)
        self.nodes: list[NodeProcess] = []

    def enroll(self, **extra_env: str) -> NodeProcess:
        self.hub.ensure_site("north")
        with self.hub.admin() as admin:
            response = admin.post("/api/v1/nodes/enroll", json={"name": f"box-{uuid.uuid4().hex[:6]}", "site": "north"})
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        node = NodeProcess(
            self.workdir / data["node"]["id"], self.hub.url, data["node"]["id"], data["credential"], env_extra=extra_env
        )
        self.nodes.append(node)
        return node

    def detail(self, node: NodeProcess) -> dict:
        with self.hub.admin() as admin:
            return admin.get(f"/api/v1/nodes/{node.node_id}").json()["data"]

    def status(self, node: NodeProcess) -> str:
        return self.detail(node)["status"]

    def wait_status(self, node: NodeProcess, status: str, timeout: float = 20) -> None:
        def reached() -> bool:
            return self.status(node) == status

        try:
            wait_for(reached, timeout, f"{node.node_id} {status}", interval=0.2)
        except AssertionError as err:
            raise AssertionError(
                f"{err}\n--- node log ---\n{node.log()[-3000:]}\n--- hub log ---\n{self.hub.log()[-3000:]}"
            ) from None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.hub.stop()
        if self.broker:
            self.broker.stop()


@pytest.fixture(params=BROKERS)
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    broker = None
    if request.param == "mosquitto":
        broker = MosquittoDynsec(tmp_path / "mosquitto")
        broker.start()
    running = Fleet(tmp_path, broker)
    running.hub.start()
    yield running
    running.stop()
