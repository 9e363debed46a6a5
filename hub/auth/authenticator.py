"""Resolve a bearer secret to a principal, by the kind of secret its prefix names."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

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
    round trip per request; every change to sessions, credentials, permissions or sites
    calls `forget_all()`, so a revocation takes effect at once here; with several hub
    instances on one PostgreSQL it also tells the others (`broadcast`, a cluster message),
    which clear their caches within milliseconds (`forget_local`), and an instance that lost
    its listening connection clears its caches once it listens again (issue 24).

    A secret being looked up is looked up once: requests that arrive with it meanwhile
    (when its entry has just expired, every busy connection of that client does) wait for
    that lookup instead of queueing their own on the database thread.
    """

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._pending: dict[str, asyncio.Future[Principal]] = {}
        self._generation = 0  # bumped by forget_all: a lookup begun before it is not kept
        self.refusals = RepeatedRefusals()  # which refusals get an audit row (see hub.auth.refusals)
        self.broadcast: Callable[[], None] | None = None  # tells the other hub instances to forget too

    def forget_all(self) -> None:
        """Forget every looked-up secret here and on every other hub instance."""
        self.forget_local()
        if self.broadcast is not None:
            self.broadcast()

    def forget_local(self) -> None:
        """Forget every looked-up secret on this instance only (another instance told it to)."""
        self._cache.clear()
        self._pending.clear()
        self._generation += 1

    async def authenticate(self, token: str) -> Principal:
        if len(token) > 512:
            raise Unauthenticated("The token is not valid.")
        digest = secret_hash(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < CACHE_TTL_S:
            return hit[0]
        pending = self._pending.get(digest)
        if pending is None:
            pending = self._pending[digest] = asyncio.ensure_future(self._lookup_and_keep(token, digest))
            pending.add_done_callback(functools.partial(self._lookup_done, digest))
        return await asyncio.shield(pending)  # a caller that goes away does not cancel the others' lookup

    def _lookup_done(self, digest: str, done: asyncio.Future[Principal]) -> None:
        if self._pending.get(digest) is done:
            del self._pending[digest]
        if not done.cancelled():
            done.exception()  # retrieved: a refusal whose callers all went away is not logged as unhandled

    async def _lookup_and_keep(self, token: str, digest: str) -> Principal:
        generation, started = self._generation, time.monotonic()
        principal = await self._lookup(token)
        if generation == self._generation:  # nothing was revoked through this hub meanwhile
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (principal, started)
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
