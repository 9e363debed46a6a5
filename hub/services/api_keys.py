"""API keys: user keys (a user's access, narrowed to scopes) and service keys (only their scopes).

Deny by default: a key can do exactly what its `scopes` list names, and never more than
its owner can. The raw secret is shown once; only its hash and a prefix are kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import peewee

from hub.auth.permissions import USER_PERMISSIONS, sorted_permissions
from hub.auth.principal import Grant, Principal, intersect_sites
from hub.auth.tokens import new_secret, secret_hash
from hub.clock import iso, utcnow
from hub.db.models import ApiKey, User, database_proxy
from hub.errors import Forbidden, InvalidRequest, NotFound
from hub.ids import new_id
from hub.services.audit import Actor, record
from hub.services.auth import TokenCheck
from hub.services.grants import user_grants
from hub.services.listing import Filter, ListSpec, one_of
from hub.services.users import check_sites

KEY_PREFIX = "hkk"
KINDS = ("user", "service")
TOUCH_AFTER = timedelta(seconds=60)


def key_to_api(key: ApiKey) -> dict[str, Any]:
    now = utcnow()
    status = "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "active"
    return {
        "id": key.id,
        "name": key.name,
        "kind": key.kind,
        "user_id": key.user_id,
        "key_prefix": key.key_prefix,
        "scopes": list(key.scopes or []),
        "sites": None if key.sites is None else list(key.sites),
        "status": status,
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
    }


KEY_LIST = ListSpec(
    model=ApiKey,
    serialize=key_to_api,
    filters=(Filter("kind", ApiKey.kind, one_of(KINDS)), Filter("user_id", ApiKey.user_id)),
    search=(ApiKey.name, ApiKey.key_prefix),
    time_field=ApiKey.created_at,
    export_columns=("id", "name", "kind", "user_id", "key_prefix", "scopes", "sites", "status", "created_at", "expires_at"),
)


def _new_secret() -> tuple[str, str, str]:
    secret = new_secret(KEY_PREFIX)
    return secret, secret[:12], secret_hash(secret)


def create_key(
    actor: Actor, caller: Principal, name: str, kind: str, scopes: list[str], sites: list[str] | None, expires_at: datetime | None
) -> tuple[dict[str, Any], str]:
    """Make a key; return it and its secret (shown this once)."""
    problems: dict[str, str] = {}
    if not 1 <= len(name.strip()) <= 150:
        problems["name"] = "1-150 characters"
    if kind not in KINDS:
        problems["kind"] = "must be user or service"
    unknown = sorted(set(scopes) - set(USER_PERMISSIONS))
    if not scopes:
        problems["scopes"] = "name at least one permission (keys are deny-by-default)"
    elif unknown:
        problems["scopes"] = f"not permissions a key can hold: {', '.join(unknown)}"
    if expires_at is not None and expires_at <= utcnow():
        problems["expires_at"] = "must be in the future"
    if problems:
        raise InvalidRequest("The key cannot be created.", fields=problems)
    sites = check_sites(sites)
    if kind == "user":
        beyond = sorted(set(scopes) - caller.permissions)
        if beyond or caller.user_id is None:
            raise Forbidden("A user key cannot hold permissions its owner lacks.", required=beyond or scopes)
    elif not caller.unrestricted_admin:
        raise Forbidden("Service keys are made by admins with auth:manage on every site.", required="auth:manage")
    secret, prefix, digest = _new_secret()
    with database_proxy.atomic():
        key = ApiKey.create(
            id=new_id("key"),
            name=name.strip(),
            kind=kind,
            user_id=caller.user_id if kind == "user" else None,
            scopes=sorted_permissions(scopes),
            sites=sites,
            key_prefix=prefix,
            secret_hash=digest,
            created_by=caller.user_id,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        after = key_to_api(key)
        record(
            actor,
            "api_key.create",
            permission="auth:manage" if kind == "service" else None,
            target=("api_key", key.id),
            after=after,
        )
    return after, secret


def visible_key(key_id: str, caller: Principal) -> ApiKey:
    """A key the caller may manage: their own user keys, or any key with auth:manage."""
    key = ApiKey.get_or_none(ApiKey.id == key_id)
    if key is None or not (caller.unrestricted_admin or (key.kind == "user" and key.user_id == caller.user_id)):
        raise NotFound(f"No API key {key_id}.")
    return key


def revoke_key(actor: Actor, caller: Principal, key_id: str) -> None:
    key = visible_key(key_id, caller)
    before = key_to_api(key)
    with database_proxy.atomic():
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            key.save()
        record(actor, "api_key.revoke", target=("api_key", key.id), before=before, after=key_to_api(key))


def rotate_key(actor: Actor, caller: Principal, key_id: str) -> tuple[dict[str, Any], str]:
    """A new secret for a key; the old one stops working at once."""
    key = visible_key(key_id, caller)
    if key.revoked_at is not None:
        raise InvalidRequest("A revoked key cannot be rotated.")
    secret, prefix, digest = _new_secret()
    with database_proxy.atomic():
        key.previous_hash, key.secret_hash, key.key_prefix = key.secret_hash, digest, prefix
        key.save()
        after = key_to_api(key)
        record(actor, "api_key.rotate", target=("api_key", key.id), after=after)
    return after, secret


def authenticate_key(secret: str) -> TokenCheck:
    """Resolve a key secret to a principal narrowed to the key's scopes and sites."""
    digest = secret_hash(secret)
    try:
        key = ApiKey.get(ApiKey.secret_hash == digest)
    except peewee.DoesNotExist:
        rotated = ApiKey.select().where(ApiKey.previous_hash == digest).exists()
        return TokenCheck(None, "revoked" if rotated else "unknown")
    now = utcnow()
    if key.revoked_at is not None:
        return TokenCheck(None, "revoked")
    if key.expires_at is not None and key.expires_at <= now:
        return TokenCheck(None, "expired")
    scopes = frozenset(key.scopes or [])
    key_sites = None if key.sites is None else frozenset(key.sites)
    if key.kind == "service":
        grants: tuple[Grant, ...] = (Grant(scopes, key_sites),)
    else:
        owner = User.get_or_none(User.id == key.user_id)
        if owner is None or owner.disabled:
            return TokenCheck(None, "revoked")
        grants = tuple(Grant(g.permissions & scopes, intersect_sites(g.sites, key_sites)) for g in user_grants(owner))
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_AFTER:
        ApiKey.update(last_used_at=now).where(ApiKey.id == key.id).execute()
    principal = Principal(
        "key",
        key.id,
        key.name,
        tuple(g for g in grants if g.permissions),
        user_id=key.user_id,
        key_scopes=tuple(sorted_permissions(scopes)),
    )
    return TokenCheck(principal)
