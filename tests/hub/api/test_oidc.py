"""Single sign-on against a real OpenID Connect provider (panva/node-oidc-provider) and a real `hark-hub`.

The provider's registered redirect URI must be the hub's callback URL, so the hub's port is chosen first, the
provider is started with that redirect URI, then the hub is started on that port.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from hark_fleet.hub.auth.permissions import BUILTIN_ROLES, sorted_permissions

from tests.harness import HubProcess, free_port, running_hub
from tests.oidc.harness import DEFAULT_USERS, OidcProvider, browser_login

SCOPES = "openid profile email groups sites"
CALLBACK = "/api/v1/auth/oidc/callback"
USERS: dict[str, dict[str, Any]] = {
    **DEFAULT_USERS,
    # Matches no mapping: refused unless the policies give default roles.
    "carol": {
        "email": "carol@example.org",
        "email_verified": True,
        "name": "Carol",
        "preferred_username": "carol",
        "groups": ["contractors"],
    },
    # Signed in once, then disabled by an admin.
    "dave": {"email": "dave@example.org", "name": "Dave", "preferred_username": "dave", "groups": ["ops"]},
}
OPS_ON_NORTH = {"claim": "groups", "value": "ops", "roles": ["operator"], "sites": ["north"]}
VIEWERS = {"claim": "groups", "value": "viewers", "roles": ["viewer"], "sites": None}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory, hub_port: int) -> Iterator[OidcProvider]:
    provider = OidcProvider(
        tmp_path_factory.mktemp("oidc-provider"),
        redirect_uris=[f"http://127.0.0.1:{hub_port}{CALLBACK}"],
        users=USERS,
    )
    provider.start()
    try:
        yield provider
    finally:
        code = provider.stop()
    assert code == 0, f"oidc provider exited with {code}:\n{provider.log()}"


@pytest.fixture(scope="module")
def sso_hub(tmp_path_factory: pytest.TempPathFactory, hub_port: int, oidc_provider: OidcProvider) -> Iterator[HubProcess]:
    env = {
        "HARK_OIDC_ISSUER": oidc_provider.issuer,
        "HARK_OIDC_CLIENT_ID": oidc_provider.client_id,
        "HARK_OIDC_CLIENT_SECRET": oidc_provider.client_secret,
        "HARK_OIDC_SCOPES": SCOPES,
    }
    process = HubProcess(tmp_path_factory.mktemp("hub-oidc"), port=hub_port, env_extra=env)
    try:
        process.start()
        yield process
    finally:
        code = process.stop()
    assert code == 0, f"hark-hub exited with {code}:\n{process.log()}"


@pytest.fixture
def policies(sso_hub: HubProcess) -> Iterator[Any]:
    """Set the access policies for one test; they are reset to no mappings and no default roles afterwards."""

    def apply(**body: Any) -> dict[str, Any]:
        with sso_hub.admin() as admin:
            response = admin.patch("/api/v1/auth/access-policies", json=body)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    yield apply
    apply(oidc_mappings=[], oidc_default_roles=[], oidc_sites_claim=None)


# -- helpers ------------------------------------------------------------------------------------


def start_login(hub: HubProcess, return_to: str | None = "/") -> str:
    """The hub's redirect to the provider's authorization endpoint."""
    params = {} if return_to is None else {"return_to": return_to}
    response = httpx.get(f"{hub.url}/api/v1/auth/oidc/login", params=params, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def provider_callback(hub: HubProcess, username: str, return_to: str | None = "/") -> str:
    """Start a login at the hub and play the browser at the provider: the callback URL the browser is sent to."""
    location = browser_login(start_login(hub, return_to), username)
    assert location.startswith(f"{hub.url}{CALLBACK}?"), location
    return location


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, follow_redirects=False, timeout=15)


def token_of(response: httpx.Response, return_to: str = "/") -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    prefix = f"{return_to}#token="
    assert location.startswith(prefix), location
    token = unquote(location[len(prefix) :])
    assert token.startswith("hks_"), location
    return token


def sso_login(hub: HubProcess, username: str) -> str:
    """A full single sign-on; the session token the hub hands back."""
    return token_of(fetch(provider_callback(hub, username)))


def me(hub: HubProcess, token: str) -> dict[str, Any]:
    with hub.client(token) as client:
        response = client.get("/api/v1/auth/me")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith("hark_session=")]


def audit_events(hub: HubProcess, **filters: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get("/api/v1/audit-events", params={"limit": "200", **filters})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def users_named(hub: HubProcess, prefix: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get("/api/v1/auth/users", params={"limit": "200"})
    assert response.status_code == 200, response.text
    return [u for u in response.json()["data"] if u["username"].startswith(prefix)]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


# -- configuration ---------------------------------------------------------------------------------


def test_config_names_the_provider(sso_hub: HubProcess, oidc_provider: OidcProvider) -> None:
    response = httpx.get(f"{sso_hub.url}/api/v1/auth/oidc/config", timeout=10)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["enabled"] is True
    assert data["issuer"] == oidc_provider.issuer
    assert data["client_id"] == oidc_provider.client_id
    assert data["scopes"] == SCOPES.split()
    assert data["login_url"] == "/api/v1/auth/oidc/login"
    assert data["redirect_url"] == f"{sso_hub.url}{CALLBACK}"
    assert oidc_provider.client_secret not in response.text


def test_hub_without_oidc_says_disabled_and_has_no_login(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        config = httpx.get(f"{hub.url}/api/v1/auth/oidc/config", timeout=10)
        assert config.status_code == 200
        assert config.json() == {"data": {"enabled": False}}

        login = httpx.get(f"{hub.url}/api/v1/auth/oidc/login", params={"return_to": "/"}, follow_redirects=False)
        assert_error(login, 404, "not_found")
        callback = httpx.get(f"{hub.url}{CALLBACK}", params={"code": "x", "state": "y"}, follow_redirects=False)
        assert_error(callback, 404, "not_found")
        with hub.admin() as admin:
            assert_error(admin.get("/api/v1/auth/oidc/discovery"), 404, "not_found")


# -- the login flow --------------------------------------------------------------------------------


def test_login_redirects_to_the_provider_with_pkce_state_and_nonce(sso_hub: HubProcess, oidc_provider: OidcProvider) -> None:
    location = start_login(sso_hub)
    endpoint = oidc_provider.discovery()["authorization_endpoint"]
    assert location.startswith(endpoint + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert all(len(v) == 1 for v in query.values()), query
    params = {k: v[0] for k, v in query.items()}
    assert params["response_type"] == "code"
    assert params["client_id"] == oidc_provider.client_id
    assert params["redirect_uri"] == f"{sso_hub.url}{CALLBACK}"
    assert params["scope"] == SCOPES
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256 digest
    assert len(params["state"]) >= 22 and len(params["nonce"]) >= 22
    assert params["state"] != params["nonce"]

    again = {k: v[0] for k, v in parse_qs(urlsplit(start_login(sso_hub)).query).items()}
    for name in ("state", "nonce", "code_challenge"):
        assert again[name] != params[name], name


def test_callback_signs_in_with_mapped_roles_and_sites(sso_hub: HubProcess, oidc_provider: OidcProvider, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH], oidc_default_roles=[])
    callback = provider_callback(sso_hub, "alice")
    query = parse_qs(urlsplit(callback).query)
    assert query["iss"] == [oidc_provider.issuer] and "code" in query and "state" in query

    response = fetch(callback)
    token = token_of(response)
    cookies = session_cookies(response)
    assert len(cookies) == 1, response.headers.get_list("set-cookie")
    attributes = [a.strip().lower() for a in cookies[0].split(";")]
    assert cookies[0].split(";")[0] == f"hark_session={token}"
    assert "httponly" in attributes
    assert "path=/" in attributes
    assert "samesite=lax" in attributes

    data = me(sso_hub, token)
    user = data["user"]
    assert data["via"] == "oidc"
    assert user["username"] == "alice"
    assert user["display_name"] == "Alice"
    assert user["roles"] == ["operator"]
    assert user["sites"] == ["north"]
    assert user["sso"] is True
    assert data["permissions"] == sorted_permissions(BUILTIN_ROLES["operator"])
    assert data["grants"] == [{"permissions": sorted_permissions(BUILTIN_ROLES["operator"]), "sites": ["north"]}]

    # The HttpOnly cookie alone authenticates a read, too.
    cookie_me = httpx.get(f"{sso_hub.url}/api/v1/auth/me", cookies={"hark_session": token}, timeout=10)
    assert cookie_me.status_code == 200, cookie_me.text
    assert cookie_me.json()["data"]["user"]["id"] == user["id"]

    # The session says how it was opened.
    with sso_hub.client(token) as client:
        sessions = client.get("/api/v1/auth/sessions").json()["data"]
    assert [s["via"] for s in sessions if s["current"]] == ["oidc"]

    logins = [e for e in audit_events(sso_hub, action="auth.login", outcome="success") if e["actor"]["id"] == user["id"]]
    assert logins, "the single sign-on is not in the audit log"
    assert logins[0]["after"]["via"] == "oidc"
    assert logins[0]["after"]["sub"] == "alice"
    assert logins[0]["after"]["groups"] == ["ops"]


def test_second_login_reuses_the_user_and_applies_changed_mappings(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH], oidc_default_roles=[])
    first = me(sso_hub, sso_login(sso_hub, "alice"))
    second_token = sso_login(sso_hub, "alice")
    second = me(sso_hub, second_token)
    assert second["user"]["id"] == first["user"]["id"]
    assert second["user"]["roles"] == ["operator"] and second["user"]["sites"] == ["north"]
    assert [u["username"] for u in users_named(sso_hub, "alice")] == ["alice"]

    policies(oidc_mappings=[{**OPS_ON_NORTH, "roles": ["technician"], "sites": ["north", "south"]}])
    third = me(sso_hub, sso_login(sso_hub, "alice"))
    assert third["user"]["id"] == first["user"]["id"]
    assert third["user"]["roles"] == ["technician"]
    assert third["user"]["sites"] == ["north", "south"]
    assert third["permissions"] == sorted_permissions(BUILTIN_ROLES["technician"])
    assert [u["username"] for u in users_named(sso_hub, "alice")] == ["alice"]

    updates = audit_events(sso_hub, action="user.access.update", target_id=first["user"]["id"])
    assert updates, "the change of roles at login is not audited"
    assert updates[0]["actor"] == {"type": "system", "id": None, "name": "oidc"}
    assert updates[0]["before"] == {"roles": ["operator"], "sites": ["north"]}
    assert updates[0]["after"] == {"roles": ["technician"], "sites": ["north", "south"]}


def test_sites_claim_narrows_the_mapped_sites(sso_hub: HubProcess, policies: Any) -> None:
    # bob: groups ["viewers"], sites ["north", "south"].
    policies(oidc_mappings=[VIEWERS], oidc_sites_claim="sites")
    data = me(sso_hub, sso_login(sso_hub, "bob"))
    assert data["user"]["roles"] == ["viewer"]
    assert data["user"]["sites"] == ["north", "south"]

    policies(oidc_mappings=[{**VIEWERS, "sites": ["south", "east"]}])
    data = me(sso_hub, sso_login(sso_hub, "bob"))
    assert data["user"]["sites"] == ["south"]


def test_return_to_on_the_hub_is_kept(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    response = fetch(provider_callback(sso_hub, "alice", return_to="/console/nodes"))
    token_of(response, return_to="/console/nodes")


@pytest.mark.parametrize("return_to", ["https://evil.example/", "//evil.example/", "/\\evil.example/", "evil", None])
def test_return_to_off_the_hub_is_not_followed(sso_hub: HubProcess, policies: Any, return_to: str | None) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    response = fetch(provider_callback(sso_hub, "alice", return_to=return_to))
    token = token_of(response, return_to="/")
    assert "evil" not in response.headers["location"]
    assert me(sso_hub, token)["user"]["username"] == "alice"


# -- refusals --------------------------------------------------------------------------------------


def test_replayed_callback_is_refused(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    callback = provider_callback(sso_hub, "alice")
    token_of(fetch(callback))

    replay = fetch(callback)
    error = assert_error(replay, 400, "invalid_request")
    assert "state" in error["fields"], error
    assert not session_cookies(replay)


def test_tampered_state_is_refused(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    callback = provider_callback(sso_hub, "alice")
    state = parse_qs(urlsplit(callback).query)["state"][0]

    for forged in (state[:-1] + ("A" if state[-1] != "A" else "B"), "", "x" * 99):
        response = fetch(with_query(callback, state=forged))
        error = assert_error(response, 400, "invalid_request")
        assert "state" in error["fields"], error
        assert not session_cookies(response)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert_error(fetch(f"{sso_hub.url}{CALLBACK}?{urlencode({'code': code})}"), 400, "invalid_request")

    # The forgeries did not use up the genuine login.
    token_of(fetch(callback))


def test_code_with_another_logins_state_fails_pkce(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    first = provider_callback(sso_hub, "alice")
    other_state = parse_qs(urlsplit(start_login(sso_hub)).query)["state"][0]
    response = fetch(with_query(first, state=other_state))
    assert_error(response, 401, "oidc_code_refused")
    assert not session_cookies(response)


def test_callback_from_another_issuer_is_refused(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    callback = provider_callback(sso_hub, "alice")
    response = fetch(with_query(callback, iss="https://evil.example"))
    assert_error(response, 401, "oidc_invalid_token")
    assert not session_cookies(response)


def test_provider_error_is_refused(sso_hub: HubProcess) -> None:
    state = parse_qs(urlsplit(start_login(sso_hub)).query)["state"][0]
    query = urlencode({"error": "access_denied", "error_description": "the user said no", "state": state})
    response = fetch(f"{sso_hub.url}{CALLBACK}?{query}")
    error = assert_error(response, 401, "oidc_refused")
    assert "access_denied" in error["message"]
    assert not session_cookies(response)


def test_user_without_a_role_is_refused_and_audited(sso_hub: HubProcess, oidc_provider: OidcProvider, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH], oidc_default_roles=[])
    response = fetch(provider_callback(sso_hub, "carol"))
    error = assert_error(response, 403, "oidc_no_role")
    assert not session_cookies(response)
    assert "location" not in response.headers
    assert users_named(sso_hub, "carol") == []

    subject = f"{oidc_provider.issuer}|carol"
    failures = audit_events(sso_hub, action="auth.login", outcome="failure")
    refused = [e for e in failures if e["target"] == {"type": "oidc_subject", "id": subject}]
    assert len(refused) == 1, failures
    event = refused[0]
    assert event["actor"] == {"type": "anonymous", "id": None, "name": "carol"}
    assert event["reason"] == error["message"]
    assert event["after"]["sub"] == "carol"
    assert event["after"]["groups"] == ["contractors"]
    assert event["source_ip"] == "127.0.0.1"

    # Default roles let the same person in, on every site.
    policies(oidc_default_roles=["viewer"])
    data = me(sso_hub, sso_login(sso_hub, "carol"))
    assert data["user"]["roles"] == ["viewer"] and data["user"]["sites"] is None


def test_disabled_user_is_refused_and_audited(sso_hub: HubProcess, policies: Any) -> None:
    policies(oidc_mappings=[OPS_ON_NORTH])
    user_id = me(sso_hub, sso_login(sso_hub, "dave"))["user"]["id"]
    with sso_hub.admin() as admin:
        disabled = admin.patch(f"/api/v1/auth/users/{user_id}/status", json={"status": "disabled"})
    assert disabled.status_code == 200, disabled.text

    response = fetch(provider_callback(sso_hub, "dave"))
    assert_error(response, 403, "user_disabled")
    assert not session_cookies(response)

    refused = [e for e in audit_events(sso_hub, action="auth.login", outcome="failure") if e["target"]["id"] == user_id]
    assert [e["reason"] for e in refused] == ["user disabled"]


# -- discovery -------------------------------------------------------------------------------------


def test_discovery_needs_auth_manage(sso_hub: HubProcess, oidc_provider: OidcProvider, policies: Any) -> None:
    anonymous = httpx.get(f"{sso_hub.url}/api/v1/auth/oidc/discovery", timeout=10)
    assert_error(anonymous, 401, "unauthenticated")

    policies(oidc_mappings=[VIEWERS])
    viewer_token = sso_login(sso_hub, "bob")
    with sso_hub.client(viewer_token) as viewer:
        denied = viewer.get("/api/v1/auth/oidc/discovery")
    error = assert_error(denied, 403, "forbidden")
    assert error["required"] == ["auth:manage"]

    with sso_hub.admin() as admin:
        response = admin.get("/api/v1/auth/oidc/discovery")
    assert response.status_code == 200, response.text
    document = response.json()["data"]
    assert document["issuer"] == oidc_provider.issuer
    assert document == oidc_provider.discovery()


def raw_get(url: str) -> tuple[int, dict[str, str]]:
    """GET without any URL parsing of the answer (httpx refuses a Location with control characters)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.mark.parametrize("return_to", ["/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/"])
def test_return_to_with_control_characters_falls_back_to_root(sso_hub: HubProcess, policies: Any, return_to: str) -> None:
    # Browsers drop tabs and newlines from URLs: "/\t/evil.example/" is followed as "//evil.example/", off the hub,
    # with the session token in the fragment.
    policies(oidc_mappings=[OPS_ON_NORTH])
    status, headers = raw_get(provider_callback(sso_hub, "alice", return_to=return_to))
    location = headers.get("location", "")
    assert status == 302, (status, headers)
    assert location.startswith("/#token=hks_"), location


def test_client_secret_with_reserved_characters(tmp_path: Path) -> None:
    # RFC 6749 2.3.1: client_secret_basic form-urlencodes the id and secret before base64 ("+" is a space, "%" escapes).
    port = free_port()
    provider = OidcProvider(
        tmp_path / "provider",
        redirect_uris=[f"http://127.0.0.1:{port}{CALLBACK}"],
        client_secret="Zm9v+YmFy/c2VjcmV0=%41:b",
        users=USERS,
    )
    provider.start()
    try:
        env = {
            "HARK_OIDC_ISSUER": provider.issuer,
            "HARK_OIDC_CLIENT_ID": provider.client_id,
            "HARK_OIDC_CLIENT_SECRET": provider.client_secret,
            "HARK_OIDC_SCOPES": SCOPES,
        }
        with running_hub(tmp_path / "hub", port=port, env_extra=env) as hub:
            with hub.admin() as admin:
                patched = admin.patch("/api/v1/auth/access-policies", json={"oidc_default_roles": ["viewer"]})
                assert patched.status_code == 200, patched.text
            response = fetch(provider_callback(hub, "alice"))
            assert me(hub, token_of(response))["user"]["roles"] == ["viewer"]
    finally:
        code = provider.stop()
    assert code == 0, f"oidc provider exited with {code}:\n{provider.log()}"


class _BrokenProvider(http.server.BaseHTTPRequestHandler):
    """An identity provider whose discovery document is whatever the test put in `answers`, in turn."""

    answers: list[bytes] = []

    def do_GET(self) -> None:
        body = self.answers.pop(0) if self.answers else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_broken_provider_answers_502_never_500(tmp_path: Path) -> None:
    answers = [
        b'{"a":' * 1000 + b"1" + b"}" * 1000,  # deeper than any decoder recurses
        b"{not json",
        b'["a", "list"]',
        b"\xff\xfe",
        b'{"issuer": "ISSUER"}',  # no endpoints
    ]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BrokenProvider)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    _BrokenProvider.answers = [a.replace(b"ISSUER", issuer.encode()) for a in answers]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {"HARK_OIDC_ISSUER": issuer, "HARK_OIDC_CLIENT_ID": "hark", "HARK_OIDC_CLIENT_SECRET": "secret"}
    try:
        with running_hub(tmp_path / "hub", env_extra=env) as hub:
            for _ in answers:
                login = httpx.get(f"{hub.url}/api/v1/auth/oidc/login", params={"return_to": "/"}, follow_redirects=False)
                assert_error(login, 502, "oidc_unavailable")
            assert "Traceback" not in hub.log()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
