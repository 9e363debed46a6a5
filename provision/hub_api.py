"""The few hub routes the installer's tool calls."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from hark_fleet.provision.http import call_json


class HubApi:
    """The hub's API as one user or API key."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1{path}"

    async def login(self, username: str, password: str) -> None:
        """Log in and keep the session token for the next calls."""
        answer = await call_json("POST", self.url("/auth/login"), {"username": username, "password": password})
        self.token = answer["data"]["token"]

    async def discovered_nodes(self) -> list[dict[str, Any]]:
        answer = await call_json("GET", self.url("/discovered-nodes"), token=self.token)
        return list(answer["data"])

    async def enroll_discovered(
        self, hardware_id: str, claim_code: str, name: str, site: str | None, tags: list[str]
    ) -> dict[str, Any]:
        body = {"claim_code": claim_code, "name": name, "site": site, "tags": tags}
        answer = await call_json("POST", self.url(f"/discovered-nodes/{quote(hardware_id, safe='')}/enroll"), body, self.token)
        return dict(answer["data"]["node"])

    async def node_by_hardware_id(self, hardware_id: str) -> dict[str, Any] | None:
        answer = await call_json("GET", self.url("/nodes?" + urlencode({"hardware_id": hardware_id})), token=self.token)
        found = answer["data"]
        return dict(found[0]) if found else None
