"""Single sign-on with an OpenID Connect provider: config, login redirect, callback, discovery."""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote

from hark_fleet.hub.api.base import PUBLIC, BaseHandler
from hark_fleet.hub.auth.oidc import OidcClient, authorization_url, pkce_pair
from hark_fleet.hub.errors import NotFound, Unauthenticated
from hark_fleet.hub.services import oidc_logins


class OidcHandler(BaseHandler):
    def client(self) -> OidcClient:
        if self.hub.oidc is None:
            raise NotFound("Single sign-on is not configured on this hub (HARK_OIDC_ISSUER).")
        return self.hub.oidc


class OidcConfigHandler(OidcHandler):
    """`GET /api/v1/auth/oidc/config`: whether single sign-on is on, and where it starts."""

    permissions = {"get": PUBLIC}

    def get(self) -> None:
        oidc = self.hub.oidc
        if oidc is None:
            self.write_data({"enabled": False})
            return
        settings = oidc.settings
        self.write_data(
            {
                "enabled": True,
                "issuer": settings.issuer,
                "client_id": settings.client_id,
                "scopes": settings.scopes.split(),
                "login_url": "/api/v1/auth/oidc/login",
                "redirect_url": settings.redirect_url,
            }
        )


_PATH = re.compile(r"^/(?![/\\])[A-Za-z0-9/._~!$&'()*+,;=:@%-]*(\?[A-Za-z0-9/._~!$&'()*+,;=:@%?-]*)?$")


def _safe_return_to(value: str | None) -> str:
    """Only a plain path on this hub (no scheme, host, backslash, control character or fragment)."""
    if value and len(value) <= 500 and _PATH.match(value):
        return value
    return "/"


class OidcLoginHandler(OidcHandler):
    """`GET /api/v1/auth/oidc/login?return_to=/`: redirect to the provider (code flow with PKCE)."""

    permissions = {"get": PUBLIC}

    async def get(self) -> None:
        client = self.client()
        discovery = await client.discovery()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier, challenge = pkce_pair()
        await self.hub.db.run(
            oidc_logins.begin, state, nonce, verifier, _safe_return_to(self.get_query_argument("return_to", None))
        )
        self.redirect(authorization_url(discovery["authorization_endpoint"], client.settings, state, nonce, challenge))


class OidcCallbackHandler(OidcHandler):
    """`GET /api/v1/auth/oidc/callback?code&state`: finish the login, set the session cookie, go back."""

    permissions = {"get": PUBLIC}

    async def get(self) -> None:
        client = self.client()
        pending = await self.hub.db.run(oidc_logins.take, self.get_query_argument("state", ""))
        error = self.get_query_argument("error", None)
        if error:
            description = self.get_query_argument("error_description", "")
            raise Unauthenticated(f"The identity provider refused the login: {error} {description}".strip(), code="oidc_refused")
        issuer = self.get_query_argument("iss", None)
        if issuer is not None and issuer != client.settings.issuer:
            raise Unauthenticated("The answer came from another issuer.", code="oidc_invalid_token")
        tokens = await client.exchange_code(self.get_query_argument("code", ""), pending.code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("The identity provider sent no ID token.", code="oidc_invalid_token")
        claims = await client.verified_claims(id_token, pending.nonce)
        result = await self.hub.db.run(
            oidc_logins.sign_in, client.settings.issuer, claims, self.request.remote_ip, self.request.headers.get("User-Agent")
        )
        self.set_session_cookie(result.token, result.expires_at, same_site="Lax")
        self.redirect(f"{pending.return_to}#token={quote(result.token)}")


class OidcDiscoveryHandler(OidcHandler):
    """`GET /api/v1/auth/oidc/discovery`: the provider's discovery document, fetched now."""

    permissions = {"get": "auth:manage"}

    async def get(self) -> None:
        self.write_data(await self.client().discovery(refresh=True))
