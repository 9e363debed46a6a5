"""Login and logout, `me`, a user's own sessions and password."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import AUTHENTICATED, PUBLIC, SESSION_COOKIE, BaseHandler
from hark_fleet.hub.clock import iso
from hark_fleet.hub.errors import Unauthenticated
from hark_fleet.hub.services import auth as auth_service


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str
    cookie: bool = False  # the console asks for an HttpOnly session cookie as well


class PasswordChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: str
    new_password: str


class UserSessionHandler(BaseHandler):
    """Routes only a logged-in user (not an API key) may use, whatever their roles."""

    async def authorize(self, permission: str) -> None:
        if self.principal is None or self.principal.kind != "user":
            raise Unauthenticated("This needs a user's login session, not an API key.")
        await super().authorize(permission)


class LoginHandler(BaseHandler):
    """`POST /api/v1/auth/login`: a session token for a username and password."""

    permissions = {"post": PUBLIC}
    max_body_bytes = 8 * 1024
    runs_on_full_disk = frozenset({"post"})  # an operator logs in to make room

    async def post(self) -> None:
        body = self.parse_body(LoginBody)
        source_ip, user_agent = self.request.remote_ip, self.request.headers.get("User-Agent")
        candidate = await self.hub.db.run(auth_service.begin_login, body.username[:150], source_ip)
        # argon2id takes tens of milliseconds: not on the event loop, and not on the database thread.
        ok, rehash = await self.hub.run_cpu(auth_service.check_password, candidate, body.password[:1024])
        result = await self.hub.db.run(auth_service.finish_login, candidate, ok, rehash, source_ip, user_agent)
        data = {"token": result.token, "expires_at": iso(result.expires_at), "user": result.user_data}
        if body.cookie:
            self.set_session_cookie(result.token, result.expires_at)
            data["csrf_token"] = auth_service.csrf_token(result.token)
        self.write_data(data)


class LogoutHandler(UserSessionHandler):
    """`POST /api/v1/auth/logout`: end the calling session."""

    permissions = {"post": AUTHENTICATED}
    runs_on_full_disk = frozenset({"post"})

    async def post(self) -> None:
        assert self.principal is not None
        if self.principal.session_id is None:
            raise Unauthenticated("Only a login session can log out.")
        await self.hub.db.run(auth_service.logout, self.actor, self.principal)
        self.hub.authenticator.forget_all()
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.write_no_content()


class LogoutAllHandler(UserSessionHandler):
    """`POST /api/v1/auth/logout-all`: end every session of the caller."""

    permissions = {"post": AUTHENTICATED}

    async def post(self) -> None:
        assert self.principal is not None
        await self.hub.db.run(auth_service.logout_all, self.actor, self.principal)
        self.hub.authenticator.forget_all()
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.write_no_content()


class MeHandler(UserSessionHandler):
    """`GET /api/v1/auth/me`: the caller and the permissions resolved for it."""

    permissions = {"get": AUTHENTICATED}

    async def get(self) -> None:
        assert self.principal is not None
        data = await self.hub.db.run(auth_service.me, self.principal)
        if self.bearer_token() is None and (cookie := self.session_cookie()):
            data["csrf_token"] = auth_service.csrf_token(cookie)
        self.write_data(data)


class SessionsHandler(UserSessionHandler):
    """`GET /api/v1/auth/sessions`: the caller's live sessions."""

    permissions = {"get": AUTHENTICATED}

    async def get(self) -> None:
        assert self.principal is not None
        sessions = await self.hub.db.run(auth_service.own_sessions, self.principal)
        self.write_page(sessions, None)


class SessionHandler(UserSessionHandler):
    """`DELETE /api/v1/auth/sessions/{id}`: revoke one of the caller's sessions."""

    permissions = {"delete": AUTHENTICATED}

    async def delete(self, id: str) -> None:
        assert self.principal is not None
        await self.hub.db.run(auth_service.revoke_own_session, self.actor, self.principal, id)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class PasswordHandler(UserSessionHandler):
    """`POST /api/v1/auth/password`: change the caller's password; their other sessions end."""

    permissions = {"post": AUTHENTICATED}
    max_body_bytes = 8 * 1024

    async def post(self) -> None:
        assert self.principal is not None
        body = self.parse_body(PasswordChangeBody)
        revoked = await self.hub.db.run(
            auth_service.change_own_password, self.actor, self.principal, body.current_password[:1024], body.new_password[:2048]
        )
        self.hub.authenticator.forget_all()
        self.write_data({"other_sessions_revoked": revoked})
