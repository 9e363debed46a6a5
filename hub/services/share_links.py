"""Share links (issue 23): a recording played, and downloaded when allowed, by whoever holds the link's token.

The token (`secrets.token_urlsafe(32)`) is shown once; only its SHA-256 is stored, with its first characters
to tell links apart. An optional password is an argon2id hash. A link is `active` until revoked, past
`expires_at` or used up (`uses` reached `max_uses`); revoked links are kept for the audit. Each open of the
public page that shows the player counts one use and is audited (`share_link.access`, with the client's
address); the page hands the visitor a grant cookie, sealed with the hub's secret box, short-lived and
bound to the link, that the audio and download routes need. Wrong passwords count towards lockouts as
failed logins do (`login_throttle`): per link and per client address.

Audit entries target the shared recording, so they carry its site (the link itself is in `after`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.auth.tokens import secret_hash
from hark_fleet.hub.clock import iso, parse_iso, utcnow
from hark_fleet.hub.db.models import Recording, ShareLink, database_proxy
from hark_fleet.hub.errors import ApiError, Conflict, InvalidRequest, NotFound, RateLimited
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.secret_box import SecretBox, SecretBoxError
from hark_fleet.hub.services import listen_settings, login_throttle, query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import (
    Filter,
    ListRequest,
    ListSpec,
    build_query,
    encode_cursor,
    get_scoped,
    one_of,
)
from hark_fleet.hub.services.recordings_library import get_recording

PERMISSION = "recording:share"
STATES = ("active", "expired", "revoked", "used_up")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_USES = 100_000
MAX_LABEL = 200
PREFIX_CHARS = 8
GRANT_S = 2 * 3600  # how long an open's grant lets its visitor fetch the audio
LINK_THRESHOLD = login_throttle.USER_THRESHOLD  # wrong passwords for one link before it locks
ADDRESS_THRESHOLD = login_throttle.ADDRESS_THRESHOLD  # wrong passwords from one address, any link

Page = tuple[list[dict[str, Any]], str | None]


class LinkGone(ApiError):
    """410: the link exists but no longer plays (expired, revoked, used up, or its recording is gone)."""

    status = 410
    code = "link_gone"


class WrongPassword(ApiError):
    status = 403
    code = "wrong_password"


def link_state(link: ShareLink, now: datetime | None = None) -> str:
    now = now or utcnow()
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    if link.max_uses is not None and link.uses >= link.max_uses:
        return "used_up"
    return "active"


def _state_clause(state: str, now: datetime) -> Any:
    revoked = ShareLink.revoked_at.is_null(False)
    expired = ShareLink.expires_at <= now
    used_up = ShareLink.max_uses.is_null(False) & (ShareLink.uses >= ShareLink.max_uses)
    if state == "revoked":
        return revoked
    if state == "expired":
        return ~revoked & expired
    if state == "used_up":
        return ~revoked & ~expired & used_up
    return ~revoked & ~expired & ~used_up


def link_to_api(link: ShareLink, recording_name: str | None = None) -> dict[str, Any]:
    state = link_state(link)
    revoke = {"allowed": True, "reason": None} if state != "revoked" else {"allowed": False, "reason": "already revoked"}
    return {
        "id": link.id,
        "recording_id": link.recording_id,
        "recording_name": recording_name,
        "site": link.site,
        "label": link.label,
        "token_prefix": link.token_prefix,
        "has_password": link.password_hash is not None,
        "expires_at": iso(link.expires_at),
        "max_uses": link.max_uses,
        "uses": link.uses,
        "allow_download": bool(link.allow_download),
        "state": state,
        "created_by": link.created_by,
        "created_at": iso(link.created_at),
        "revoked_at": iso(link.revoked_at),
        "revoked_by": link.revoked_by,
        "last_used_at": iso(link.last_used_at),
        "actions": {"revoke": revoke},
    }


SHARE_LINK_LIST = ListSpec(
    model=ShareLink,
    serialize=link_to_api,  # recording_name filled in per page by `with_recording_names`
    filters=(
        Filter("state", ShareLink.id, one_of(STATES), facet=False),  # computed: applied by `_query`, counted by `facets`
        Filter("recording_id", ShareLink.recording_id),
        Filter("site", ShareLink.site),
        Filter("allow_download", ShareLink.allow_download, query.boolean),
        Filter("created_by_id", ShareLink.created_by_id),
    ),
    search=(ShareLink.label, ShareLink.token_prefix, ShareLink.recording_id),
    time_field=ShareLink.created_at,
    site_field=ShareLink.site,
    descending=True,
    export_columns=(
        "id",
        "recording_id",
        "recording_name",
        "site",
        "label",
        "token_prefix",
        "has_password",
        "expires_at",
        "max_uses",
        "uses",
        "allow_download",
        "state",
        "created_by",
        "created_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    ),
)


# -- lists ------------------------------------------------------------------------------------


def _query(request: ListRequest, scope: SiteScope) -> peewee.ModelSelect:
    states = request.filters.get("state")
    plain = dataclasses.replace(request, filters={k: v for k, v in request.filters.items() if k != "state"})
    query_ = build_query(SHARE_LINK_LIST, plain, scope)
    if states:
        now = utcnow()
        clauses = [_state_clause(s, now) for s in dict.fromkeys(states)]
        condition = clauses[0]
        for clause in clauses[1:]:
            condition = condition | clause
        query_ = query_.where(condition)
    return query_


def with_recording_names(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = sorted({item["recording_id"] for item in items})
    names = {}
    if wanted:
        names = {r.id: r.name for r in Recording.select(Recording.id, Recording.name).where(Recording.id.in_(wanted))}
    for item in items:
        item["recording_name"] = names.get(item["recording_id"])
    return items


def link_page(request: ListRequest, scope: SiteScope) -> Page:
    """One page of share links, newest first."""
    query_ = _query(request, scope)
    if request.after is not None:
        query_ = query_.where(ShareLink.id < request.after)
    rows: list[Any] = list(query_.order_by(ShareLink.id.desc()).limit(request.limit + 1))
    next_cursor = encode_cursor(rows[request.limit - 1].id) if len(rows) > request.limit else None
    return with_recording_names([link_to_api(r) for r in rows[: request.limit]]), next_cursor


def recording_links(scope: SiteScope, recording_id: str, request: ListRequest) -> Page:
    """A recording's share links (404 when the recording is outside the caller's sites)."""
    get_recording(scope, recording_id)
    request = dataclasses.replace(request, filters={**request.filters, "recording_id": (recording_id,)})
    return link_page(request, scope)


def export_batches(request: ListRequest, scope: SiteScope) -> Callable[[str | None], Page]:
    def batch(after: str | None) -> Page:
        return link_page(dataclasses.replace(request, after=after, limit=500), scope)

    def next_batch(after: str | None) -> Page:
        rows, cursor = batch(after)
        return rows, rows[-1]["id"] if cursor else None

    return next_batch


def facets(request: ListRequest, scope: SiteScope, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Value counts per facet (`state` counted from each link's computed state)."""
    known = ("state", "recording_id", "site", "allow_download", "created_by_id")
    chosen = [n for n in names if n] or list(known)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise InvalidRequest("Unknown facet.", fields={"fields": f"no facet named {', '.join(unknown)}"})
    rows: list[Any] = list(_query(request, scope))
    result: dict[str, list[dict[str, Any]]] = {}
    for name in dict.fromkeys(chosen):
        counts: dict[Any, int] = {}
        for row in rows:
            value = link_state(row) if name == "state" else getattr(row, name)
            counts[value] = counts.get(value, 0) + 1
        pairs = sorted(counts.items(), key=lambda p: (-p[1], "" if p[0] is None else str(p[0])))
        result[name] = [{"value": value, "count": n} for value, n in pairs]
    return result


def link_detail(scope: SiteScope, link_id: str) -> dict[str, Any]:
    link: ShareLink = get_scoped(ShareLink, link_id, ShareLink.site, scope)
    return with_recording_names([link_to_api(link)])[0]


# -- create and revoke ---------------------------------------------------------------------------


def check_password(password: str | None) -> None:
    """A share link's password: 8 to 1024 characters (checked before it is hashed)."""
    if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(
            "The password is too short or too long.", fields={"password": f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"}
        )


@dataclass(frozen=True, slots=True)
class NewLink:
    expires_at: str
    password_hash: str | None = None
    max_uses: int | None = None
    allow_download: bool = False
    label: str = ""


def create_link(actor: Actor, scope: SiteScope, recording_id: str, new: NewLink) -> tuple[dict[str, Any], str]:
    """Make a link to a completed, stored recording; the link and its token (shown once). Audited."""
    now = utcnow()
    problems: dict[str, str] = {}
    settings = listen_settings.load()
    expires_at = None
    try:
        expires_at = parse_iso(new.expires_at)
    except ValueError:
        problems["expires_at"] = "must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z"
    if expires_at is not None and expires_at <= now:
        problems["expires_at"] = "must be in the future"
    elif expires_at is not None and expires_at > now + timedelta(days=settings.share_link_max_days):
        problems["expires_at"] = f"at most {settings.share_link_max_days} days ahead (share_link_max_days)"
    if new.max_uses is not None and not 1 <= new.max_uses <= MAX_USES:
        problems["max_uses"] = f"1 to {MAX_USES}"
    label = new.label.strip()
    if len(label) > MAX_LABEL or not label.isprintable():
        problems["label"] = f"at most {MAX_LABEL} printable characters"
    with database_proxy.atomic():
        recording = get_recording(scope, recording_id)
        if problems:
            raise InvalidRequest("The share link is invalid.", fields=problems)
        if recording.status != "completed" or not recording.storage_key or recording.hub_evicted_at is not None:
            raise Conflict(
                f"Only a completed recording whose file the hub holds can be shared (this one is {recording.status}).",
                code="not_shareable",
            )
        token = secrets.token_urlsafe(32)
        link = ShareLink.create(
            id=new_id("shl"),
            recording_id=recording.id,
            site=recording.site,
            token_sha256=secret_hash(token),
            token_prefix=token[:PREFIX_CHARS],
            label=label,
            password_hash=new.password_hash,
            expires_at=expires_at,
            max_uses=new.max_uses,
            allow_download=new.allow_download,
            created_by={"type": actor.type, "id": actor.id, "name": actor.name},
            created_by_id=actor.id,
            created_at=now,
        )
        data = link_to_api(link, recording.name)
        record(actor, "share_link.create", permission=PERMISSION, target=("recording", recording.id), after=data)
    return data, token


def revoke_link(actor: Actor, scope: SiteScope, link_id: str) -> dict[str, Any]:
    """Revoke a link (kept, with who and when); revoking it again changes nothing. Audited."""
    with database_proxy.atomic():
        link: ShareLink = get_scoped(ShareLink, link_id, ShareLink.site, scope)
        before = link_to_api(link)
        if link.revoked_at is not None:
            return before
        ShareLink.update(revoked_at=utcnow(), revoked_by={"type": actor.type, "id": actor.id, "name": actor.name}).where(
            ShareLink.id == link.id
        ).execute()
        after = link_to_api(ShareLink.get_by_id(link.id))
        record(
            actor,
            "share_link.revoke",
            permission=PERMISSION,
            target=("recording", link.recording_id),
            before=before,
            after=after,
        )
    return after


# -- the public side: resolve, unlock, open ------------------------------------------------------

GONE_WORDS = {
    "expired": "This link has expired.",
    "revoked": "This link was revoked by the person who shared it.",
    "used_up": "This link has been used as many times as it allows.",
    "missing": "The recording behind this link is no longer available.",
}


@dataclass(frozen=True, slots=True)
class Shared:
    """A link resolved from its token, with what the public page shows of its recording."""

    link_id: str
    recording_id: str
    state: str
    has_password: bool
    password_hash: str | None
    allow_download: bool
    expires_at: datetime
    name: str
    duration_s: float | None
    format: str


def resolve(token: str) -> Shared:
    """The link `token` opens, whatever its state; NotFound for a token no link has."""
    link = ShareLink.get_or_none(ShareLink.token_sha256 == secret_hash(token))
    if link is None:
        raise NotFound("No share link has this address; check that it was copied whole.")
    recording = Recording.get_or_none(Recording.id == link.recording_id)
    state = link_state(link)
    if state == "active" and (recording is None or not recording.storage_key or recording.hub_evicted_at is not None):
        state = "missing"
    return Shared(
        link.id,
        link.recording_id,
        state,
        link.password_hash is not None,
        link.password_hash,
        bool(link.allow_download),
        link.expires_at,
        recording.name if recording is not None else "",
        recording.duration_s if recording is not None else None,
        recording.format if recording is not None else "",
    )


def usable(shared: Shared, *, after_open: bool = False) -> Shared:
    """`shared` if it plays; LinkGone saying why otherwise. A use-up link still plays for an open already granted."""
    if shared.state == "active" or (after_open and shared.state == "used_up"):
        return shared
    raise LinkGone(GONE_WORDS[shared.state], state=shared.state)


def link_key(link_id: str) -> str:
    return f"share:{link_id}"


def address_key(address: str | None) -> str:
    return f"share-ip:{address or 'unknown'}"


def check_unlock(token: str, address: str | None) -> Shared:
    """Before a password is checked: the link (it must play) unless its link or address is locked out (429)."""
    shared = usable(resolve(token))
    now = utcnow()
    for key in (link_key(shared.link_id), address_key(address)):
        wait = login_throttle.retry_after(login_throttle.load(key), now)
        if wait is not None:
            raise RateLimited(f"Too many wrong passwords; try again in {wait} s.", retry_after_s=wait)
    return shared


def finish_unlock(shared: Shared, ok: bool, address: str | None) -> None:
    """After a password was checked: a wrong one is audited and counts towards lockouts; a right one clears the link's."""
    actor = Actor("anonymous", None, None, address)
    now = utcnow()
    with database_proxy.atomic():
        if ok:
            login_throttle.clear(link_key(shared.link_id))
            return
        target = ("recording", shared.recording_id)
        record(actor, "share_link.password", target=target, outcome="failure", reason=f"wrong password for {shared.link_id}")
        for key, threshold in ((link_key(shared.link_id), LINK_THRESHOLD), (address_key(address), ADDRESS_THRESHOLD)):
            state, locked = login_throttle.after_failure(login_throttle.load(key), now, threshold)
            login_throttle.store(key, state)
            if locked:
                until = iso(state.locked_until)
                record(
                    actor,
                    "share_link.lockout",
                    target=target,
                    outcome="failure",
                    reason=f"{key}: {threshold} wrong passwords; locked until {until}",
                )
    raise WrongPassword("The password is wrong.")


def open_link(token: str, address: str | None, user_agent: str | None) -> Shared:
    """Count one use of an active link (never past `max_uses`) and audit the access; LinkGone when it no longer plays."""
    now = utcnow()
    with database_proxy.atomic():
        shared = usable(resolve(token))
        counted = (
            ShareLink.update(uses=ShareLink.uses + 1, last_used_at=now)
            .where(
                ShareLink.id == shared.link_id,
                ShareLink.revoked_at.is_null(),
                ShareLink.expires_at > now,
                ShareLink.max_uses.is_null() | (ShareLink.uses < ShareLink.max_uses),
            )
            .execute()
        )
        if not counted:
            usable(resolve(token))  # raced with another open, a revoke or the expiry: say which
        link = ShareLink.get_by_id(shared.link_id)
        record(
            Actor("anonymous", None, None, address),
            "share_link.access",
            target=("recording", shared.recording_id),
            after={
                "share_link_id": link.id,
                "uses": link.uses,
                "max_uses": link.max_uses,
                "at": iso(now),
                "client_address": address,
                "user_agent": (user_agent or "")[:200] or None,
            },
        )
    return shared


def audit_download(shared: Shared, address: str | None) -> None:
    record(
        Actor("anonymous", None, None, address),
        "share_link.download",
        target=("recording", shared.recording_id),
        after={"share_link_id": shared.link_id, "client_address": address},
    )


# -- grants: what an open hands its visitor --------------------------------------------------------


def _bound(link_id: str) -> str:
    return f"share_grant:{link_id}"


def make_grant(box: SecretBox, shared: Shared, kind: str) -> tuple[str, int]:
    """A sealed grant of `kind` for this link (cookie-safe text) and its lifetime in seconds (never past the link's expiry).

    `unlock`: the password was given (the page may show the player); `play`: the page was opened (a use
    counted), so the audio and download routes answer.
    """
    expiry_s = (shared.expires_at - utcnow()).total_seconds()
    lifetime = max(1, int(min(GRANT_S, expiry_s)))
    sealed = box.seal({"link": shared.link_id, "kind": kind, "until": time.time() + lifetime}, _bound(shared.link_id))
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("="), lifetime


def grant_valid(box: SecretBox, value: str | None, link_id: str, kinds: tuple[str, ...]) -> bool:
    """Whether `value` is an unexpired grant of one of `kinds` for this link, sealed by this hub."""
    if not value or len(value) > 1024:
        return False
    try:
        sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        grant = box.unseal(sealed, _bound(link_id))
    except (SecretBoxError, ValueError, TypeError, binascii.Error):
        return False
    if not isinstance(grant, dict) or grant.get("link") != link_id or grant.get("kind") not in kinds:
        return False
    until = grant.get("until")
    return isinstance(until, (int, float)) and until > time.time()
