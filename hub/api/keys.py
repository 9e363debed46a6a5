"""API keys: a user's own keys, and service keys for admins; managed from a login session, or by a key holding auth:keys."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import AUTHENTICATED, BaseHandler
from hark_fleet.hub.auth.permissions import KEY_MANAGEMENT
from hark_fleet.hub.errors import Forbidden
from hark_fleet.hub.services import api_keys
from hark_fleet.hub.services.listing import fetch_page, parse_list_request


class KeyCreateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    kind: str = "user"
    sites: list[str] | None = None
    expires_at: str | None = None


class KeyManagement(BaseHandler):
    """Any login session may manage its keys; an API key only with the auth:keys scope; a node credential never."""

    async def authorize(self, permission: str) -> None:
        await super().authorize(permission)
        principal = self.principal
        assert principal is not None
        if api_keys.may_manage_keys(principal):
            return
        await self.audit(
            "access.denied", permission=KEY_MANAGEMENT, outcome="failure", reason=f"{self.request.method} {self.route}"
        )
        message = f"Managing API keys with an API key needs the scope {KEY_MANAGEMENT}."
        if principal.kind == "key":
            current = list(principal.key_scopes or ())
            raise Forbidden(message, code="insufficient_scope", required=[KEY_MANAGEMENT], current=current)
        raise Forbidden(message, required=[KEY_MANAGEMENT])


class KeysHandler(KeyManagement):
    """`GET|POST /api/v1/auth/keys`: list keys (own, a key's own tree, or all with auth:manage) and create one."""

    permissions = {"get": AUTHENTICATED, "post": AUTHENTICATED}

    async def get(self) -> None:
        assert self.principal is not None
        args = self.query_args()
        ids = None
        if self.principal.kind == "key" and not self.principal.unrestricted_admin:
            ids = await self.hub.db.run(api_keys.key_tree, self.principal.id)
        elif not self.principal.unrestricted_admin:
            args["user_id"] = [self.principal.user_id or ""]
            args["kind"] = ["user"]
        request = parse_list_request(api_keys.KEY_LIST, args, ids)
        items, next_cursor = await self.hub.db.run(fetch_page, api_keys.KEY_LIST, request)
        self.write_page(items, next_cursor)

    async def post(self) -> None:
        assert self.principal is not None
        body = self.parse_body(KeyCreateBody)
        key, secret = await self.hub.db.run(
            api_keys.create_key,
            self.actor,
            self.principal,
            body.name,
            body.kind,
            body.scopes,
            body.sites,
            self.optional_time(body.expires_at, "expires_at"),
        )
        self.write_data({"key": key, "secret": secret}, 201)


class KeyHandler(KeyManagement):
    """`DELETE /api/v1/auth/keys/{id}`: revoke (the key answers `api_key_revoked` from then on)."""

    permissions = {"delete": AUTHENTICATED}

    async def delete(self, id: str) -> None:
        await self.hub.db.run(api_keys.revoke_key, self.actor, self.principal, id)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class KeyRotateHandler(KeyManagement):
    """`POST /api/v1/auth/keys/{id}/rotate`: a new secret, shown once; the old one stops working."""

    permissions = {"post": AUTHENTICATED}

    async def post(self, id: str) -> None:
        key, secret = await self.hub.db.run(api_keys.rotate_key, self.actor, self.principal, id)
        self.hub.authenticator.forget_all()
        self.write_data({"key": key, "secret": secret}, 201)
