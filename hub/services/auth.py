"""Logins, sessions and the first admin. Runs on a database worker; knows nothing of HTTP."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from hub import const
from hub.auth.passwords import hash_password, needs_rehash, verify_password
from hub.auth.permissions import permissions_for_roles, sorted_permissions
from hub.auth.principal import Principal
from hub.auth.tokens import new_secret, secret_hash
from hub.clock import iso, utcnow
from hub.db.models import AuthSession, User
from hub.ids import new_id

SESSION_TOKEN_PREFIX = "hks"
RENEW_AFTER = timedelta(seconds=60)  # sliding expiry is written at most this often per session
# Verified against when the username is unknown, so a miss costs as much as a hit.
_DUMMY_HASH = hash_password("hark-dummy-password-for-timing")


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: User
    session_id: str


def user_to_api(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "roles": list(user.roles or []),
        "sites": None if user.sites is None else list(user.sites),
        "disabled": bool(user.disabled),
        "created_at": iso(user.created_at),
    }


def principal_for_user(user: User, session_id: str | None = None) -> Principal:
    return Principal(
        kind="user",
        id=user.id,
        name=user.username,
        permissions=permissions_for_roles(user.roles or []),
        sites=None if user.sites is None else frozenset(user.sites),
        session_id=session_id,
    )


def ensure_first_admin(password: str | None, generate: Any) -> str | None:
    """Create `admin` when there are no users; return the password if one was generated."""
    if User.select().exists():
        return None
    generated = None
    if not password:
        password = generated = generate()
    now = utcnow()
    User.create(
        id=new_id("usr"),
        username="admin",
        password_hash=hash_password(password),
        roles=["admin"],
        sites=None,
        created_at=now,
        updated_at=now,
    )
    return generated


def login(username: str, password: str, source_ip: str | None, user_agent: str | None) -> LoginResult | None:
    """Check a username and password; on success open a session and return its token."""
    user = User.get_or_none(User.username == username)
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or user.disabled:
        return None
    if needs_rehash(user.password_hash):
        User.update(password_hash=hash_password(password)).where(User.id == user.id).execute()
    token = new_secret(SESSION_TOKEN_PREFIX)
    now = utcnow()
    expires_at = now + timedelta(seconds=const.SESSION_TTL_S)
    session = AuthSession.create(
        id=new_id("ses"),
        user=user,
        token_hash=secret_hash(token),
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        source_ip=(source_ip or "")[:64] or None,
        user_agent=(user_agent or "")[:256] or None,
    )
    return LoginResult(token=token, expires_at=expires_at, user=user, session_id=session.id)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of looking up a bearer secret: a principal, or why not."""

    principal: Principal | None
    problem: str | None = None  # "unknown" | "expired"


def authenticate_session_token(token: str) -> TokenCheck:
    """Resolve a session token; slide its expiry forward when it is used."""
    digest = secret_hash(token)
    try:
        session = (
            AuthSession.select(AuthSession, User)
            .join(User)
            .where(AuthSession.token_hash == digest, AuthSession.revoked_at.is_null())
            .get()
        )
    except peewee.DoesNotExist:
        return TokenCheck(None, "unknown")
    if not hmac.compare_digest(session.token_hash, digest):
        return TokenCheck(None, "unknown")
    now = utcnow()
    if session.expires_at <= now:
        return TokenCheck(None, "expired")
    if session.user.disabled:
        return TokenCheck(None, "unknown")
    if now - session.last_used_at >= RENEW_AFTER:
        AuthSession.update(last_used_at=now, expires_at=now + timedelta(seconds=const.SESSION_TTL_S)).where(
            AuthSession.id == session.id
        ).execute()
    return TokenCheck(principal_for_user(session.user, session.id))


def revoke_session(session_id: str) -> None:
    AuthSession.update(revoked_at=utcnow()).where(AuthSession.id == session_id, AuthSession.revoked_at.is_null()).execute()


def me(principal: Principal) -> dict[str, Any]:
    """The `me` document: the user and the permissions resolved for this request."""
    user = User.get_by_id(principal.id)
    return {"user": user_to_api(user), "permissions": sorted_permissions(principal.permissions)}
