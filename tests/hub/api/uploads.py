"""What the upload policy and queue tests share: provider rows, policies, users limited to a site, audit reads."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.db.models import UploadItem, UploadProvider
from hark_fleet.hub.ids import new_id

from tests.conftest import hub_database
from tests.harness import HubProcess

POLICIES = "/api/v1/settings/upload-policies"
QUEUE = "/api/v1/upload-queue"
PASSWORD = "upload-test-password-1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def provider(hub: HubProcess, kind: str = "local", enabled: bool = False, path: Path | None = None, **config: Any) -> str:
    """An upload provider row, written straight into the hub's database (disabled by default: the runner leaves its
    items pending, so a test sees them as they were queued)."""
    if kind == "local":
        config = {"path": str(path or "/nonexistent-upload-dir"), **config}
    elif kind == "s3":
        config = {"endpoint_url": "http://127.0.0.1:9", "bucket": "archive", "region": "us-east-1", **config}
    provider_id = new_id("upp")
    with hub_database(hub):
        UploadProvider.create(
            id=provider_id, name=unique(f"{kind}-provider"), kind=kind, enabled=enabled, config=config, secret_names=[]
        )
    return provider_id


def create_policy(hub: HubProcess, provider_ids: list[str], **body: Any) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post(POLICIES, json={"name": unique("policy"), "provider_ids": provider_ids, **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def disable_other_policies(hub: HubProcess, keep: str | None = None) -> None:
    """Policies from earlier tests on the module's hub would queue this test's recordings too."""
    with hub.admin() as admin:
        for policy in admin.get(POLICIES, params={"enabled": "true", "limit": 200}).json()["data"]:
            if policy["id"] != keep:
                assert admin.patch(f"{POLICIES}/{policy['id']}", json={"enabled": False}).status_code == 200


def user(hub: HubProcess, roles: list[str], sites: list[str] | None = None) -> str:
    """A token of a new user with these roles (limited to `sites` when given)."""
    username = unique("upload-user")
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "roles": roles}
    if sites is not None:
        body["sites"] = sites
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def audit_actions(hub: HubProcess, target_id: str) -> list[str]:
    with hub.admin() as admin:
        events = admin.get("/api/v1/audit-events", params={"target_id": target_id}).json()["data"]
    return [e["action"] for e in reversed(events)]


def item_row(hub: HubProcess, recording_id: str, provider_id: str, site: str | None, state: str, **fields: Any) -> str:
    """An upload item written straight into the hub's database (a state the runner would have reached)."""
    item_id = new_id("upi")
    now = utcnow()
    with hub_database(hub):
        UploadItem.create(
            id=item_id,
            recording_id=recording_id,
            provider_id=provider_id,
            site=site,
            node_id=fields.pop("node_id", "nod_test"),
            state=state,
            created_at=now,
            updated_at=now,
            **fields,
        )
    return item_id
