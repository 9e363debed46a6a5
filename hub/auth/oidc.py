"""OpenID Connect relying party: authorization code with PKCE, ID token verification, claim mapping."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from hark_fleet.hub.errors import ApiError, Forbidden, Unauthenticated
from hark_fleet.protocol.decoding import PayloadError, decode
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
DISCOVERY_TTL_S = 3600.0
LEEWAY_S = 60
MAX_DOCUMENT_BYTES = 1024 * 1024  # discovery, keys, token answers
DISCOVERY_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


class OidcUnavailable(ApiError):
    status = 502
    code = "oidc_unavailable"


def _document(body: bytes, url: str) -> dict[str, Any]:
    """A JSON object the provider sent (bounded in size and depth); anything else means it is not usable now."""
    try:
        return decode(body, dict[str, Any], max_bytes=MAX_DOCUMENT_BYTES)
    except PayloadError as err:
        raise OidcUnavailable(f"The identity provider's answer from {url} is not usable: {err.reason}") from err


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    redirect_url: str


def client_secret_basic(client_id: str, client_secret: str) -> str:
    """The Authorization header of RFC 6749 2.3.1: both parts form-urlencoded before Basic encoding."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(endpoint: str, settings: OidcSettings, state: str, nonce: str, challenge: str) -> str:
    query = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": settings.redirect_url,
        "scope": settings.scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"


def verify_id_token(token: str, jwks: dict[str, Any], settings: OidcSettings, nonce: str) -> dict[str, Any]:
    """The ID token's claims, after checking signature, issuer, audience, expiry and nonce."""
    try:
        header = jwt.get_unverified_header(token)
        keys = jwt.PyJWKSet.from_dict(jwks)
        kid = header.get("kid")
        candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise Unauthenticated("The identity provider signed with an unknown key.", code="oidc_invalid_token")
        claims = jwt.decode(
            token,
            key=candidates[0],
            algorithms=ALLOWED_ALGORITHMS,
            audience=settings.client_id,
            issuer=settings.issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except (jwt.PyJWTError, jwt.PyJWKSetError) as err:
        raise Unauthenticated(f"The ID token was refused: {err}", code="oidc_invalid_token") from err
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise Unauthenticated("The ID token's nonce does not match this login.", code="oidc_invalid_token")
    azp = claims.get("azp")
    if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and azp != settings.client_id:
        raise Unauthenticated("The ID token was issued to another client.", code="oidc_invalid_token")
    return claims


def _claim_values(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def map_claims(claims: dict[str, Any], policies: Any) -> tuple[list[str], list[str] | None]:
    """Roles and sites (None: every site) for these claims under the access policies."""
    roles: list[str] = []
    sites: set[str] | None = set()
    matched = False
    for mapping in policies.oidc_mappings:
        if mapping.value in _claim_values(claims, mapping.claim):
            matched = True
            roles += mapping.roles
            if mapping.sites is None:
                sites = None
            elif sites is not None:
                sites |= set(mapping.sites)
    if not matched:
        roles = list(policies.oidc_default_roles)
        sites = None
    if policies.oidc_sites_claim:
        claimed = set(_claim_values(claims, policies.oidc_sites_claim))
        sites = claimed if sites is None else sites & claimed
    if not roles:
        raise Forbidden("Your identity provider account maps to no hark role; ask an admin.", code="oidc_no_role")
    return list(dict.fromkeys(roles)), None if sites is None else sorted(sites)


def username_from_claims(claims: dict[str, Any]) -> str:
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value[:150]
    raise Unauthenticated("The ID token names no user.", code="oidc_invalid_token")


class OidcClient:
    """Talks to the identity provider: discovery, keys and the token endpoint (cached)."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await AsyncHTTPClient().fetch(url, request_timeout=10)
        except (HTTPClientError, OSError) as err:
            raise OidcUnavailable(f"The identity provider did not answer {url}: {err}") from err
        return _document(response.body, url)

    async def discovery(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if refresh or self._discovery is None or now - self._discovery[0] > DISCOVERY_TTL_S:
            document = await self._get_json(f"{self.settings.issuer}/.well-known/openid-configuration")
            if document.get("issuer") != self.settings.issuer:
                raise OidcUnavailable("The identity provider's discovery document names another issuer.")
            missing = [key for key in DISCOVERY_ENDPOINTS if not isinstance(document.get(key), str)]
            if missing:
                raise OidcUnavailable(f"The identity provider's discovery document has no {', '.join(missing)}.")
            self._discovery = (now, document)
        return self._discovery[1]

    async def jwks(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if refresh or self._jwks is None or now - self._jwks[0] > DISCOVERY_TTL_S:
            self._jwks = (now, await self._get_json((await self.discovery())["jwks_uri"]))
        return self._jwks[1]

    async def exchange_code(self, code: str, verifier: str) -> dict[str, Any]:
        endpoint = (await self.discovery())["token_endpoint"]
        body = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.redirect_url,
                "code_verifier": verifier,
            }
        )
        request = HTTPRequest(
            endpoint,
            method="POST",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "Authorization": client_secret_basic(self.settings.client_id, self.settings.client_secret),
            },
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            detail = err.response.body.decode(errors="replace")[:300] if err.response is not None else str(err)
            raise Unauthenticated(f"The identity provider refused the code: {detail}", code="oidc_code_refused") from err
        except OSError as err:
            raise OidcUnavailable(f"The identity provider's token endpoint did not answer: {err}") from err
        return _document(response.body, endpoint)

    async def verified_claims(self, id_token: str, nonce: str) -> dict[str, Any]:
        """Verify an ID token, fetching the provider's keys again once if the key is new."""
        try:
            return verify_id_token(id_token, await self.jwks(), self.settings, nonce)
        except Unauthenticated:
            return verify_id_token(id_token, await self.jwks(refresh=True), self.settings, nonce)


def claim_summary(
    claims: dict[str, Any], names: Iterable[str] = ("sub", "email", "preferred_username", "groups")
) -> dict[str, Any]:
    """The claims worth keeping in the audit log."""
    return {n: claims[n] for n in names if n in claims}
