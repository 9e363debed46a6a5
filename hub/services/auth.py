"""Logins, login sessions, a user's own sessions and password, and the first admin.

Runs on a database worker; knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from hark_fleet.hub.auth.permissions import sorted_permissions
from hark_fleet.hub.auth.principal import Principal
from hark_fleet.hub.auth.tokens import new_secret, secret_hash
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import AuthSession, User, database_proxy
from hark_fleet.hub.db.optional_writes import write_if_room
from hark_fleet.hub.errors import InvalidRequest, NotFound, RateLimited, Unauthenticated
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import access_policies, login_throttle
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.grants import ADMIN_LOCK, principal_for_user, user_groups

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
    user_data: dict[str, Any]


def csrf_token(session_token: str) -> str:
    """The CSRF token that goes with a cookie session (derived, so nothing more is stored)."""
    return hmac.new(session_token.encode(), b"hark-csrf", hashlib.sha256).hexdigest()[:32]


def user_to_api(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "roles": list(user.roles or []),
        "sites": None if user.sites is None else list(user.sites),
        "groups": [g.id for g in user_groups(user.id)],
        "disabled": bool(user.disabled),
        "sso": user.oidc_subject is not None,
        "created_at": iso(user.created_at),
        "password_changed_at": iso(user.password_changed_at),
    }


def ensure_first_admin(password: str | None, generate: Any) -> str | None:
    """Create `admin` when there are no users; return the password if one was generated.

    Hubs starting at once on one empty PostgreSQL database make one admin: the check and the insert run under
    the admin advisory lock, and only the hub that made the admin returns (and announces) its password.
    """
    if User.select().exists():
        return None
    generated = None
    if not password:
        password = generated = generate()
    password_hash = hash_password(password)  # slow on purpose: before the lock
    with database_proxy.atomic():
        if isinstance(database_proxy.obj, peewee.PostgresqlDatabase):
            database_proxy.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADMIN_LOCK,))
        if User.select().exists():
            return None  # another hub made it meanwhile
        now = utcnow()
        user = User.create(
            id=new_id("usr"),
            username="admin",
            password_hash=password_hash,
            roles=["admin"],
            sites=None,
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        record(
            Actor("system", None, "hub"),
            "user.create",
            target=("user", user.id),
            after={"username": "admin", "roles": ["admin"]},
            reason="first start",
        )
    return generated


def open_session(user: User, source_ip: str | None, user_agent: str | None, via: str = "password") -> LoginResult:
    token = new_secret(SESSION_TOKEN_PREFIX)
    now = utcnow()
    expires_at = now + timedelta(seconds=access_policies.load().session_ttl_s)
    session = AuthSession.create(
        id=new_id("ses"),
        user=user,
        token_hash=secret_hash(token),
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        source_ip=(source_ip or "")[:64] or None,
        user_agent=(user_agent or "")[:256] or None,
        via=via,
    )
    return LoginResult(token=token, expires_at=expires_at, user=user, session_id=session.id, user_data=user_to_api(user))


@dataclass(frozen=True, slots=True)
class LoginCandidate:
    """What the password check needs, read before it runs (off the database thread)."""

    username: str
    user_id: str | None
    password_hash: str
    disabled: bool


def begin_login(username: str, source_ip: str | None) -> LoginCandidate:
    """Refuse at once while locked out; otherwise the stored hash to verify against."""
    now = utcnow()
    for key in (login_throttle.user_key(username), login_throttle.address_key(source_ip)):
        wait = login_throttle.retry_after(login_throttle.load(key), now)
        if wait is not None:
            raise RateLimited(f"Too many failed logins; try again in {wait} s.", retry_after_s=wait)
    user = User.get_or_none(User.username == username)
    if user is None:
        return LoginCandidate(username, None, _DUMMY_HASH, False)
    return LoginCandidate(username, user.id, user.password_hash or _DUMMY_HASH, bool(user.disabled))


def check_password(candidate: LoginCandidate, password: str) -> tuple[bool, str | None]:
    """Verify (argon2id, CPU-bound, no database): whether it matches, and a new hash if the old parameters are outdated."""
    ok = verify_password(candidate.password_hash, password) and candidate.user_id is not None and not candidate.disabled
    rehash = hash_password(password) if ok and needs_rehash(candidate.password_hash) else None
    return ok, rehash


def finish_login(
    candidate: LoginCandidate, ok: bool, rehash: str | None, source_ip: str | None, user_agent: str | None
) -> LoginResult:
    """Record the outcome: a failure counts towards lockouts; a success opens a session."""
    now = utcnow()
    actor = Actor("anonymous", None, candidate.username[:150], source_ip)
    user_key, address_key = login_throttle.user_key(candidate.username), login_throttle.address_key(source_ip)
    if not ok:
        with database_proxy.atomic():
            record(
                actor, "auth.login", target=("user", candidate.user_id), outcome="failure", reason="wrong username or password"
            )
            for key, threshold in ((user_key, login_throttle.USER_THRESHOLD), (address_key, login_throttle.ADDRESS_THRESHOLD)):
                state, locked = login_throttle.after_failure(login_throttle.load(key), now, threshold)
                login_throttle.store(key, state)
                if locked:
                    record(
                        actor,
                        "auth.lockout",
                        target=("login", key),
                        outcome="failure",
                        reason=f"{threshold} failed logins within 15 minutes; locked until {iso(state.locked_until)}",
                    )
        raise Unauthenticated("The username or password is wrong.", code="invalid_credentials")
    with database_proxy.atomic():
        user = User.get_by_id(candidate.user_id)
        login_throttle.clear(user_key)
        if rehash is not None:
            User.update(password_hash=rehash).where(User.id == user.id).execute()
        result = open_session(user, source_ip, user_agent)
        record(Actor("user", user.id, user.username, source_ip), "auth.login", target=("session", result.session_id))
    return result


def login(username: str, password: str, source_ip: str | None, user_agent: str | None) -> LoginResult:
    """All three login steps in one call (for tools running next to the database)."""
    candidate = begin_login(username, source_ip)
    ok, rehash = check_password(candidate, password)
    return finish_login(candidate, ok, rehash, source_ip, user_agent)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of looking up a bearer secret: a principal, or why not."""

    principal: Principal | None
    problem: str | None = None  # "unknown" | "expired" | "revoked"


def authenticate_session_token(token: str) -> TokenCheck:
    """Resolve a session token; slide its expiry forward when it is used."""
    digest = secret_hash(token)
    try:
        session = AuthSession.select(AuthSession, User).join(User).where(AuthSession.token_hash == digest).get()
    except peewee.DoesNotExist:
        return TokenCheck(None, "unknown")
    if session.revoked_at is not None or session.user.disabled:
        return TokenCheck(None, "unknown")
    now = utcnow()
    if session.expires_at <= now:
        return TokenCheck(None, "expired")
    if now - session.last_used_at >= RENEW_AFTER:
        ttl = timedelta(seconds=access_policies.load().session_ttl_s)
        write_if_room(AuthSession.update(last_used_at=now, expires_at=now + ttl).where(AuthSession.id == session.id))
    return TokenCheck(principal_for_user(session.user, session.id, via=session.via))


def revoke_session(session_id: str) -> None:
    AuthSession.update(revoked_at=utcnow()).where(AuthSession.id == session_id, AuthSession.revoked_at.is_null()).execute()


def revoke_user_sessions(user_id: str, keep: str | None = None) -> int:
    """Revoke every live session of a user except `keep`; return how many."""
    query = AuthSession.update(revoked_at=utcnow()).where(AuthSession.user == user_id, AuthSession.revoked_at.is_null())
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    return query.execute()


def logout(actor: Actor, principal: Principal) -> None:
    assert principal.session_id is not None
    with database_proxy.atomic():
        revoke_session(principal.session_id)
        record(actor, "auth.logout", target=("session", principal.session_id))


def logout_all(actor: Actor, principal: Principal) -> int:
    assert principal.user_id is not None
    with database_proxy.atomic():
        count = revoke_user_sessions(principal.user_id)
        record(actor, "auth.logout_all", target=("user", principal.user_id), after={"sessions_revoked": count})
    return count


def session_to_api(session: AuthSession, current_id: str | None) -> dict[str, Any]:
    return {
        "id": session.id,
        "created_at": iso(session.created_at),
        "last_used_at": iso(session.last_used_at),
        "expires_at": iso(session.expires_at),
        "source_ip": session.source_ip,
        "user_agent": session.user_agent,
        "via": session.via,
        "current": session.id == current_id,
    }


def own_sessions(principal: Principal) -> list[dict[str, Any]]:
    sessions = (
        AuthSession.select()
        .where(AuthSession.user == principal.user_id, AuthSession.revoked_at.is_null(), AuthSession.expires_at > utcnow())
        .order_by(AuthSession.created_at.desc())
    )
    return [session_to_api(s, principal.session_id) for s in sessions]


def revoke_own_session(actor: Actor, principal: Principal, session_id: str) -> None:
    session = AuthSession.get_or_none(AuthSession.id == session_id, AuthSession.user == principal.user_id)
    if session is None or session.revoked_at is not None:
        raise NotFound(f"No session {session_id}.")
    with database_proxy.atomic():
        revoke_session(session_id)
        record(actor, "session.revoke", target=("session", session_id))


def change_own_password(actor: Actor, principal: Principal, current: str, new: str) -> int:
    """Change the caller's password; every other session of theirs is revoked."""
    user = User.get_by_id(principal.user_id)
    if user.oidc_subject is not None and not user.password_hash:
        raise InvalidRequest("This account signs in through single sign-on.")
    if not verify_password(user.password_hash, current):
        record(actor, "user.password.change", target=("user", user.id), outcome="failure", reason="wrong current password")
        raise InvalidRequest("The current password is wrong.", fields={"current_password": "is wrong"})
    problem = password_problem(new)
    if problem:
        raise InvalidRequest("The new password is not acceptable.", fields={"new_password": problem})
    with database_proxy.atomic():
        now = utcnow()
        User.update(password_hash=hash_password(new), password_changed_at=now, updated_at=now).where(User.id == user.id).execute()
        revoked = revoke_user_sessions(user.id, keep=principal.session_id)
        record(actor, "user.password.change", target=("user", user.id), after={"other_sessions_revoked": revoked})
    return revoked


def me(principal: Principal) -> dict[str, Any]:
    """The `me` document: the user, the permissions resolved for this request, and where they hold."""
    user = User.get_by_id(principal.user_id)
    grants = [
        {"permissions": sorted_permissions(g.permissions), "sites": None if g.sites is None else sorted(g.sites)}
        for g in principal.grants
    ]
    return {
        "user": user_to_api(user),
        "permissions": sorted_permissions(principal.permissions),
        "grants": grants,
        "via": principal.via,
    }
