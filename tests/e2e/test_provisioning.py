"""Installing a site: a hub and three unprovisioned nodes found by mDNS, enrolled in bulk, online."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import MDNS_INTERFACES, ROOT, HubProcess, NodeProcess, enable_loopback_multicast, wait_for

pytestmark = pytest.mark.slow


class Site:
    """A hub and three boxes just plugged in (no hub URL, no identity)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hub = HubProcess(workdir / "hub", tls=True)  # as on a real site: HTTPS and mqtts
        self.nodes = [NodeProcess(workdir / f"box-{i}", env_extra={"HARK_HEARTBEAT_INTERVAL_S": "1"}) for i in range(3)]

    def label(self, node: NodeProcess) -> tuple[str, str]:
        """(hardware id, claim code), as printed on the box."""
        state = json.loads(node.state_path.read_text())
        return state["hardware_id"], f"{state['claim_code'][:4]}-{state['claim_code'][4:]}"

    def provision(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
        env.update(HARK_MDNS_INTERFACES=MDNS_INTERFACES, COLUMNS="200", HARK_HUB_CA=str(self.hub.data_dir / "ca" / "ca.pem"))
        if token:
            env["HARK_HUB_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "hark_fleet.provision", "--hub", self.hub.url, *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def logs(self) -> str:
        return (
            "\n".join(f"--- {n.workdir.name} ---\n{n.log()[-2000:]}" for n in self.nodes)
            + f"\n--- hub ---\n{self.hub.log()[-3000:]}"
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    enable_loopback_multicast()
    running = Site(tmp_path)
    running.hub.start()
    for node in running.nodes:
        node.start()
    for node in running.nodes:
        wait_for(lambda n=node: n.state_path.exists() and "waiting to be claimed" in n.log(), 30, "an unprovisioned node")
    yield running
    for node in running.nodes:
        node.stop()
    assert running.hub.stop() == 0, running.hub.log()


def test_an_installer_finds_three_new_boxes_enrolls_them_in_bulk_and_they_go_online(site: Site, tmp_path: Path) -> None:
    labels = [site.label(node) for node in site.nodes]
    hardware_ids = {hw for hw, _ in labels}
    token = site.hub.login()

    discovered = site.provision("discover", "--once", "--timeout", "3")
    assert discovered.returncode == 0, discovered.stderr
    assert all(hw in discovered.stdout for hw in hardware_ids), discovered.stdout + site.logs()

    with site.hub.client(token) as api:
        wait_for(
            lambda: hardware_ids <= {n["hardware_id"] for n in api.get("/api/v1/discovered-nodes").json()["data"]},
            15,
            "the hub to see the three nodes",
        )

    first_hw, first_code = labels[0]
    wrong = site.provision("claim", first_hw, "--code", "0000-0000", "--name", "wrong", token=token)
    assert wrong.returncode == 1 and "claim code" in wrong.stderr, wrong.stdout + wrong.stderr
    with site.hub.client(token) as api:
        assert api.get("/api/v1/nodes", params={"hardware_id": first_hw}).json()["data"] == []  # the enrollment was undone

    # A node's site must exist: the tool prints the hub's reason, and nothing is enrolled.
    nowhere = site.provision("claim", first_hw, "--code", first_code, "--name", "mic-0", "--site", "north", token=token)
    assert nowhere.returncode == 1 and "site: no site north" in nowhere.stderr, nowhere.stdout + nowhere.stderr
    site.hub.ensure_site("north")
    sheet = tmp_path / "site.csv"
    rows = [f"{hw},{code},mic-{i},north,roof;west" for i, (hw, code) in enumerate(labels)]
    sheet.write_text("hardware_id,claim_code,name,site,tags\n" + "\n".join(rows) + "\n")
    enrolled = site.provision("bulk", str(sheet), token=token)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr + site.logs()
    assert "3 succeeded, 0 failed" in enrolled.stdout

    with site.hub.client(token) as api:
        for hw, _ in labels:
            node = api.get("/api/v1/nodes", params={"hardware_id": hw}).json()["data"][0]
            assert node["site"] == "north" and node["tags"] == ["roof", "west"]

            def online(node_id: str = node["id"]) -> bool:
                return api.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"] == "online"

            wait_for(online, 30, f"{hw} online", interval=0.2)

    for box in site.nodes:  # each switched to TLS with the CA and its own certificate
        state = json.loads(box.state_path.read_text())
        assert state["hub_url"].startswith("https://") and state["mqtt_url"].startswith("mqtts://"), state["hub_url"]

    again = site.provision("bulk", str(sheet), token=token)
    assert again.returncode == 0 and "3 succeeded, 0 failed" in again.stdout, again.stdout + again.stderr
    assert again.stdout.count("claimed already") == 3

    replay = httpx.post(
        f"{site.nodes[0].local_url}/local/v1/provision",
        json={"claim_code": first_code, "node_id": "nod_x", "credential": "c", "hub_url": site.hub.url},
    )
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "already_enrolled"
    guess = httpx.post(
        f"{site.nodes[1].local_url}/local/v1/provision",
        json={"claim_code": "ZZZZ-ZZZZ", "node_id": "nod_x", "credential": "c", "hub_url": site.hub.url},
    )
    assert guess.status_code == 403


def test_an_enrolled_node_without_a_hub_url_finds_the_hub_by_mdns_and_goes_online(tmp_path: Path) -> None:
    enable_loopback_multicast()
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    node: NodeProcess | None = None
    try:
        hub.ensure_site("north")
        with hub.admin() as admin:
            data = admin.post("/api/v1/nodes/enroll", json={"name": "no-url", "site": "north"}).json()["data"]
        node = NodeProcess(tmp_path / "node", node_id=data["node"]["id"], credential=data["credential"])
        node.start()

        def online() -> bool:
            with hub.admin() as admin:
                return admin.get(f"/api/v1/nodes/{data['node']['id']}").json()["data"]["status"] == "online"

        wait_for(online, 40, "the node to find the hub and go online", interval=0.3)
        assert f"found the hub by mDNS: {hub.url}" in node.log()
        assert json.loads(node.state_path.read_text())["hub_url"] == hub.url
    finally:
        if node is not None:
            node.stop()
        assert hub.stop() == 0, hub.log()
