"""Notification channels (issue 21): where notifications go, who may see and change them, and their tests.

A channel is `config` (shown) and secrets (write-only), checked per kind by `hub.notify.kinds`, and a
`subscription` (what it is told, checked by `hub.notify.subscriptions`). Secrets are sealed with the hub's
secret box bound to `notification_channel:<id>`; the API and the audit log only ever say which are set
(`secrets_set`). A webhook's signing secret is made by the hub on create and on every `replace_config`, and
shown once in that answer. Config and secrets change only together, whole (`replace_config`).

Scope is the channel's `site`: a site-limited caller sees and changes only its sites' channels (others are
404) and must give one of its sites; a channel without a site is hub-wide, for unlimited callers only.
Deleting a channel drops its unsent (queued, retrying) notifications and its storm-control state; what was
delivered stays as history.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import peewee
from hark_fleet.hub.auth.principal import ALL_SITES, Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import (
    Notification,
    NotificationChannel,
    NotificationDelivery,
    NotificationGate,
    Site,
    database_proxy,
)
from hark_fleet.hub.errors import Conflict, InvalidRequest
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.notify import kinds, subscriptions
from hark_fleet.hub.notify.signing import new_signing_secret
from hark_fleet.hub.secret_box import SecretBox
from hark_fleet.hub.services import notify_settings, query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, get_scoped, one_of
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged

if TYPE_CHECKING:
    from hark_fleet.hub.notify.send import ChannelSpec

READ = "notify:read"
MANAGE = "notify:manage"
MAX_NAME = 100
MAX_DESCRIPTION = 500
UNSENT = ("queued", "retrying")
INVALID = "The notification channel is invalid."
PUT_CONFIG = "config and secrets change together with PUT /api/v1/notification-channels/{id}/config"


# --- shapes --------------------------------------------------------------------------------------


def bound_to(channel_id: str) -> str:
    return f"notification_channel:{channel_id}"


def channel_to_api(c: NotificationChannel) -> dict[str, Any]:
    """A channel as the API shows it: never a secret, only which are set."""
    secret_names = sorted(c.secret_names or [])
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "site": c.site,
        "enabled": bool(c.enabled),
        "description": c.description,
        "config": dict(c.config or {}),
        "secrets_set": secret_names,
        "target": kinds.target(c.kind, dict(c.config or {}), secret_names),
        "subscription": dict(c.subscription or {}),
        "last_test": c.last_test,
        "last_delivery_at": iso(c.last_delivery_at),
        "created_by": c.created_by or {},
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "version": c.version,
    }


CHANNEL_LIST = ListSpec(
    model=NotificationChannel,
    serialize=channel_to_api,
    filters=(
        Filter("kind", NotificationChannel.kind, one_of(tuple(kinds.KINDS))),
        Filter("enabled", NotificationChannel.enabled, query.boolean),
        Filter("site", NotificationChannel.site),
        Filter("name", NotificationChannel.name, facet=False),
    ),
    search=(NotificationChannel.name, NotificationChannel.description),
    time_field=NotificationChannel.created_at,
    site_field=NotificationChannel.site,
    export_columns=(
        "id",
        "name",
        "kind",
        "site",
        "enabled",
        "description",
        "target",
        "secrets_set",
        "subscription",
        "last_test",
        "last_delivery_at",
        "created_at",
        "updated_at",
        "version",
    ),
)


def get_channel(scope: SiteScope, channel_id: str) -> NotificationChannel:
    """The channel if it is inside `scope` (404 otherwise, as if it did not exist)."""
    channel: NotificationChannel = get_scoped(NotificationChannel, channel_id, NotificationChannel.site, scope)
    return channel


def _saved_secrets(channel: NotificationChannel, box: SecretBox) -> dict[str, str]:
    return dict(box.unseal(channel.sealed_secrets, bound_to(channel.id)) or {}) if channel.sealed_secrets else {}


def load_channel(channel_id: str, box: SecretBox) -> ChannelSpec:
    """The channel as the sender needs it, its secrets unsealed (NotFound when it is gone)."""
    from hark_fleet.hub.notify.send import ChannelSpec

    channel = get_channel(ALL_SITES, channel_id)
    return ChannelSpec(
        id=channel.id,
        name=channel.name,
        kind=channel.kind,
        config=dict(channel.config or {}),
        secrets=_saved_secrets(channel, box),
    )


def _state(allowed: bool, reason: str | None) -> dict[str, Any]:
    return {"allowed": allowed, "reason": None if allowed else reason}


def channel_detail(scope: SiteScope, channel_id: str, principal: Principal | None) -> dict[str, Any]:
    """The channel and what the caller may do to it now."""
    channel = get_channel(scope, channel_id)
    may = principal is not None and principal.can(MANAGE) and principal.scope(MANAGE).allows(channel.site)
    denied = "needs notify:manage on this channel's site" if channel.site else "needs notify:manage on every site"
    return {
        **channel_to_api(channel),
        "actions": {
            "update": _state(may, denied),
            "config": _state(may, denied),
            "test": _state(may, denied),
            "enable": _state(may and not channel.enabled, denied if not may else "the channel is enabled"),
            "disable": _state(may and bool(channel.enabled), denied if not may else "the channel is disabled"),
            "delete": _state(may, denied),
        },
    }


# --- validation ----------------------------------------------------------------------------------


def _merge(problems: dict[str, str], err: InvalidRequest) -> None:
    fields = err.extra.get("fields") or {}
    problems.update(fields if fields else {"body": err.message})


def _check_common(fields: Mapping[str, Any], problems: dict[str, str]) -> None:
    if "name" in fields and (why := text_problem(fields["name"], MAX_NAME)) is not None:
        problems["name"] = why
    if "description" in fields and (not isinstance(fields["description"], str) or len(fields["description"]) > MAX_DESCRIPTION):
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    if "enabled" in fields and not isinstance(fields["enabled"], bool):
        problems["enabled"] = "true or false"


def _check_site(site: Any, scope: SiteScope, problems: dict[str, str]) -> None:
    """A channel's site: a site inside the caller's scope, or None (hub-wide) for an unlimited caller."""
    if site is None:
        if scope.sites is not None:
            problems["site"] = "name one of your sites (a channel without a site is hub-wide)"
        return
    if not isinstance(site, str) or not scope.allows(site) or Site.get_or_none(Site.id == site) is None:
        problems["site"] = f"no site {site}"


def _check_subscription(value: Any, site: str | None, problems: dict[str, str]) -> dict[str, Any]:
    try:
        return dict(subscriptions.check(value, site=site))
    except InvalidRequest as err:
        _merge(problems, err)
        return {}


def _generated(kind: str) -> tuple[str, ...]:
    return tuple(kinds.GENERATED_SECRETS.get(kind, ()))


def _check_kind(kind: str, config: Any, secrets: Any, problems: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The kind's config (defaults filled) and caller-given secrets; a generated secret given by the caller is a problem."""
    try:
        checked_config, checked_secrets = kinds.check(kind, config, secrets)
    except InvalidRequest as err:
        _merge(problems, err)
        return {}, {}
    return dict(checked_config), dict(checked_secrets)


def _raise(problems: dict[str, str]) -> None:
    if problems:
        raise InvalidRequest(INVALID, fields=problems)


def check_new(scope: SiteScope, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A whole new channel: its fields (without secrets) and its caller-given secrets; every problem in one 400."""
    problems: dict[str, str] = {}
    fields: dict[str, Any] = {
        "name": body.get("name"),
        "kind": body.get("kind"),
        "site": body.get("site"),
        "description": body.get("description", ""),
        "enabled": body.get("enabled", True),
    }
    if fields["name"] is None:
        problems["name"] = "required"
    _check_common({k: v for k, v in fields.items() if k != "name" or v is not None}, problems)
    _check_site(fields["site"], scope, problems)
    sub = body.get("subscription")
    fields["subscription"] = _check_subscription(sub, fields["site"] if "site" not in problems else None, problems)
    secrets: dict[str, str] = {}
    if fields["kind"] not in kinds.KINDS:
        problems["kind"] = f"one of {', '.join(kinds.KINDS)}"
    else:
        fields["config"], secrets = _check_kind(fields["kind"], body.get("config") or {}, body.get("secrets") or {}, problems)
    _raise(problems)
    return fields, secrets


def _with_generated(kind: str, secrets: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The secrets to seal (the caller's plus fresh generated ones) and the generated ones to show once."""
    shown = {name: new_signing_secret() for name in _generated(kind)}
    return {**secrets, **shown}, shown


# --- changes -------------------------------------------------------------------------------------


def _name_taken(name: str, except_id: str | None = None) -> bool:
    rows = NotificationChannel.select().where(NotificationChannel.name == name)
    if except_id is not None:
        rows = rows.where(NotificationChannel.id != except_id)
    return bool(rows.exists())


def _taken(name: Any) -> Conflict:
    return Conflict(f"A notification channel named {name} exists.")


def _audited(channel: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a channel: everything shown (never a secret, only `secrets_set`)."""
    return {k: v for k, v in channel.items() if k not in ("last_test", "last_delivery_at")}


def create_channel(actor: Actor, box: SecretBox, scope: SiteScope, body: Mapping[str, Any]) -> dict[str, Any]:
    """A new channel, secrets sealed; a webhook's signing secret made and shown once. 400 with every problem, 409 name."""
    fields, given = check_new(scope, body)
    if _name_taken(fields["name"]):
        raise _taken(fields["name"])
    secrets, shown = _with_generated(fields["kind"], given)
    channel_id = new_id("nch")
    now = utcnow()
    try:
        with database_proxy.atomic():
            channel = NotificationChannel.create(
                id=channel_id,
                **fields,
                sealed_secrets=box.seal(secrets, bound_to(channel_id)) if secrets else None,
                secret_names=sorted(secrets),
                last_test=None,
                version=1,
                created_by={"type": actor.type, "id": actor.id, "name": actor.name},
                created_at=now,
                updated_at=now,
            )
            after = channel_to_api(channel)
            record(
                actor,
                "notification_channel.create",
                permission=MANAGE,
                target=("notification_channel", channel_id),
                after=_audited(after),
            )
    except peewee.IntegrityError as err:
        raise _taken(fields["name"]) from err
    return {**after, **shown}


def update_channel(actor: Actor, scope: SiteScope, channel_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change name, description, enabled, site, subscription; `version` guards. Config and secrets: `replace_config`."""
    channel = get_channel(scope, channel_id)
    problems: dict[str, str] = {}
    for name in ("config", "secrets"):
        if name in changes:
            problems[name] = PUT_CONFIG.replace("{id}", channel.id)
    if "kind" in changes and changes["kind"] != channel.kind:
        problems["kind"] = "a channel keeps its kind: make a new channel instead"
    _raise(problems)
    if "version" in changes and changes["version"] != channel.version:
        raise Conflict(f"The notification channel changed meanwhile (version {channel.version}); read it again.")
    before = channel_to_api(channel)
    fields = {k: changes[k] for k in ("name", "description", "enabled", "site") if k in changes}
    _check_common(fields, problems)
    site = fields.get("site", channel.site)
    if "site" in fields and fields["site"] != channel.site:
        _check_site(fields["site"], scope, problems)
    if "subscription" in changes or ("site" in fields and fields["site"] != channel.site and "site" not in problems):
        value = changes["subscription"] if "subscription" in changes else channel.subscription
        fields["subscription"] = _check_subscription(value, site if "site" not in problems else channel.site, problems)
    _raise(problems)
    if "name" in fields and _name_taken(fields["name"], channel.id):
        raise _taken(fields["name"])
    if all(before.get(k) == v for k, v in fields.items()):
        return before
    try:
        with database_proxy.atomic():
            update_if_unchanged(NotificationChannel, channel, fields, "notification channel")
            after = channel_to_api(get_channel(scope, channel.id))
            record(
                actor,
                "notification_channel.update",
                permission=MANAGE,
                target=("notification_channel", channel.id),
                before=_audited(before),
                after=_audited(after),
            )
    except peewee.IntegrityError as err:
        raise _taken(fields.get("name")) from err
    return after


def replace_config(actor: Actor, box: SecretBox, scope: SiteScope, channel_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Replace config and secrets whole (PUT .../config); a webhook gets a new signing secret, shown once."""
    channel = get_channel(scope, channel_id)
    problems: dict[str, str] = {}
    config, given = _check_kind(channel.kind, body.get("config") or {}, body.get("secrets") or {}, problems)
    _raise(problems)
    secrets, shown = _with_generated(channel.kind, given)
    before = channel_to_api(channel)
    fields = {
        "config": config,
        "sealed_secrets": box.seal(secrets, bound_to(channel.id)) if secrets else None,
        "secret_names": sorted(secrets),
        "last_test": None,
    }
    with database_proxy.atomic():
        update_if_unchanged(NotificationChannel, channel, fields, "notification channel")
        after = channel_to_api(get_channel(scope, channel.id))
        keep = ("config", "secrets_set", "target", "version")
        record(
            actor,
            "notification_channel.config",
            permission=MANAGE,
            target=("notification_channel", channel.id),
            before={k: before[k] for k in keep},
            after={k: after[k] for k in keep},
        )
    return {**after, **shown}


def delete_channel(actor: Actor, scope: SiteScope, channel_id: str) -> None:
    """Delete a channel with its unsent notifications and storm-control state; delivered history stays."""
    channel = get_channel(scope, channel_id)
    before = channel_to_api(channel)
    with database_proxy.atomic():
        dropped = Notification.delete().where(Notification.channel_id == channel.id, Notification.state.in_(UNSENT)).execute()
        NotificationGate.delete().where(NotificationGate.channel_id == channel.id).execute()
        NotificationChannel.delete().where(NotificationChannel.id == channel.id).execute()
        record(
            actor,
            "notification_channel.delete",
            permission=MANAGE,
            target=("notification_channel", channel.id),
            before={**_audited(before), "unsent_dropped": dropped},
        )


# --- tests ---------------------------------------------------------------------------------------


def allow_private_destinations() -> bool:
    """Whether channels may point at private and loopback addresses (the admin's notify setting)."""
    return notify_settings.load().allow_private_destinations


def unsaved_spec(scope: SiteScope, box: SecretBox, body: Mapping[str, Any]) -> ChannelSpec:
    """An unsaved configuration to test (400 with every problem). With `channel_id` (a saved channel in scope of the
    same kind) the secrets the body leaves out are that channel's, and a webhook signs with its saved secret."""
    from hark_fleet.hub.notify.send import ChannelSpec

    problems: dict[str, str] = {}
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in kinds.KINDS:
        raise InvalidRequest(INVALID, fields={"kind": f"one of {', '.join(kinds.KINDS)}"})
    saved: dict[str, str] = {}
    channel_id = body.get("channel_id")
    if channel_id:
        channel = get_channel(scope, channel_id)
        if channel.kind != kind:
            _raise({"channel_id": f"is a {channel.kind} channel"})
        saved = _saved_secrets(channel, box)
    given = body.get("secrets") or {}
    if isinstance(given, dict):  # the saved secrets fill in those left out; a generated one is never given
        given = {**{k: v for k, v in saved.items() if k not in _generated(kind)}, **given}
    config, secrets = _check_kind(kind, body.get("config") or {}, given, problems)
    _raise(problems)
    generated = {name: saved.get(name) or new_signing_secret() for name in _generated(kind)}
    return ChannelSpec(
        id=None, name=str(body.get("name") or "unsaved"), kind=kind, config=config, secrets={**secrets, **generated}
    )


def saved_spec(scope: SiteScope, box: SecretBox, channel_id: str) -> ChannelSpec:
    """A saved channel in scope, as the sender needs it."""
    get_channel(scope, channel_id)
    return load_channel(channel_id, box)


def test_result(attempt: Any) -> dict[str, Any]:
    """What a test answers: whether the provider took the message, its status, how long it took, and what it said."""
    status = attempt.status
    ok = status is not None and 200 <= status < 300 and not attempt.refused and not attempt.error
    message = attempt.message or attempt.error or ("delivered" if ok else "no answer")
    if not ok and attempt.error and attempt.error not in message:
        message = f"{message}: {attempt.error}"
    return {"ok": ok, "status_code": status, "latency_ms": round(float(attempt.latency_ms), 1), "message": message[:500]}


def audit_unsaved_test(actor: Actor, kind: str, channel_id: str | None, answer: Mapping[str, Any]) -> None:
    record(
        actor,
        "notification_channel.test_unsaved",
        permission=MANAGE,
        target=("notification_channel", channel_id),
        after={"kind": kind, "saved": False, "ok": answer["ok"], "status_code": answer["status_code"]},
    )


def store_test(actor: Actor, scope: SiteScope, channel_id: str, answer: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """Keep a saved channel's test as `last_test` (not a change: the version stays), log it as a test delivery, audit it."""
    channel = get_channel(scope, channel_id)
    last = {**answer, "at": iso(at)}
    with database_proxy.atomic():
        NotificationChannel.update(last_test=last).where(NotificationChannel.id == channel.id).execute()
        NotificationDelivery.create(
            id=new_id("ndl"),
            channel_id=channel.id,
            notification_id=None,
            attempt=1,
            test=True,
            at=at,
            outcome="delivered" if answer["ok"] else "failed",
            latency_ms=answer["latency_ms"],
            response_code=answer["status_code"],
            response_message=answer["message"],
            site=channel.site,
        )
        record(
            actor,
            "notification_channel.test",
            permission=MANAGE,
            target=("notification_channel", channel.id),
            after={"kind": channel.kind, "saved": True, "ok": answer["ok"], "status_code": answer["status_code"]},
        )
    return last
