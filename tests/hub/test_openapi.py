"""The served OpenAPI document and the route table describe the same API."""

from __future__ import annotations

import httpx
import yaml
from hark_fleet.hub.app import ROUTES
from openapi_spec_validator import validate

from tests.harness import HubProcess

METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


def document(hub: HubProcess) -> dict:
    response = httpx.get(f"{hub.url}/api/v1/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    return yaml.safe_load(response.text)


def test_the_served_document_is_valid_openapi_3_1(hub: HubProcess) -> None:
    doc = document(hub)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_is_documented_and_every_documented_route_exists(hub: HubProcess) -> None:
    doc = document(hub)
    in_app = {(path, method) for path, handler in ROUTES for method in handler.permissions}
    in_doc = {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}
    assert in_app - in_doc == set(), "routes missing from openapi.yaml"
    assert in_doc - in_app == set(), "openapi.yaml documents routes the hub does not have"


def test_documented_permissions_match_the_handlers(hub: HubProcess) -> None:
    doc = document(hub)
    for path, handler in ROUTES:
        for method, permission in handler.permissions.items():
            assert doc["paths"][path][method]["x-permission"] == permission, (path, method)
