"""Resolve a bearer secret to a principal, by the kind of secret its prefix names."""

from __future__ import annotations

import time

from hark_fleet.hub.auth.principal import Principal
from hark_fleet.hub.auth.refusals import RepeatedRefusals
from hark_fleet.hub.auth.tokens import secret_hash
from hark_fleet.hub.db.database import HubDatabase
from hark_fleet.hub.errors import Unauthenticated
from hark_fleet.hub.services import api_keys, nodes
from hark_fleet.hub.services import auth as auth_service

CACHE_TTL_S = 2.0  # how long a looked-up secret is trusted without asking the database again
CACHE_MAX = 10_000


class Authenticator:
    """Looks bearer secrets up on a database worker and turns misses into 401s.

    Hits are kept for a couple of seconds so a busy client does not cost a database
    round trip per request; every change to sessions or credentials made through this
    hub calls `forget_all()`, so a revocation takes effect at once here (and within
    CACHE_TTL_S on other hub processes sharing the database).
    """

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self._cache: dict[str, tuple[Principal, float]] = {}
        self.refusals = RepeatedRefusals()  # which refusals get an audit row (see hub.auth.refusals)

    def forget_all(self) -> None:
        self._cache.clear()

    async def authenticate(self, token: str) -> Principal:
        if len(token) > 512:
            raise Unauthenticated("The token is not valid.")
        digest = secret_hash(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < CACHE_TTL_S:
            return hit[0]
        principal = await self._lookup(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (principal, now)
        return principal

    async def _lookup(self, token: str) -> Principal:
        prefix = token.split("_", 1)[0]
        if prefix == auth_service.SESSION_TOKEN_PREFIX:
            check = await self.db.run(auth_service.authenticate_session_token, token)
            if check.principal is not None:
                return check.principal
            if check.problem == "expired":
                raise Unauthenticated("The session has expired; log in again.", code="token_expired")
        elif prefix == nodes.CREDENTIAL_PREFIX:
            check = await self.db.run(nodes.authenticate_node, token)
            if check.principal is not None:
                return check.principal
        elif prefix == api_keys.KEY_PREFIX:
            check = await self.db.run(api_keys.authenticate_key, token)
            if check.principal is not None:
                return check.principal
            if check.problem == "revoked":
                raise Unauthenticated("The API key has been revoked.", code="api_key_revoked")
            if check.problem == "expired":
                raise Unauthenticated("The API key has expired.", code="api_key_expired")
        raise Unauthenticated("The token is not valid.")
