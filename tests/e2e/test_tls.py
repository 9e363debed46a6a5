"""A hub on TLS: a claimed node reaches it over HTTPS and mqtts with its certificate; a revoked one is refused."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hark_fleet.protocol.tls import client_context, make_bundle
from hark_fleet.provision.ca import CLIENT, CertificateAuthority, IssuedCertificate
from hark_fleet.provision.local_client import provision_node

from tests.harness import ROOT, HubProcess, NodeProcess, wait_for

pytestmark = pytest.mark.slow


def _status(hub: HubProcess, node_id: str) -> str:
    with hub.admin() as api:
        return str(api.get(f"/api/v1/nodes/{node_id}").json()["data"]["status"])


def claim_over_tls(hub: HubProcess, node: NodeProcess) -> tuple[str, str, CertificateAuthority, IssuedCertificate, str]:
    """Enroll a node at a TLS hub, hand it its identity, CA and client certificate, and wait until it is online."""
    with hub.admin() as api:
        answer = api.post("/api/v1/nodes/enroll", json={"name": "box"})
        assert answer.status_code == 201, answer.text
    node_id, credential = answer.json()["data"]["node"]["id"], answer.json()["data"]["credential"]
    ca = CertificateAuthority.open(hub.data_dir, create=False)
    issued = ca.issue(node_id, CLIENT)
    node.start()
    wait_for(lambda: node.state_path.exists() and "waiting to be claimed" in node.log(), 30, "an unprovisioned node")
    code = json.loads(node.state_path.read_text())["claim_code"]
    bundle = make_bundle(ca.ca_pem, issued.cert_pem, issued.key_pem)
    asyncio.run(provision_node(node.local_url, code, node_id, credential, hub.url, None, bundle))
    wait_for(lambda: _status(hub, node_id) == "online", 30, "the node online over TLS\n" + node.log()[-3000:])
    return node_id, credential, ca, issued, bundle


def test_a_claimed_node_goes_online_over_tls_and_is_refused_once_its_certificate_is_revoked(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", tls=True)
    node = NodeProcess(tmp_path / "box")
    try:
        hub.start()
        node_id, _, ca, issued, _ = claim_over_tls(hub, node)
        assert "mqtts://127.0.0.1" in node.log()

        # plain HTTP is not served any more
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{hub.port}/readyz", timeout=2)

        revoked = subprocess.run(
            [sys.executable, "-m", "hark_fleet.provision", "ca", "--data-dir", str(hub.data_dir), "revoke", node_id],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert revoked.returncode == 0, revoked.stderr

        def refused() -> bool:
            context = client_context(ca.ca_pem, issued.cert_pem, issued.key_pem)
            try:
                httpx.get(f"{hub.url}/readyz", verify=context, timeout=2)
            except (httpx.HTTPError, ssl.SSLError):
                return True
            return False

        wait_for(refused, 10, "the hub to refuse the revoked certificate")
        # the broker reloads the CRL on SIGHUP right after the hub's listeners do: a node stopping in the same
        # milliseconds may lose its offline status to the reload, so the node stops once the broker has reloaded,
        # and is offline before it comes back
        if "(Mosquitto, " in hub.log():  # the embedded Mosquitto (the in-process broker reloads in the hub itself)
            wait_for(lambda: "Reloading config" in hub.log(), 10, "the broker to reload the CRL")
        node.stop()
        wait_for(lambda: _status(hub, node_id) != "online", 10, "the stopped node offline")
        node.start()
        wait_for(lambda: node.log().count("cannot get the config from the hub") >= 1, 30, "the restarted node refused")
        assert _status(hub, node_id) != "online"
    finally:
        node.stop()
        assert hub.stop() == 0, hub.log()


def test_rotating_a_nodes_credential_renews_its_certificate_too(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", tls=True)
    node = NodeProcess(tmp_path / "box")
    try:
        hub.start()
        node_id, _, _, _, bundle = claim_over_tls(hub, node)

        with hub.admin() as api:
            rotated = api.post(f"/api/v1/nodes/{node_id}/credentials/rotate", json={"grace_s": 60, "deliver": True})
        assert rotated.status_code == 201, rotated.text
        new_credential = rotated.json()["data"]["credential"]

        def renewed() -> bool:
            state = json.loads(node.state_path.read_text())
            return state["credential"] == new_credential and state["ca_pem"] != bundle

        wait_for(renewed, 20, "the node to store its renewed certificate\n" + node.log()[-3000:])
        wait_for(lambda: "restarting in place" in node.log(), 10, "the node to restart with it")
        assert len([r for r in CertificateAuthority.open(hub.data_dir, create=False).issued() if r.subject == node_id]) == 2
        wait_for(lambda: node.log().count("mqtt connected to mqtts://") >= 2, 30, "a new TLS connection\n" + node.log()[-3000:])
        wait_for(lambda: _status(hub, node_id) == "online", 30, "the node online again")
    finally:
        node.stop()
        assert hub.stop() == 0, hub.log()
