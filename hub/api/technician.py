"""Technicians at a node: signed tokens for users, the node's technician access, commissioning reports."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hark_fleet.hub.api.nodes import CONTROL, AgentHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import technician
from hark_fleet.hub.services.nodes import get_node


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    ttl_s: int = technician.DEFAULT_TOKEN_TTL_S


class TechnicianTokenHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/technician-token`: a token the node checks itself (with the hub offline)."""

    permissions = {"post": "node:manage"}

    async def post(self, id: str) -> None:
        body = self.parse_body(TokenBody) if self.body_bytes().strip() else TokenBody()
        if not 60 <= body.ttl_s <= technician.MAX_TOKEN_TTL_S:
            raise InvalidRequest("Invalid ttl_s.", fields={"ttl_s": f"60 to {technician.MAX_TOKEN_TTL_S} seconds"})
        await self.hub.db.run(get_node, id, self.scope)
        assert self.principal is not None
        signer = await asyncio.get_running_loop().run_in_executor(None, technician.signer_for, self.hub.config.data_dir)
        token, claims = signer.issue(id, self.principal.user_id or self.principal.id, self.principal.name, body.ttl_s)
        issued = await self.hub.db.run(technician.token_issued, self.actor, self.scope, id, claims)
        self.write_data({"token": token, "node_id": id, **issued}, 201)


class TechnicianAccessHandler(AgentHandler):
    """`GET /api/v1/nodes/{id}/technician-access`: the PIN's hash and the token key, for the node itself."""

    permissions = {"get": CONTROL}

    async def get(self, id: str) -> None:
        await self.hub.db.run(get_node, id, self.scope)
        signer = await asyncio.get_running_loop().run_in_executor(None, technician.signer_for, self.hub.config.data_dir)
        pin_hash = await self.hub.db.run(technician.access_for, id)
        self.write_data({"pin_hash": pin_hash, "public_key": signer.public_pem, "algorithm": "EdDSA"})


class CommissioningReportsHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/commissioning-reports` (the node) and `GET` (users): reports kept with the node."""

    permissions = {"get": "node:read", "post": CONTROL}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(technician.list_reports, self.scope, id))

    async def post(self, id: str) -> None:
        report: dict[str, Any] = self.parse_body(dict)
        await self.hub.db.run(get_node, id, self.scope)
        self.write_data(await self.hub.db.run(technician.store_report, id, report), 201)
