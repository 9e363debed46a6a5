"""Resolve a bearer secret to a principal, by the kind of secret its prefix names."""

from __future__ import annotations

from hub.auth.principal import Principal
from hub.db.database import HubDatabase
from hub.errors import Unauthenticated
from hub.services import auth as auth_service


class Authenticator:
    """Looks bearer secrets up on a database worker and turns misses into 401s."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db

    async def authenticate(self, token: str) -> Principal:
        if len(token) > 512:
            raise Unauthenticated("The token is not valid.")
        prefix = token.split("_", 1)[0]
        if prefix == auth_service.SESSION_TOKEN_PREFIX:
            check = await self.db.run(auth_service.authenticate_session_token, token)
            if check.principal is not None:
                return check.principal
            if check.problem == "expired":
                raise Unauthenticated("The session has expired; log in again.", code="token_expired")
        raise Unauthenticated("The token is not valid.")
