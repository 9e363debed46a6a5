"""Upload providers (settings, issue 20): list, facets, export, detail, create, change, delete, credentials, test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.api.upload_policies import nudge_runner
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import upload_providers
from hark_fleet.hub.services.upload_providers import PROVIDER_LIST

READ = "settings:read"
MANAGE = "settings:manage"


class ProviderBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    name: str | None = None  # required to save; a test without saving may leave it out
    description: str = ""
    enabled: bool = True
    config: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    rate_limit_bps: int | None = None
    max_concurrency: int = 2


class ProviderTestBody(ProviderBody, forbid_unknown_fields=True):
    provider_id: str | None = None  # a saved provider whose secrets fill in those left out (testing an edit)


class ProviderPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    kind: str | msgspec.UnsetType = msgspec.UNSET  # may only repeat the current kind
    config: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    rate_limit_bps: int | None | msgspec.UnsetType = msgspec.UNSET
    max_concurrency: int | msgspec.UnsetType = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET  # the version last read: 409 if it moved on


def _as_dict(body: msgspec.Struct) -> dict[str, Any]:
    return msgspec.structs.asdict(body)


class ProvidersHandler(HubWideWrites, ListHandler):
    """`GET /api/v1/settings/upload-providers` and `POST` to create one (201)."""

    spec = PROVIDER_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        body = _as_dict(self.parse_body(ProviderBody))
        refuse_hub_dirs(self, body.get("config"))
        self.write_data(await self.hub.db.run(upload_providers.create_provider, self.actor, self.hub.secrets, body), 201)


class ProviderFacetsHandler(FacetsHandler):
    spec = PROVIDER_LIST
    permissions = {"get": READ}


class ProviderExportHandler(ExportHandler):
    spec = PROVIDER_LIST
    permissions = {"get": READ, "post": READ}


class ProviderHandler(HubWideWrites):
    """`GET|PATCH|DELETE /api/v1/settings/upload-providers/{id}`."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(upload_providers.provider_detail, id))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(ProviderPatchBody)
        refuse_hub_dirs(self, changes.get("config"))
        self.write_data(await self.hub.db.run(upload_providers.update_provider, self.actor, id, changes))
        nudge_runner(self)  # re-enabled, a new endpoint: items waiting on it may go now

    async def delete(self, id: str) -> None:
        await self.hub.db.run(upload_providers.delete_provider, self.actor, id)
        self.write_no_content()


class ProviderActionsHandler(BaseHandler):
    """`GET /api/v1/settings/upload-providers/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(upload_providers.provider_detail, id)
        self.write_data(detail["actions"])


class ProviderCredentialsHandler(HubWideWrites):
    """`PUT /api/v1/settings/upload-providers/{id}/credentials`: replace the secrets (write-only: the answer names them)."""

    permissions = {"put": MANAGE}

    async def put(self, id: str) -> None:
        secrets = self.parse_body(dict[str, Any])
        self.write_data(await self.hub.db.run(upload_providers.replace_credentials, self.actor, self.hub.secrets, id, secrets))
        nudge_runner(self)


class ProviderTestUnsavedHandler(HubWideWrites):
    """`POST /api/v1/settings/upload-providers/test`: test a configuration without saving it; 200 with the report."""

    permissions = {"post": MANAGE}

    async def post(self) -> None:
        body = _as_dict(self.parse_body(ProviderTestBody))
        refuse_hub_dirs(self, body.get("config"))
        body = await self.hub.db.run(upload_providers.with_saved_secrets, body, self.hub.secrets)
        fields, secrets = await self.hub.db.run(upload_providers.check_new, body)
        spec = upload_providers.unsaved_spec(fields, secrets)
        report = await asyncio.get_running_loop().run_in_executor(None, upload_providers.run_provider_test, spec)
        await self.hub.db.run(upload_providers.audit_unsaved_test, self.actor, fields["kind"], report)
        self.write_data(report.to_api())


class ProviderTestHandler(HubWideWrites):
    """`POST /api/v1/settings/upload-providers/{id}/test`: test the saved provider and keep the result as `last_test`."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        spec = await self.hub.db.run(upload_providers.load_spec, id, self.hub.secrets)
        report = await asyncio.get_running_loop().run_in_executor(None, upload_providers.run_provider_test, spec)
        last = await self.hub.db.run(upload_providers.store_test, self.actor, id, report)
        self.write_data({**report.to_api(), "at": last["at"]})


def refuse_hub_dirs(handler: BaseHandler, config: Any) -> None:
    """A directory provider may not write into the hub's own data dir (its database, keys and recordings)."""
    path = config.get("path") if isinstance(config, dict) else None
    if not isinstance(path, str) or not path.startswith("/"):
        return  # the service names what is wrong with it
    data_dir = Path(handler.hub.config.data_dir).resolve()
    target = Path(path).resolve()
    if target == data_dir or data_dir in target.parents:
        raise InvalidRequest(
            "The upload provider is invalid.", fields={"config.path": f"must be outside the hub's data directory {data_dir}"}
        )
