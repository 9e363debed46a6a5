"""The hub answers as its served OpenAPI document and API.md say: methods, booleans, integers, lengths, facets, 403s, examples."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from tests.harness import HubProcess

PASSWORD = "conformance-test-password-1"
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}


@pytest.fixture(scope="module")
def doc(hub: HubProcess) -> dict[str, Any]:
    """The OpenAPI document the hub serves."""
    response = httpx.get(f"{hub.url}/api/v1/openapi.yaml")
    assert response.status_code == 200
    return yaml.safe_load(response.text)


@pytest.fixture(scope="module")
def admin(hub: HubProcess) -> Iterator[httpx.Client]:
    with hub.admin() as client:
        yield client


def user_token(hub: HubProcess, admin: httpx.Client, roles: list[str], sites: list[str] | None = None) -> str:
    username = f"c-{uuid.uuid4().hex[:8]}"
    for site in sites or []:
        hub.ensure_site(site)  # a grant's site must exist
    response = admin.post("/api/v1/auth/users", json={"username": username, "password": PASSWORD, "roles": roles, "sites": sites})
    assert response.status_code == 201, response.text
    return hub.login(username, PASSWORD)


def response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    """The JSON schema the document gives for one answer, with `$ref`s resolvable against the document."""
    response = doc["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response["content"]["application/json"]["schema"]


def validate(doc: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    """Validate `body` against `schema`, a part of the document."""
    registry: Registry = Registry().with_resource("urn:openapi", Resource.opaque(doc))
    jsonschema.Draft202012Validator(_rebase(schema), registry=registry).validate(body)


def _rebase(value: Any) -> Any:
    """Point the document's local `$ref`s (`#/components/...`) at the registered document."""
    if isinstance(value, dict):
        return {k: ("urn:openapi" + v if k == "$ref" and v.startswith("#") else _rebase(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v) for v in value]
    return value


# -- methods -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "QUERY"])
def test_a_method_tornado_does_not_know_is_405_with_allow(hub: HubProcess, admin: httpx.Client, method: str) -> None:
    for path, allowed in (("/api/v1/nodes", "GET, HEAD"), ("/healthz", "GET, HEAD"), ("/api/v1/auth/login", "POST")):
        response = admin.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed, (method, path)
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_method_on_an_unknown_path_is_404(hub: HubProcess) -> None:
    response = httpx.request("TRACE", f"{hub.url}/api/v1/no-such-family")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_console_answers_other_methods_405_with_allow(hub: HubProcess) -> None:
    for path in ("/", "/console/app.js"):
        response = httpx.request("TRACE", f"{hub.url}{path}")
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD", path
        assert response.json()["error"]["code"] == "method_not_allowed"
    missing = httpx.get(f"{hub.url}/console/no-such-file.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_head_answers_what_get_answers_without_the_body(hub: HubProcess, admin: httpx.Client) -> None:
    got = admin.get("/api/v1/nodes")
    head = admin.head("/api/v1/nodes")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    assert httpx.head(f"{hub.url}/api/v1/nodes").status_code == 401  # same permission as GET


def test_head_on_a_stream_answers_at_once(hub: HubProcess, admin: httpx.Client) -> None:
    with hub.client(admin.headers["authorization"].split()[1]) as client:
        response = client.head("/api/v1/events/stream", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # The same connection serves the next request only once the HEAD's answer is finished.
        assert client.get("/healthz", timeout=5).status_code == 200


def test_405_lists_head_only_where_get_is_allowed(admin: httpx.Client) -> None:
    response = admin.head("/api/v1/auth/logout")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert admin.delete("/api/v1/auth/groups").headers["allow"] == "GET, HEAD, POST"


# -- booleans and integers in queries -----------------------------------------------


def boolean_query_parameters(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, name) of every query parameter the document types as `true|false`."""
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for parameter in operation.get("parameters", []) + item.get("parameters", []):
                if "$ref" in parameter:
                    parameter = doc["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[-1]]
                schema = parameter.get("schema", {})
                schema = schema.get("items", schema)
                if parameter["in"] == "query" and (
                    schema.get("type") == "boolean" or set(schema.get("enum", [])) == {"true", "false"}
                ):
                    found.append((method, path, parameter["name"]))
    return found


@pytest.mark.parametrize("fields", [1000, 1001, 3000])
def test_a_query_string_of_too_many_fields_is_a_400_in_the_error_shape(admin: httpx.Client, fields: int) -> None:
    query = "fields=state&" + "&".join(["recording_id=r"] * (fields - 1))
    response = admin.get(f"/api/v1/recording-jobs/facets?{query}")
    if fields <= 1000:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert f"{fields} fields" in response.json()["error"]["message"]


def test_every_boolean_query_parameter_is_documented_as_true_or_false(doc: dict[str, Any]) -> None:
    for parameter in doc["components"]["parameters"].values():
        enum = parameter.get("schema", {}).get("enum", [])
        assert not ({"1", "yes"} & set(enum)), parameter["name"]
    assert ("delete", "/api/v1/nodes/{id}", "force") in boolean_query_parameters(doc)


@pytest.mark.parametrize("value", ["AAA", "1", "yes", "True", ""])
def test_every_boolean_query_parameter_refuses_anything_but_true_or_false(
    doc: dict[str, Any], admin: httpx.Client, value: str
) -> None:
    for method, path, name in boolean_query_parameters(doc):
        url = path.replace("{id}", "no-such-id")
        response = admin.request(
            method.upper(), url, params={name: value, "format": "csv"} if "export" in path else {name: value}
        )
        assert response.status_code == 400, (method, path, name, value, response.status_code, response.text)
        assert name in response.json()["error"]["fields"], (method, path, response.text)


def test_force_false_is_not_force(admin: httpx.Client) -> None:
    node = admin.post("/api/v1/nodes/enroll", json={"name": "force-test"}).json()["data"]["node"]
    assert admin.delete(f"/api/v1/nodes/{node['id']}", params={"force": "false"}).status_code == 204


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/nodes", {"limit": "5.0"}),
        ("/api/v1/nodes", {"limit": "200.000"}),
        ("/api/v1/settings/channel-map-templates", {"channel_count": "2.0"}),
        ("/api/v1/settings/recording-profiles", {"bit_depth": "24.0"}),
    ],
)
def test_whole_number_floats_are_integers_in_queries(admin: httpx.Client, path: str, params: dict[str, str]) -> None:
    response = admin.get(path, params=params)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("limit", ["5.5", "²", "٥", "+5", " 5", "5_0", "1e1", "0x10"])
def test_integers_in_queries_are_plain_ascii_numbers(admin: httpx.Client, limit: str) -> None:
    response = admin.get("/api/v1/nodes", params={"limit": limit})
    assert response.status_code == 400, response.text
    assert "limit" in response.json()["error"]["fields"]


@pytest.mark.parametrize("value", ["²", "٥", "1.5"])
def test_other_integer_query_parameters_refuse_what_is_not_an_integer(admin: httpx.Client, value: str) -> None:
    for path, name in (
        ("/api/v1/settings/channel-map-templates", "channel_count"),
        ("/api/v1/settings/recording-profiles", "bit_depth"),
        ("/api/v1/events/stream", "last_event_id"),
    ):
        response = admin.get(path, params={name: value}, timeout=5)
        assert response.status_code == 400, (path, value, response.text)


# -- integers in bodies ---------------------------------------------------------------


def test_whole_number_floats_are_integers_in_bodies(admin: httpx.Client) -> None:
    before = admin.get("/api/v1/auth/access-policies").json()["data"]["session_ttl_s"]
    try:
        response = admin.patch("/api/v1/auth/access-policies", content=b'{"session_ttl_s": 225265.0}')
        assert response.status_code == 200, response.text
        assert response.json()["data"]["session_ttl_s"] == 225265
        for raw in (b'{"session_ttl_s": 225265.5}', b'{"session_ttl_s": "225265"}', b'{"session_ttl_s": true}'):
            refused = admin.patch("/api/v1/auth/access-policies", content=raw)
            assert refused.status_code == 400, raw
            assert "session_ttl_s" in refused.json()["error"]["fields"], refused.text
    finally:
        admin.patch("/api/v1/auth/access-policies", json={"session_ttl_s": before})


def test_whole_number_floats_inside_lists_and_objects_are_integers(admin: httpx.Client) -> None:
    body = (
        b'{"name": "floats", "channels": [{"input": 0.0, "name": "L"}, {"input": 1.0, "name": "R"}],'
        b' "programmes": [{"name": "main", "channels": ["L", "R"]}]}'
    )
    response = admin.post("/api/v1/settings/channel-map-templates", content=body)
    assert response.status_code == 201, response.text
    assert [c["input"] for c in response.json()["data"]["channels"]] == [0, 1]


# -- lengths ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["groups", "roles"])
def test_a_description_longer_than_documented_is_400_not_cut(admin: httpx.Client, family: str) -> None:
    base = {"name": f"len-{uuid.uuid4().hex[:6]}"} | ({"permissions": []} if family == "roles" else {})
    created = admin.post(f"/api/v1/auth/{family}", json={**base, "description": "d" * 500})
    assert created.status_code == 201, created.text
    assert len(created.json()["data"]["description"]) == 500
    refused = admin.post(f"/api/v1/auth/{family}", json={**base, "name": base["name"] + "x", "description": "d" * 501})
    assert refused.status_code == 400 and "description" in refused.json()["error"]["fields"], refused.text
    patched = admin.patch(f"/api/v1/auth/{family}/{created.json()['data']['id']}", json={"description": "d" * 501})
    assert patched.status_code == 400 and "description" in patched.json()["error"]["fields"], patched.text


def test_a_text_search_longer_than_documented_is_400_even_when_blank(admin: httpx.Client) -> None:
    assert admin.get("/api/v1/nodes", params={"q": " " * 201}).status_code == 400
    assert admin.get("/api/v1/nodes", params={"q": " " * 200}).status_code == 200


# -- facets ---------------------------------------------------------------------------------


def test_facets_with_numbers_match_the_documented_schema(doc: dict[str, Any], admin: httpx.Client) -> None:
    template = {"name": "facets", "channels": [{"input": 0, "name": "M"}], "programmes": [{"name": "main", "channels": ["M"]}]}
    assert admin.post("/api/v1/settings/channel-map-templates", json=template).status_code == 201
    for path, field in (
        ("/api/v1/settings/recording-profiles/facets", "sample_rate"),
        ("/api/v1/settings/channel-map-templates/facets", "channel_count"),
    ):
        body = admin.get(path).json()
        assert all(isinstance(v["value"], int) for v in body["data"][field]), body
        validate(doc, response_schema(doc, path, "get", "200"), body)


# -- 403 ---------------------------------------------------------------------------------------


def test_forbidden_names_the_required_permissions_as_a_list(hub: HubProcess, doc: dict[str, Any], admin: httpx.Client) -> None:
    viewer = user_token(hub, admin, ["viewer"])
    north_admin = user_token(hub, admin, ["admin"], ["north"])
    with hub.client(viewer) as client:
        denied = client.post("/api/v1/nodes/enroll", json={"name": "nope"})
    with hub.client(north_admin) as client:
        limited = client.get("/api/v1/auth/groups")  # groups are hub-wide: a site admin manages only its sites' users
    key = admin.post("/api/v1/auth/keys", json={"name": "conformance", "scopes": ["node:read"]}).json()["data"]["secret"]
    with hub.client(key) as client:
        scoped = client.get("/api/v1/audit-events")
    assert denied.status_code == limited.status_code == scoped.status_code == 403
    assert denied.json()["error"] == {
        "code": "forbidden",
        "message": "This needs the permission node:manage.",
        "required": ["node:manage"],
    }
    assert limited.json()["error"]["required"] == ["auth:manage"]
    assert scoped.json()["error"]["required"] == ["audit:read"] and scoped.json()["error"]["current"] == ["node:read"]
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert error["required"]["type"] == "array" and error["current"]["type"] == "array"
    for response in (denied, limited, scoped):
        validate(doc, {"$ref": "#/components/schemas/Error"}, response.json())


# -- examples ---------------------------------------------------------------------------------


def export_examples(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path, body) of every request body example on an export route."""
    found = []
    for path, item in doc["paths"].items():
        if not path.endswith("/export") or "post" not in item:
            continue
        media = item["post"].get("requestBody", {}).get("content", {}).get("application/json", {})
        examples = [media["example"]] if "example" in media else []
        examples += [e["value"] for e in media.get("examples", {}).values()]
        schema = media.get("schema", {})
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        examples += [schema["example"]] if "example" in schema else []
        examples += schema.get("examples", [])
        found += [(path, example) for example in examples]
    return found


def test_every_export_example_is_accepted(doc: dict[str, Any], admin: httpx.Client) -> None:
    examples = export_examples(doc)
    assert {path for path, _ in examples} >= {"/api/v1/audit-events/export", "/api/v1/nodes/export"}
    for path, example in examples:
        response = admin.post(path, params={"format": "ndjson"}, json=example)
        assert response.status_code == 200, (path, example, response.text)


def test_export_filters_are_documented_per_family(doc: dict[str, Any], admin: httpx.Client) -> None:
    """A filter one family's export takes is not offered to another's, whose server refuses it."""
    for path, item in doc["paths"].items():
        if not path.endswith("/export") or "post" not in item:
            continue
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        filters = schema["properties"]["filters"]
        assert filters.get("additionalProperties") is False, path
        for name in filters["properties"]:
            response = admin.post(path, params={"format": "ndjson"}, json={"filters": {name: []}})
            assert response.status_code == 200, (path, name, response.text)


# -- agent messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("ts", ["", "9999", "yesterday", "2026-01-31T12:00:00"])
def test_an_agent_message_time_that_is_not_an_iso_8601_time_with_a_zone_is_400(
    hub: HubProcess, admin: httpx.Client, ts: str
) -> None:
    enrolled = admin.post("/api/v1/nodes/enroll", json={"name": f"ts-{uuid.uuid4().hex[:6]}"}).json()["data"]
    node_id = enrolled["node"]["id"]
    good = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    bodies = {
        "heartbeat": {"msg_id": "hb-1", "seq": 1, "agent_version": "0.1.0", "uptime_s": 5.0},
        "health-events": {"msg_id": "he-1", "kind": "disk.low", "state": "open", "severity": "warning", "details": {}},
        "meter-frame": {"seq": 1, "interval_ms": 100, "sample_rate": 48000, "channels": []},
    }
    with hub.client(enrolled["credential"]) as node:
        for route, body in bodies.items():
            refused = node.post(f"/api/v1/nodes/{node_id}/{route}", json={**body, "ts": ts})
            assert refused.status_code == 400 and "ts" in refused.json()["error"]["fields"], (route, refused.text)
        # A heartbeat with a proper time still counts (a bad one stored would have outranked it).
        accepted = node.post(f"/api/v1/nodes/{node_id}/heartbeat", json={**bodies["heartbeat"], "ts": good})
        assert accepted.status_code == 200, accepted.text
    assert admin.get(f"/api/v1/nodes/{node_id}").json()["data"]["metrics"]["ts"] == good
