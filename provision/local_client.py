"""Calls to a node's local endpoint (`/local/v1/...`), by the hub and by `hark-provision`."""

from __future__ import annotations

from typing import Any

from hark_fleet.provision.http import call_json


async def node_info(local_url: str) -> dict[str, Any]:
    """`GET /local/v1/info`: what the node says about itself."""
    answer = await call_json("GET", f"{local_url}/local/v1/info")
    return dict(answer["data"])


async def provision_node(
    local_url: str,
    claim_code: str,
    node_id: str,
    credential: str,
    hub_url: str,
    mqtt_url: str | None,
    ca_pem: str | None = None,
) -> dict[str, Any]:
    """Hand a node its identity with `POST /local/v1/provision` (RequestFailed 403/409/429 when refused)."""
    body = {
        "claim_code": claim_code,
        "node_id": node_id,
        "credential": credential,
        "hub_url": hub_url,
        "mqtt_url": mqtt_url,
        "ca_pem": ca_pem,
    }
    answer = await call_json("POST", f"{local_url}/local/v1/provision", body)
    return dict(answer["data"])


async def reset_node(local_url: str, claim_code: str | None = None, credential: str | None = None) -> dict[str, Any]:
    """Factory-reset a node with its claim code or its credential (`POST /local/v1/reset`)."""
    body = {"claim_code": claim_code} if claim_code else {}
    answer = await call_json("POST", f"{local_url}/local/v1/reset", body, token=credential)
    return dict(answer["data"])
