"""JSON over HTTP for the provisioning code (tornado's client; errors become RequestFailed)."""

from __future__ import annotations

import json
from typing import Any

from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.provision.errors import RequestFailed
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # what a hub or a node may answer (a large fleet's listing fits)
_trust: dict[str, str | None] = {"ca_certs": None}


def trust_ca(path: str | None) -> None:
    """Verify the hub's HTTPS certificate against this CA file (the hub's own `ca/ca.pem`) instead of the system's."""
    _trust["ca_certs"] = path


async def call_json(method: str, url: str, body: Any = None, token: str | None = None, timeout_s: float = TIMEOUT_S) -> Any:
    """Send `body` as JSON, return the decoded answer (None for 204); RequestFailed with status and code otherwise."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload: bytes | None = None
    if body is not None:
        payload = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    elif method in ("POST", "PUT", "PATCH"):
        payload = b""
    request = HTTPRequest(
        url,
        method=method,
        headers=headers,
        body=payload,
        connect_timeout=timeout_s,
        request_timeout=timeout_s,
        ca_certs=_trust["ca_certs"],
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError) as err:
        raise RequestFailed(f"{method} {url}: no answer: {err}") from err
    if response.code == 599:
        raise RequestFailed(f"{method} {url}: no answer: {response.error}")
    data: Any = None
    if response.body:
        try:
            data = decode(response.body, max_bytes=MAX_ANSWER_BYTES)
        except PayloadError as err:
            problem = f"answer is not usable JSON ({err.reason}, {response.code})"
            raise RequestFailed(f"{method} {url}: {problem}", response.code) from err
    if response.code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        message = error.get("message") or response.reason
        fields = error.get("fields")
        if isinstance(fields, dict) and fields:  # which field was refused and why, e.g. `site: no site north`
            message = f"{message} ({'; '.join(f'{name}: {why}' for name, why in fields.items())})"
        raise RequestFailed(f"{method} {url}: {response.code} {message}", response.code, error.get("code", ""))
    return data
