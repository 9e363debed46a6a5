"""The test OIDC provider works end to end on its own: code + PKCE login, token exchange, ID token verification."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import jwt
import pytest

from tests.harness import free_port
from tests.oidc.harness import OidcProvider, browser_login

SCOPE = "openid profile email groups sites"


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    # Nothing listens on the redirect URI: browser_login stops at the redirect to it.
    redirect_uri = f"http://127.0.0.1:{free_port()}/api/v1/auth/oidc/callback"
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), redirect_uris=[redirect_uri, "http://127.0.0.1:1/other"])
    provider.start()
    yield provider
    code = provider.stop()
    assert code == 0, f"oidc provider exited with {code}:\n{provider.log()}"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(provider: OidcProvider, state: str, nonce: str, challenge: str | None) -> str:
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": provider.redirect_uris[0],
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    return f"{provider.discovery()['authorization_endpoint']}?{urlencode(params)}"


def _basic(provider: OidcProvider) -> dict[str, str]:
    # RFC 6749 2.3.1: form-urlencode id and secret before base64.
    raw = f"{quote(provider.client_id, safe='')}:{quote(provider.client_secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _login(provider: OidcProvider, username: str) -> tuple[str, str, str]:
    """Log `username` in; return (code, code_verifier, nonce)."""
    verifier, challenge = _pkce()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    location = browser_login(_authorize_url(provider, state, nonce, challenge), username)
    assert location.startswith(provider.redirect_uris[0] + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    assert query["iss"] == [provider.issuer]  # RFC 9207 authorization response issuer
    assert "error" not in query, query
    return query["code"][0], verifier, nonce


def test_code_flow_with_pkce_yields_verifiable_id_token(oidc_provider: OidcProvider) -> None:
    meta = oidc_provider.discovery()
    assert meta["issuer"] == oidc_provider.issuer
    assert "S256" in meta["code_challenge_methods_supported"]
    assert {"groups", "sites"} <= set(meta["scopes_supported"])

    code, verifier, nonce = _login(oidc_provider, "alice")
    response = httpx.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": oidc_provider.redirect_uris[0],
            "code_verifier": verifier,
        },
        headers=_basic(oidc_provider),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"].lower() == "bearer"

    id_token = tokens["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(id_token)
    claims = jwt.decode(
        id_token,
        key.key,
        algorithms=["RS256"],
        audience=oidc_provider.client_id,
        issuer=oidc_provider.issuer,
        options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
    )
    assert claims["nonce"] == nonce
    assert claims["exp"] > time.time()
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.org"
    assert claims["name"] == "Alice"
    assert claims["groups"] == ["ops"]
    assert claims["sites"] == ["north"]

    # Codes are single use.
    again = httpx.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": oidc_provider.redirect_uris[0],
            "code_verifier": verifier,
        },
        headers=_basic(oidc_provider),
        timeout=10,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_client_secret_post_and_wrong_verifier(oidc_provider: OidcProvider) -> None:
    token_endpoint = oidc_provider.discovery()["token_endpoint"]
    code, verifier, _ = _login(oidc_provider, "bob")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": oidc_provider.redirect_uris[0],
        "client_id": oidc_provider.client_id,
        "client_secret": oidc_provider.client_secret,
    }
    wrong = httpx.post(token_endpoint, data={**form, "code_verifier": _pkce()[0]}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant", wrong.text

    code, verifier, nonce = _login(oidc_provider, "bob")
    response = httpx.post(token_endpoint, data={**form, "code": code, "code_verifier": verifier}, timeout=10)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["id_token"], options={"verify_signature": False})
    assert claims["sub"] == "bob" and claims["nonce"] == nonce and claims["sites"] == ["north", "south"]


def test_pkce_is_required(oidc_provider: OidcProvider) -> None:
    state = secrets.token_urlsafe(16)
    location = browser_login(_authorize_url(oidc_provider, state, "n", challenge=None), "alice")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"], location
    assert query["state"] == [state]
