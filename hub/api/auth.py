"""Login, logout and `me`."""

from __future__ import annotations

import msgspec

from hub.api.base import AUTHENTICATED, PUBLIC, BaseHandler
from hub.clock import iso
from hub.errors import Unauthenticated
from hub.services import auth as auth_service


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str


class LoginHandler(BaseHandler):
    """`POST /api/v1/auth/login`: a bearer token for a username and password."""

    permissions = {"post": PUBLIC}
    max_body_bytes = 8 * 1024

    async def post(self) -> None:
        body = self.parse_body(LoginBody)
        result = await self.hub.db.run(
            auth_service.login,
            body.username[:150],
            body.password[:1024],
            self.request.remote_ip,
            self.request.headers.get("User-Agent"),
        )
        if result is None:
            raise Unauthenticated("The username or password is wrong.", code="invalid_credentials")
        self.write_data(
            {
                "token": result.token,
                "expires_at": iso(result.expires_at),
                "user": auth_service.user_to_api(result.user),
            }
        )


class LogoutHandler(BaseHandler):
    """`POST /api/v1/auth/logout`: end the calling session."""

    permissions = {"post": AUTHENTICATED}

    def authorize(self, permission: str) -> None:
        if self.principal is None or self.principal.session_id is None:
            raise Unauthenticated("Only a login session can log out.")

    async def post(self) -> None:
        assert self.principal is not None and self.principal.session_id is not None
        await self.hub.db.run(auth_service.revoke_session, self.principal.session_id)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class MeHandler(BaseHandler):
    """`GET /api/v1/auth/me`: the caller and the permissions resolved for it."""

    permissions = {"get": AUTHENTICATED}

    def authorize(self, permission: str) -> None:
        if self.principal is None or self.principal.kind != "user":
            raise Unauthenticated("Only a user session has a `me`.")

    async def get(self) -> None:
        assert self.principal is not None
        self.write_data(await self.hub.db.run(auth_service.me, self.principal))
