"""Who may use the technician's endpoint, and what they did there.

Before enrollment the claim code logs a technician in. After it, a PIN set at the hub (the
node keeps only the hub's argon2 hash) or a token the hub signed (Ed25519, checked with the
hub's public key, so it works while the hub is away). Both arrive with the node's config and
are kept in `technician.json`, so they survive a restart with the hub offline. Wrong secrets
count against the same 5-a-minute limit as claim codes. A login gives a short session (a
cookie for the page, a bearer for scripts). Every action is logged with who did it (their
name, how they logged in and, for a token, its subject) and handed to `report` (the agent's
outbox) when there is one; the hub audits it with that technician as the actor.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from hark_fleet.node.local.errors import ClaimRefused, LocalError
from hark_fleet.node.local.provision import Provisioning, WrongCodeLimit
from hark_fleet.node.state import credential_digest
from hark_fleet.protocol.atomic_file import write_atomic

log = logging.getLogger(__name__)

SESSION_TTL_S = 3600.0
SESSION_COOKIE = "hark_technician"
TOKEN_AUDIENCE_PREFIX = "hark-node:"
ACTION_LOG_SIZE = 200
ACTION_KIND = "technician.action"

_verifier = PasswordHasher()


class NotLoggedIn(LocalError):
    status = 401
    code = "unauthenticated"


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in technician: who (as the hub or the node knows them), how, until when."""

    id: str
    who: str
    method: str  # claim_code | pin | token | credential
    expires_at: float
    subject: str | None = None  # a token's `sub`: the hub's id for the person


@dataclass(frozen=True, slots=True)
class TechnicianSecrets:
    """What the hub gave this node to check technicians with."""

    pin_hash: str | None = None
    public_key: str | None = None


@dataclass(slots=True)
class ActionLog:
    """The last local actions, in memory; each also goes to `report` (the outbox) when set."""

    entries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ACTION_LOG_SIZE))
    report: Callable[[dict[str, Any]], None] | None = None

    def add(
        self,
        action: str,
        who: str,
        source: str,
        outcome: str = "success",
        *,
        method: str | None = None,
        subject: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Log one action; `method` is how `who` logged in (for a refused login: what they tried)."""
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "action": action,
            "who": who,
            "method": method,
            "source": source,
            "outcome": outcome,
            **({"subject": subject} if subject is not None else {}),
            **details,
        }
        self.entries.append(entry)
        log.info("technician action %s by %s from %s: %s", action, who, source, outcome)
        if self.report is not None:
            self.report(entry)
        return entry


def verify_pin(pin_hash: str, pin: str) -> bool:
    """Whether `pin` matches the hub's argon2 hash (blocking: tens of milliseconds)."""
    try:
        return _verifier.verify(pin_hash, pin)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def claimed_subject(token: str) -> str | None:
    """The `sub` a token says, unverified (for the log of a refused login only), or None."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, ValueError, AttributeError):
        return None
    return sub[:100] if isinstance(sub, str) else None


def verify_token(public_key: str, token: str, node_id: str, now: float | None = None) -> dict[str, Any] | None:
    """The claims of a hub-signed technician token for `node_id`, or None when it is not one (or expired)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=["EdDSA"],
            audience=f"{TOKEN_AUDIENCE_PREFIX}{node_id}",
            options={"require": ["exp", "sub", "aud"]},
        )
    except (jwt.PyJWTError, ValueError) as err:
        log.info("technician token refused: %s", err)
        return None
    return claims


class TechnicianAccess:
    """Checks technicians' secrets and keeps their sessions."""

    def __init__(
        self,
        path: Path,
        provisioning: Provisioning,
        limit: WrongCodeLimit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.provisioning = provisioning
        self.limit = limit or provisioning.limit
        self.log = ActionLog()
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self.secrets = self._load()

    def _load(self) -> TechnicianSecrets:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return TechnicianSecrets()
        except (OSError, ValueError) as err:
            log.error("cannot read %s (%s): only the claim code works until the hub sends them again", self.path, err)
            return TechnicianSecrets()
        if not isinstance(raw, dict):
            log.error("%s is not what this node wrote: only the claim code works until the hub sends them again", self.path)
            return TechnicianSecrets()
        pin_hash, public_key = raw.get("pin_hash"), raw.get("public_key")
        return TechnicianSecrets(
            pin_hash if isinstance(pin_hash, str) else None, public_key if isinstance(public_key, str) else None
        )

    def update(self, pin_hash: str | None, public_key: str | None) -> bool:
        """Keep what the hub sent (blocking: writes the file); whether it changed."""
        new = TechnicianSecrets(pin_hash, public_key)
        if new == self.secrets:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"pin_hash": pin_hash, "public_key": public_key}), mode=0o600)
        self.secrets = new
        log.info("technician access from the hub: PIN %s, token key %s", _set(pin_hash), _set(public_key))
        return True

    async def login(self, source: str, pin: str | None, token: str | None, claim_code: str | None) -> Session:
        """A session for the right secret; ClaimRefused (counted) for a wrong one, TooManyAttempts while limited."""
        self.limit.check()
        state = self.provisioning.store.state
        who: str | None = None
        subject: str | None = None
        method: str | None = None  # what was tried, for the log of a refused login too
        if not state.enrolled:
            method = "claim_code" if claim_code else None
            if claim_code and self.provisioning._check_code(claim_code, source):
                who = "claim-code holder"
            elif not claim_code:
                self.limit.failed()
        else:
            method = "pin" if pin and (self.secrets.pin_hash or not token) else "token" if token else None
            if pin and self.secrets.pin_hash:
                if await asyncio.get_running_loop().run_in_executor(None, verify_pin, self.secrets.pin_hash, pin):
                    who = "PIN holder"
            elif token and self.secrets.public_key and state.node_id:
                claims = verify_token(self.secrets.public_key, token, state.node_id)
                if claims is not None:
                    who, subject = str(claims.get("name") or claims["sub"]), str(claims["sub"])
            if who is None:
                self.limit.failed()
        if who is None:
            log.warning("technician login refused from %s", source)
            tried = {"claimed_subject": claimed_subject(token)} if token and method == "token" else {}
            self.log.add("login", "unknown", source, "failure", method=method, **tried)
            raise ClaimRefused("Wrong PIN, token or claim code." if state.enrolled else "Wrong claim code.")
        assert method is not None
        session = Session(secrets.token_urlsafe(24), who, method, self._clock() + SESSION_TTL_S, subject)
        self._forget_expired()
        self._sessions[session.id] = session
        self.log.add("login", who, source, method=method, subject=subject)
        return session

    def session(self, session_id: str | None, credential: str | None = None) -> Session:
        """The live session `session_id` (or the node's own credential, for scripts); NotLoggedIn otherwise."""
        found = self._sessions.get(session_id or "")
        if found is not None and found.expires_at > self._clock():
            return found
        stored = self.provisioning.store.state.credential
        if credential and stored and hmac.compare_digest(credential_digest(credential), credential_digest(stored)):
            return Session("credential", "node credential", "credential", self._clock() + 60)
        raise NotLoggedIn("Log in with the PIN, a technician token or (before enrollment) the claim code.")

    def has_session(self, session_id: str | None) -> bool:
        found = self._sessions.get(session_id or "")
        return found is not None and found.expires_at > self._clock()

    def logout(self, session_id: str | None) -> None:
        self._sessions.pop(session_id or "", None)

    def _forget_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


def _set(value: str | None) -> str:
    return "set" if value else "not set"
