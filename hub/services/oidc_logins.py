"""Single sign-on bookkeeping: pending logins (used once) and the users an identity provider vouches for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hark_fleet.hub.auth.oidc import claim_summary, map_claims, username_from_claims
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import OidcLogin, User, database_proxy
from hark_fleet.hub.errors import Forbidden, InvalidRequest
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import access_policies
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.auth import LoginResult, open_session

PENDING_TTL = timedelta(minutes=10)


def begin(state: str, nonce: str, verifier: str, return_to: str) -> None:
    now = utcnow()
    OidcLogin.delete().where(OidcLogin.created_at < now - PENDING_TTL).execute()
    OidcLogin.create(state=state, nonce=nonce, code_verifier=verifier, return_to=return_to, created_at=now)


def take(state: str) -> OidcLogin:
    """The pending login for `state`, removed so it cannot be replayed."""
    with database_proxy.atomic():
        login = OidcLogin.get_or_none(OidcLogin.state == state)
        if login is not None:
            OidcLogin.delete().where(OidcLogin.state == state).execute()
    if login is None or utcnow() - login.created_at > PENDING_TTL:
        raise InvalidRequest(
            "This sign-in is unknown, expired or already used; start again.", fields={"state": "unknown or used"}
        )
    return login


def _free_username(wanted: str) -> str:
    name, n = wanted, 1
    while User.select().where(User.username == name).exists():
        n += 1
        name = f"{wanted[:140]}-{n}"
    return name


def sign_in(issuer: str, claims: dict[str, Any], source_ip: str | None, user_agent: str | None) -> LoginResult:
    """Find or create the user for these claims, apply the mapped roles and sites, open a session."""
    subject = f"{issuer}|{claims['sub']}"
    actor = Actor("anonymous", None, str(claims.get("preferred_username") or claims["sub"])[:150], source_ip)
    try:
        roles, sites = map_claims(claims, access_policies.load())
    except Forbidden as err:
        record(
            actor,
            "auth.login",
            target=("oidc_subject", subject[:200]),
            outcome="failure",
            reason=err.message,
            after=claim_summary(claims),
        )
        raise
    now = utcnow()
    disabled = None
    with database_proxy.atomic():
        user = User.get_or_none(User.oidc_subject == subject)
        if user is None:
            user = User.create(
                id=new_id("usr"),
                username=_free_username(username_from_claims(claims)),
                display_name=str(claims.get("name") or "")[:200] or None,
                password_hash="",
                roles=roles,
                sites=sites,
                oidc_subject=subject,
                created_at=now,
                updated_at=now,
            )
            record(
                Actor("system", None, "oidc"),
                "user.create",
                target=("user", user.id),
                after={"username": user.username, "roles": roles, "sites": sites, "sso": True},
            )
        elif user.disabled:
            disabled = user.id
        elif (user.roles, user.sites) != (roles, sites):
            before = {"roles": user.roles, "sites": user.sites}
            User.update(roles=roles, sites=sites, updated_at=now).where(User.id == user.id).execute()
            record(
                Actor("system", None, "oidc"),
                "user.access.update",
                target=("user", user.id),
                before=before,
                after={"roles": roles, "sites": sites},
            )
            user = User.get_by_id(user.id)
        if disabled is None:
            result = open_session(user, source_ip, user_agent, via="oidc")
            record(
                Actor("user", user.id, user.username, source_ip),
                "auth.login",
                target=("session", result.session_id),
                after={"via": "oidc", **claim_summary(claims)},
            )
    if disabled is not None:
        record(actor, "auth.login", target=("user", disabled), outcome="failure", reason="user disabled")
        raise Forbidden("This account is disabled.", code="user_disabled")
    return result
