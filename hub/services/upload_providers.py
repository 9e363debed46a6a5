"""Upload providers (settings, issue 20): where recordings go off-site — an S3-compatible bucket, an SFTP server, a directory.

A provider is `config` (shown) and secrets (write-only). Secrets are sealed with the hub's secret box
bound to `upload_provider:<id>`; the API, the audit log, the logs and error messages only ever say which
are set (`secrets_set`). They are replaced whole by `replace_credentials` (PUT .../credentials).
Every problem with a configuration is named in one 400 `fields` (`config.bucket`, `secrets.password`...).
A provider is deleted only when no policy names it and none of its uploads is in flight; its pending,
queued and failed items go with it, its synced items stay (they record where copies are).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import peewee
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import UploadItem, UploadPolicy, UploadProvider, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.offsite.base import KINDS, ProviderError, ProviderSpec, TestReport, TestStep
from hark_fleet.hub.offsite.registry import open_provider
from hark_fleet.hub.secret_box import SecretBox
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec, one_of
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged

MANAGE = "settings:manage"
MAX_NAME = 100
MAX_DESCRIPTION = 500
RATE_LIMIT_RANGE = (1024, 100_000_000_000)  # bytes/s: 1 KiB/s to 100 GB/s
CONCURRENCY_RANGE = (1, 16)
SSE_KINDS = ("AES256", "aws:kms")
SECRETS: dict[str, tuple[str, ...]] = {
    "s3": ("secret_access_key",),
    "sftp": ("private_key", "passphrase", "password"),
    "local": (),
}
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "s3": (
        "endpoint_url",
        "region",
        "bucket",
        "prefix",
        "path_style",
        "access_key_id",
        "sse",
        "sse_kms_key_id",
        "storage_class",
    ),
    "sftp": ("host", "port", "username", "known_host_key", "base_path"),
    "local": ("path",),
}
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {
        "endpoint_url": None,
        "region": "us-east-1",
        "prefix": "",
        "path_style": False,
        "sse": None,
        "sse_kms_key_id": None,
        "storage_class": None,
    },
    "sftp": {"port": 22},
    "local": {},
}
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,40}")
_STORAGE_CLASS = re.compile(r"[A-Z_]{1,40}")
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z0-9._@-][A-Za-z0-9._@\\-]{0,63}")


# --- shapes --------------------------------------------------------------------------------------


def provider_to_api(p: UploadProvider) -> dict[str, Any]:
    """A provider as the API shows it: never a secret, only which are set."""
    return {
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "enabled": bool(p.enabled),
        "description": p.description,
        "config": dict(p.config or {}),
        "secrets_set": sorted(p.secret_names or []),
        "rate_limit_bps": p.rate_limit_bps,
        "max_concurrency": p.max_concurrency,
        "last_test": p.last_test,
        "created_by": p.created_by or {},
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "version": p.version,
    }


PROVIDER_LIST = ListSpec(
    model=UploadProvider,
    serialize=provider_to_api,
    filters=(
        Filter("kind", UploadProvider.kind, one_of(KINDS)),
        Filter("enabled", UploadProvider.enabled, query.boolean),
        Filter("name", UploadProvider.name, facet=False),
    ),
    search=(UploadProvider.name, UploadProvider.description),
    time_field=UploadProvider.updated_at,
    export_columns=(
        "id",
        "name",
        "kind",
        "enabled",
        "description",
        "secrets_set",
        "rate_limit_bps",
        "max_concurrency",
        "created_at",
        "updated_at",
        "version",
    ),
)


def get_provider(provider_id: str) -> UploadProvider:
    provider = UploadProvider.get_or_none(UploadProvider.id == provider_id)
    if provider is None:
        raise NotFound(f"No upload provider {provider_id}.")
    return provider


def load_spec(provider_id: str, box: SecretBox) -> ProviderSpec:
    """The provider as the runner needs it, its secrets unsealed (NotFound when it is gone)."""
    provider = get_provider(provider_id)
    secrets = box.unseal(provider.sealed_secrets, bound_to(provider.id)) if provider.sealed_secrets else {}
    return ProviderSpec(
        id=provider.id,
        kind=provider.kind,
        config=dict(provider.config or {}),
        secrets=dict(secrets or {}),
        rate_limit_bps=provider.rate_limit_bps,
        max_concurrency=provider.max_concurrency,
    )


def bound_to(provider_id: str) -> str:
    return f"upload_provider:{provider_id}"


def _policies_using(provider_id: str) -> list[UploadPolicy]:
    return [
        p
        for p in UploadPolicy.select(UploadPolicy.id, UploadPolicy.name, UploadPolicy.provider_ids)
        if provider_id in (p.provider_ids or [])
    ]


def _uploading(provider_id: str) -> int:
    return int(UploadItem.select().where(UploadItem.provider_id == provider_id, UploadItem.state == "uploading").count())


def _delete_refusal(provider: UploadProvider) -> str | None:
    using = _policies_using(provider.id)
    if using:
        names = ", ".join(sorted(p.name for p in using))
        return f"upload policies use it ({names}): remove it from them first"
    uploading = _uploading(provider.id)
    if uploading:
        return f"{uploading} upload(s) to it are in progress: pause the runner or wait for them"
    return None


def provider_detail(provider_id: str) -> dict[str, Any]:
    """A provider, the policies that use it, and what may be done to it now."""
    provider = get_provider(provider_id)
    refusal = _delete_refusal(provider)
    using = _policies_using(provider.id)
    ok = {"allowed": True, "reason": None}
    return {
        **provider_to_api(provider),
        "policies": [{"id": p.id, "name": p.name} for p in sorted(using, key=lambda p: p.name)],
        "actions": {
            "update": ok,
            "credentials": ok
            if SECRETS[provider.kind]
            else {"allowed": False, "reason": "a directory provider has no credentials"},
            "test": ok,
            "delete": {"allowed": refusal is None, "reason": refusal},
        },
    }


# --- validation ----------------------------------------------------------------------------------


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_common(fields: Mapping[str, Any], problems: dict[str, str]) -> None:
    if "name" in fields and (why := text_problem(fields["name"], MAX_NAME)) is not None:
        problems["name"] = why
    if "description" in fields and (not isinstance(fields["description"], str) or len(fields["description"]) > MAX_DESCRIPTION):
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    rate = fields.get("rate_limit_bps")
    if rate is not None and not _int_in(rate, *RATE_LIMIT_RANGE):
        problems["rate_limit_bps"] = f"bytes per second from {RATE_LIMIT_RANGE[0]} to {RATE_LIMIT_RANGE[1]}, or null for no limit"
    if "max_concurrency" in fields and not _int_in(fields["max_concurrency"], *CONCURRENCY_RANGE):
        problems["max_concurrency"] = f"from {CONCURRENCY_RANGE[0]} to {CONCURRENCY_RANGE[1]}"


def normalize_config(kind: str, config: Mapping[str, Any], problems: dict[str, str]) -> dict[str, Any]:
    """The kind's config with defaults filled in, checked; problems go into `problems` as `config.<field>`."""
    allowed = CONFIG_FIELDS[kind]
    for name in config:
        if name not in allowed:
            problems[f"config.{name}"] = f"unknown field for a {kind} provider (known: {', '.join(allowed)})"
    merged = {**CONFIG_DEFAULTS[kind], **{k: v for k, v in config.items() if k in allowed}}
    check = {"s3": _check_s3, "sftp": _check_sftp, "local": _check_local}[kind]
    for name, why in check(merged).items():
        problems[f"config.{name}"] = why
    return merged


def _check_s3(c: dict[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    url = c.get("endpoint_url")
    if url is not None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
            or parts.password
        ):
            problems["endpoint_url"] = (
                "an http(s) URL such as https://s3.example.com (no credentials, query or fragment), or null for AWS"
            )
        else:
            try:
                _ = parts.port
            except ValueError:
                problems["endpoint_url"] = "the port must be from 1 to 65535"
    region = c.get("region")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        problems["region"] = "a region name such as us-east-1 (lowercase letters, digits, '-')"
    bucket = c.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        problems["bucket"] = "required"
    elif not _BUCKET.fullmatch(bucket) or ".." in bucket or _is_ip(bucket) or bucket.startswith("xn--"):
        problems["bucket"] = (
            "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, not an IP address"
        )
    prefix = c.get("prefix")
    if not isinstance(prefix, str) or len(prefix) > 512:
        problems["prefix"] = "text of at most 512 characters"
    elif prefix:
        segments = prefix.strip("/").split("/")
        if "\\" in prefix or not _PRINTABLE.fullmatch(prefix) or any(s in ("", ".", "..") for s in segments):
            problems["prefix"] = "no '\\', control characters, or empty, '.' or '..' segments"
    if not isinstance(c.get("path_style"), bool):
        problems["path_style"] = "true or false"
    key_id = c.get("access_key_id")
    if not isinstance(key_id, str) or not 1 <= len(key_id) <= 128 or not _PRINTABLE.fullmatch(key_id) or " " in key_id:
        problems["access_key_id"] = "required: the access key id (1-128 characters, no spaces)"
    sse = c.get("sse")
    if sse is not None and sse not in SSE_KINDS:
        problems["sse"] = "AES256, aws:kms or null"
    kms = c.get("sse_kms_key_id")
    if kms is not None:
        if sse != "aws:kms":
            problems["sse_kms_key_id"] = "only with sse aws:kms"
        elif not isinstance(kms, str) or not 1 <= len(kms) <= 2048:
            problems["sse_kms_key_id"] = "a KMS key id or ARN"
    storage = c.get("storage_class")
    if storage is not None and (not isinstance(storage, str) or not _STORAGE_CLASS.fullmatch(storage)):
        problems["storage_class"] = "a storage class such as STANDARD, STANDARD_IA, GLACIER_IR, or null"
    return problems


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_sftp(c: dict[str, Any]) -> dict[str, str]:
    from hark_fleet.hub.offsite.sftp import parse_host_key

    problems: dict[str, str] = {}
    host = c.get("host")
    if not isinstance(host, str) or not (_HOST.fullmatch(host) or _is_ip(host)):
        problems["host"] = "required: a host name or IP address"
    if not _int_in(c.get("port"), 1, 65535):
        problems["port"] = "from 1 to 65535"
    user = c.get("username")
    if not isinstance(user, str) or not _USER.fullmatch(user):
        problems["username"] = "required: a user name (letters, digits, '.', '_', '-', '@')"
    key = c.get("known_host_key")
    if not isinstance(key, str) or not key.strip():
        problems["known_host_key"] = "required: the server's host key, e.g. from `ssh-keyscan -t ed25519 host`"
    else:
        try:
            c["known_host_key"] = parse_host_key(key)
        except ValueError as err:
            problems["known_host_key"] = f"{err} (as `ssh-keyscan` prints it, or 'ssh-ed25519 AAAA...')"
    base = c.get("base_path")
    if not isinstance(base, str) or not base.startswith("/") or "\x00" in base or ".." in base.split("/"):
        problems["base_path"] = "required: an absolute path on the server, without '..'"
    return problems


def _check_local(c: dict[str, Any]) -> dict[str, str]:
    path = c.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        return {"path": "required: an absolute directory on the hub (e.g. a mounted share), without '..'"}
    return {}


def check_secrets(kind: str, secrets: Mapping[str, Any], problems: dict[str, str]) -> dict[str, str]:
    """The kind's secrets, checked (never echoed): problems as `secrets.<name>`."""
    allowed = SECRETS[kind]
    clean: dict[str, str] = {}
    for name, value in secrets.items():
        if name not in allowed:
            problems[f"secrets.{name}"] = (
                f"unknown secret for a {kind} provider (known: {', '.join(allowed)})"
                if allowed
                else f"a {kind} provider has no secrets"
            )
        elif not isinstance(value, str) or len(value) > 16384:
            problems[f"secrets.{name}"] = "text of at most 16384 characters"
        elif value:
            clean[name] = value
    if kind == "s3" and "secret_access_key" not in clean and "secrets.secret_access_key" not in problems:
        problems["secrets.secret_access_key"] = "required"
    if kind == "sftp":
        if "private_key" not in clean and "password" not in clean:
            problems["secrets"] = "a private_key or a password is required"
        if "private_key" in clean:
            from hark_fleet.hub.offsite.sftp import _asyncssh

            asyncssh = _asyncssh()
            try:
                asyncssh.import_private_key(clean["private_key"], clean.get("passphrase") or None)
            except (asyncssh.KeyImportError, ValueError):
                problems["secrets.private_key"] = (
                    "not a private key this hub can read (OpenSSH or PEM), or the passphrase is wrong"
                )
        elif "passphrase" in clean:
            problems["secrets.passphrase"] = "only with a private_key"
    return clean


def check_new(body: Mapping[str, Any], *, name_required: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """A whole new configuration (create, or test without saving): its normalised fields and its secrets; 400 on problems."""
    problems: dict[str, str] = {}
    kind = body.get("kind")
    fields: dict[str, Any] = {
        "kind": kind,
        "name": body.get("name"),
        "description": body.get("description", ""),
        "enabled": body.get("enabled", True),
        "rate_limit_bps": body.get("rate_limit_bps"),
        "max_concurrency": body.get("max_concurrency", 2),
    }
    check_common({k: v for k, v in fields.items() if k != "name" or v is not None}, problems)
    if name_required and fields["name"] is None:
        problems["name"] = "required"
    secrets: dict[str, str] = {}
    if kind not in KINDS:
        problems["kind"] = f"one of {', '.join(KINDS)}"
    else:
        fields["config"] = normalize_config(str(kind), body.get("config") or {}, problems)
        secrets = check_secrets(str(kind), body.get("secrets") or {}, problems)
    if problems:
        raise InvalidRequest("The upload provider is invalid.", fields=problems)
    return fields, secrets


# --- changes -------------------------------------------------------------------------------------


def _name_taken(name: str, except_id: str | None = None) -> bool:
    rows = UploadProvider.select().where(UploadProvider.name == name)
    if except_id is not None:
        rows = rows.where(UploadProvider.id != except_id)
    return bool(rows.exists())


def create_provider(actor: Actor, box: SecretBox, body: Mapping[str, Any]) -> dict[str, Any]:
    """A new provider, secrets sealed; every problem named in one 400, a taken name 409."""
    fields, secrets = check_new(body, name_required=True)
    if _name_taken(fields["name"]):
        raise Conflict(f"An upload provider named {fields['name']} exists.")
    provider_id = new_id("upv")
    now = utcnow()
    try:
        with database_proxy.atomic():
            provider = UploadProvider.create(
                id=provider_id,
                **fields,
                sealed_secrets=box.seal(secrets, bound_to(provider_id)) if secrets else None,
                secret_names=sorted(secrets),
                last_test=None,
                version=1,
                created_by={"type": actor.type, "id": actor.id, "name": actor.name},
                created_at=now,
                updated_at=now,
            )
            after = provider_to_api(provider)
            record(actor, "upload_provider.create", permission=MANAGE, target=("upload_provider", provider.id), after=after)
    except peewee.IntegrityError as err:
        raise Conflict(f"An upload provider named {fields['name']} exists.") from err
    return after


def update_provider(actor: Actor, provider_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change name, description, enabled, config (given keys replace theirs), rate limit, concurrency; `version` guards."""
    provider = get_provider(provider_id)
    if "version" in changes and changes["version"] != provider.version:
        raise Conflict(f"The upload provider changed meanwhile (version {provider.version}); read it again.")
    before = provider_to_api(provider)
    problems: dict[str, str] = {}
    if "kind" in changes and changes["kind"] != provider.kind:
        problems["kind"] = "a provider keeps its kind: make a new provider instead"
    check_common(changes, problems)
    fields: dict[str, Any] = {
        k: changes[k] for k in ("name", "description", "enabled", "rate_limit_bps", "max_concurrency") if k in changes
    }
    if "config" in changes:
        fields["config"] = normalize_config(provider.kind, {**(provider.config or {}), **(changes["config"] or {})}, problems)
    if problems:
        raise InvalidRequest("The upload provider is invalid.", fields=problems)
    if "name" in fields and _name_taken(fields["name"], provider.id):
        raise Conflict(f"An upload provider named {fields['name']} exists.")
    if all(before.get(k) == v for k, v in fields.items()):
        return before
    try:
        with database_proxy.atomic():
            update_if_unchanged(UploadProvider, provider, fields, "upload provider")
            after = provider_to_api(get_provider(provider.id))
            record(
                actor,
                "upload_provider.update",
                permission=MANAGE,
                target=("upload_provider", provider.id),
                before=before,
                after=after,
            )
    except peewee.IntegrityError as err:
        raise Conflict(f"An upload provider named {fields.get('name')} exists.") from err
    return after


def replace_credentials(actor: Actor, box: SecretBox, provider_id: str, secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Replace a provider's secrets whole (PUT .../credentials); the audit says which are set, never their values."""
    provider = get_provider(provider_id)
    problems: dict[str, str] = {}
    if not SECRETS[provider.kind]:
        raise InvalidRequest(
            "A directory provider has no credentials.", fields={"secrets": f"a {provider.kind} provider has no secrets"}
        )
    clean = check_secrets(provider.kind, secrets, problems)
    if problems:
        raise InvalidRequest("The credentials are invalid.", fields=problems)
    before = provider_to_api(provider)
    with database_proxy.atomic():
        update_if_unchanged(
            UploadProvider,
            provider,
            {"sealed_secrets": box.seal(clean, bound_to(provider.id)), "secret_names": sorted(clean), "last_test": None},
            "upload provider",
        )
        after = provider_to_api(get_provider(provider.id))
        record(
            actor,
            "upload_provider.credentials",
            permission=MANAGE,
            target=("upload_provider", provider.id),
            before={"secrets_set": before["secrets_set"], "version": before["version"]},
            after={"secrets_set": after["secrets_set"], "version": after["version"]},
        )
    return after


def delete_provider(actor: Actor, provider_id: str) -> None:
    """Delete a provider no policy uses and nothing is uploading to (409 saying which otherwise)."""
    provider = get_provider(provider_id)
    refusal = _delete_refusal(provider)
    if refusal is not None:
        raise Conflict(f"The upload provider cannot be deleted: {refusal}.")
    before = provider_to_api(provider)
    with database_proxy.atomic():
        if _uploading(provider.id) or _policies_using(provider.id):  # re-checked inside the transaction
            raise Conflict("The upload provider cannot be deleted: it came into use meanwhile.")
        dropped = (
            UploadItem.delete()
            .where(UploadItem.provider_id == provider.id, UploadItem.state.in_(["pending", "queued", "failed"]))
            .execute()
        )
        UploadProvider.delete().where(UploadProvider.id == provider.id).execute()
        record(
            actor,
            "upload_provider.delete",
            permission=MANAGE,
            target=("upload_provider", provider.id),
            before={**before, "unsent_items_dropped": dropped},
        )


# --- tests ---------------------------------------------------------------------------------------


def run_provider_test(spec: ProviderSpec) -> TestReport:
    """Run a provider's test (blocking: call on a thread); a configuration it refuses is a failed `config` step."""
    try:
        provider = open_provider(spec)
    except ProviderError as err:
        return TestReport(ok=False, steps=[TestStep(err.step, False, err.message, 0)], failed_step=err.step)
    try:
        return provider.test()
    finally:
        provider.close()


def with_saved_secrets(body: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """A test body naming a saved provider (`provider_id`): the secrets it leaves out are that provider's, so an edit
    can be tested before it is saved without typing the secrets again. 404 for no such provider, 400 for another kind."""
    provider_id = body.get("provider_id")
    if not provider_id:
        return body
    provider = get_provider(provider_id)
    if provider.kind != body.get("kind"):
        raise InvalidRequest("The upload provider is invalid.", fields={"provider_id": f"is a {provider.kind} provider"})
    saved = box.unseal(provider.sealed_secrets, bound_to(provider.id)) if provider.sealed_secrets else {}
    return {**body, "secrets": {**saved, **(body.get("secrets") or {})}}


def unsaved_spec(fields: Mapping[str, Any], secrets: Mapping[str, Any]) -> ProviderSpec:
    return ProviderSpec(
        id="unsaved",
        kind=fields["kind"],
        config=dict(fields["config"]),
        secrets=dict(secrets),
        rate_limit_bps=fields.get("rate_limit_bps"),
        max_concurrency=fields.get("max_concurrency") or 2,
    )


def last_test_of(report: TestReport, at: datetime) -> dict[str, Any]:
    """What a provider keeps of its last test: ok, the failed (or last) step and its message, when, every step."""
    last = next((s for s in report.steps if not s.ok), report.steps[-1] if report.steps else None)
    return {
        "ok": report.ok,
        "step": last.step if last else None,
        "message": last.message if last else "",
        "at": iso(at),
        "steps": [s.to_api() for s in report.steps],
    }


def audit_unsaved_test(actor: Actor, kind: str, report: TestReport) -> None:
    record(
        actor,
        "upload_provider.test",
        permission=MANAGE,
        target=("upload_provider", None),
        after={"kind": kind, "saved": False, "ok": report.ok, "failed_step": report.failed_step},
        outcome="success",
    )


def store_test(actor: Actor, provider_id: str, report: TestReport) -> dict[str, Any]:
    """Keep a saved provider's test result (not a change of its configuration: the version stays) and audit it."""
    provider = get_provider(provider_id)
    last = last_test_of(report, utcnow())
    with database_proxy.atomic():
        UploadProvider.update(last_test=last).where(UploadProvider.id == provider.id).execute()
        record(
            actor,
            "upload_provider.test",
            permission=MANAGE,
            target=("upload_provider", provider.id),
            after={"kind": provider.kind, "saved": True, "ok": report.ok, "failed_step": report.failed_step},
        )
    return last
