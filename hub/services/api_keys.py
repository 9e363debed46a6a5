"""API keys: user keys (a user's access, narrowed to scopes) and service keys (only their scopes).

Deny by default: a key can do exactly what its `scopes` list names, on its `sites`, and never
more than whoever made it (a user, or a key holding `auth:keys`) holds at creation and at each
authentication. Revoking a key revokes the keys it made. The raw secret is shown once; only its
hash and a prefix are kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.permissions import KEY_MANAGEMENT, KEY_ONLY, KEY_SCOPES, sorted_permissions
from hark_fleet.hub.auth.principal import Grant, Principal, Sites, intersect_sites
from hark_fleet.hub.auth.tokens import new_secret, secret_hash
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ApiKey, User, database_proxy
from hark_fleet.hub.db.optional_writes import write_if_room
from hark_fleet.hub.errors import Forbidden, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.auth import TokenCheck
from hark_fleet.hub.services.grants import hidden_for_user_id, user_grants
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.users import check_sites

KEY_PREFIX = "hkk"
KINDS = ("user", "service")
TOUCH_AFTER = timedelta(seconds=60)
MAX_CHAIN = 16  # keys made by keys made by keys...: deeper chains are refused


def key_to_api(key: ApiKey) -> dict[str, Any]:
    now = utcnow()
    status = "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "active"
    return {
        "id": key.id,
        "name": key.name,
        "kind": key.kind,
        "user_id": key.user_id,
        "parent_key_id": key.parent_key_id,
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


def may_manage_keys(caller: Principal) -> bool:
    """A login session may manage its keys; an API key only with the auth:keys scope; a node never."""
    return caller.kind == "user" or (caller.kind == "key" and caller.can(KEY_MANAGEMENT))


def intersect_grants(a: tuple[Grant, ...], b: tuple[Grant, ...]) -> tuple[Grant, ...]:
    """What both hold: each permission on the sites where both hold it."""
    both = (Grant(x.permissions & y.permissions, intersect_sites(x.sites, y.sites)) for x in a for y in b)
    return tuple(g for g in both if g.permissions)


def _giveable(caller: Principal) -> frozenset[str]:
    """The scopes the caller may put on a key: what it holds (a session also holds key management)."""
    return caller.permissions | KEY_ONLY if caller.kind == "user" else caller.permissions


def _sites_held(caller: Principal, scopes: list[str]) -> Sites:
    """Every site where the caller holds one of `scopes` (None: every site)."""
    held: set[str] = set()
    for permission in scopes:
        if permission in KEY_ONLY:
            continue  # managing keys is hub-wide
        sites = caller.scope(permission).sites
        if sites is None:
            return None
        held |= sites
    return frozenset(held)


def _refuse(actor: Actor, caller: Principal, message: str, required: list[str], **extra: Any) -> Forbidden:
    """Audit a refused creation and return the error to raise."""
    record(actor, "api_key.create", outcome="failure", reason=message)
    if caller.kind == "key":
        return Forbidden(message, code="insufficient_scope", required=required, current=list(caller.key_scopes or ()), **extra)
    return Forbidden(message, required=required, **extra)


def _within_caller(actor: Actor, caller: Principal, kind: str, scopes: list[str], sites: list[str] | None) -> list[str] | None:
    """The key's sites once checked against the caller's: scopes and sites must be a subset of what it holds."""
    beyond = sorted_permissions(set(scopes) - _giveable(caller))
    if beyond:
        raise _refuse(actor, caller, f"A key cannot hold permissions its creator lacks: {', '.join(beyond)}.", beyond)
    if kind == "user" and caller.user_id is None:
        raise _refuse(actor, caller, "A user key is made by a user, or by one of that user's keys.", scopes)
    if kind == "service" and not caller.unrestricted_admin:
        raise _refuse(actor, caller, "Service keys are made by admins with auth:manage on every site.", ["auth:manage"])
    held = _sites_held(caller, scopes)
    if sites is None:
        return None if held is None else sorted(held)
    outside = [] if held is None else sorted(set(sites) - held)
    if outside:
        lacking = sorted_permissions(p for p in scopes if p not in KEY_ONLY and caller.scope(p).sites is not None)
        message = f"A key cannot reach sites its creator does not have: {', '.join(outside)}."
        raise _refuse(actor, caller, message, lacking, sites=outside)
    return sites


def _new_secret() -> tuple[str, str, str]:
    secret = new_secret(KEY_PREFIX)
    return secret, secret[:12], secret_hash(secret)


def create_key(
    actor: Actor, caller: Principal, name: str, kind: str, scopes: list[str], sites: list[str] | None, expires_at: datetime | None
) -> tuple[dict[str, Any], str]:
    """Make a key within what the caller holds; return it and its secret (shown this once)."""
    problems: dict[str, str] = {}
    if not 1 <= len(name.strip()) <= 150:
        problems["name"] = "1-150 characters"
    if kind not in KINDS:
        problems["kind"] = "must be user or service"
    unknown = sorted(set(scopes) - set(KEY_SCOPES))
    if not scopes:
        problems["scopes"] = "name at least one permission (keys are deny-by-default)"
    elif unknown:
        problems["scopes"] = f"not permissions a key can hold: {', '.join(unknown)}"
    if expires_at is not None and expires_at <= utcnow():
        problems["expires_at"] = "must be in the future"
    parent = ApiKey.get_or_none(ApiKey.id == caller.id) if caller.kind == "key" else None
    if parent is not None and parent.expires_at is not None:
        if expires_at is None:
            expires_at = parent.expires_at  # a key does not outlive the key that made it
        elif expires_at > parent.expires_at:
            problems["expires_at"] = f"must not be after the creating key's expiry, {iso(parent.expires_at)}"
    if problems:
        raise InvalidRequest("The key cannot be created.", fields=problems)
    if not may_manage_keys(caller):
        raise _refuse(actor, caller, f"Making keys with a key needs the scope {KEY_MANAGEMENT}.", [KEY_MANAGEMENT])
    sites = _within_caller(actor, caller, kind, scopes, check_sites(sites))
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
            created_by=caller.user_id or (parent.created_by if parent is not None else None),
            parent_key_id=parent.id if parent is not None else None,
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


def made_by(key_id: str) -> list[ApiKey]:
    """The keys a key made, and the keys those made, and so on."""
    found: list[ApiKey] = []
    frontier = [key_id]
    for _ in range(MAX_CHAIN):
        if not frontier:
            break
        children = list(ApiKey.select().where(ApiKey.parent_key_id.in_(frontier)).order_by(ApiKey.id))
        found += children
        frontier = [k.id for k in children]
    return found


def key_tree(key_id: str) -> list[str]:
    """A key's id and the ids of every key it made."""
    return [key_id] + [k.id for k in made_by(key_id)]


def visible_key(key_id: str, caller: Principal) -> ApiKey:
    """A key the caller may manage: any with auth:manage everywhere, else a session's own user keys, or a key's own tree."""
    key = ApiKey.get_or_none(ApiKey.id == key_id)
    if caller.unrestricted_admin:
        allowed = True
    elif caller.kind == "key":
        allowed = key_id in key_tree(caller.id)
    else:
        allowed = key is not None and key.kind == "user" and key.user_id == caller.user_id
    if key is None or not allowed or not may_manage_keys(caller):
        raise NotFound(f"No API key {key_id}.")
    return key


def revoke_key(actor: Actor, caller: Principal, key_id: str) -> None:
    """Revoke a key and every key it made (each revocation audited)."""
    key = visible_key(key_id, caller)
    with database_proxy.atomic():
        _revoke(actor, key, None)
        for made in made_by(key.id):
            if made.revoked_at is None:
                _revoke(actor, made, f"the key {key.id} that made it (directly or not) was revoked")


def _revoke(actor: Actor, key: ApiKey, reason: str | None) -> None:
    before = key_to_api(key)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.save()
    record(actor, "api_key.revoke", target=("api_key", key.id), before=before, after=key_to_api(key), reason=reason)


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


def _holds_now(key: ApiKey, now: datetime, depth: int = 0) -> tuple[Grant, ...] | str:
    """What a key holds now: its scopes on its sites, within what its creator holds now; or why it holds nothing."""
    if key.revoked_at is not None or depth > MAX_CHAIN:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    scopes = frozenset(key.scopes or [])
    key_sites = None if key.sites is None else frozenset(key.sites)
    own = (Grant(scopes - KEY_ONLY, key_sites), Grant(scopes & KEY_ONLY))
    creator = _creator_holds_now(key, now, depth)
    if isinstance(creator, str):
        return creator
    return own if creator is None else intersect_grants(own, creator)


def _creator_holds_now(key: ApiKey, now: datetime, depth: int) -> tuple[Grant, ...] | str | None:
    """What the key's maker holds now: its parent key, else its user (None: an old service key with no maker known)."""
    if key.parent_key_id is not None:
        parent = ApiKey.get_or_none(ApiKey.id == key.parent_key_id)
        return "revoked" if parent is None else _holds_now(parent, now, depth + 1)
    user_id = key.user_id if key.kind == "user" else key.created_by
    if user_id is None:
        return None
    user = User.get_or_none(User.id == user_id)
    if user is None or user.disabled:
        return "revoked"
    return (*user_grants(user), Grant(KEY_ONLY))  # a user's session may manage keys


def authenticate_key(secret: str) -> TokenCheck:
    """Resolve a key secret to a principal holding the key's scopes and sites within what its maker holds now."""
    digest = secret_hash(secret)
    try:
        key = ApiKey.get(ApiKey.secret_hash == digest)
    except peewee.DoesNotExist:
        rotated = ApiKey.select().where(ApiKey.previous_hash == digest).exists()
        return TokenCheck(None, "revoked" if rotated else "unknown")
    now = utcnow()
    grants = _holds_now(key, now)
    if isinstance(grants, str):
        return TokenCheck(None, grants)
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_AFTER:
        write_if_room(ApiKey.update(last_used_at=now).where(ApiKey.id == key.id))
    principal = Principal(
        "key",
        key.id,
        key.name,
        tuple(g for g in grants if g.permissions),
        user_id=key.user_id,
        key_scopes=tuple(sorted_permissions(key.scopes or [])),
        hidden=hidden_for_user_id(key.user_id if key.kind == "user" else key.created_by),  # what its user sees
    )
    return TokenCheck(principal)
