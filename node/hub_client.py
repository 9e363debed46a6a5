"""The node's HTTP client for the hub's agent routes (bearer node credential)."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
from hark_fleet.node import const
from hark_fleet.node.clock import clock_offset_ms, parse_utc
from hark_fleet.node.errors import HubProtocolError, HubRejected, HubUnreachable, NodeError
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.tls import client_context, split_bundle
from hark_fleet.protocol.version import __version__
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1024 * 1024  # a JSON answer from the hub (config, jobs, technician access)
LISTEN_CHUNK_TIMEOUT_S = 5.0  # live audio older than this is worthless: the POST gives up


class RemoteConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The `data` of `GET /api/v1/nodes/{id}/config`."""

    node_id: str
    mqtt_url: str
    name: str | None = None
    site: str | None = None
    tags: Any = None
    heartbeat_interval_s: float | None = None
    meter_interval_ms: int | None = None
    cache_policy: dict[str, Any] | None = None
    hub_time: str | None = None
    # The watchdog policy (a NodeWatchdog), checked by the watchdog itself: one it refuses does not stop the rest.
    watchdog: dict[str, Any] | None = None
    # This node's recordings under legal hold (issue 20): its cache never evicts them. None: the hub does not say.
    held_recordings: list[str] | None = None


class _ConfigEnvelope(msgspec.Struct, forbid_unknown_fields=False):
    data: RemoteConfig


@dataclass(frozen=True, slots=True)
class FetchedConfig:
    """The node's settings from the hub, and what the request said about the two clocks."""

    config: RemoteConfig
    clock_offset_ms: float | None
    round_trip_ms: float


def pinned_context(ca_bundle: str | None) -> ssl.SSLContext | None:
    """The node's TLS context from what its claim handed over: trusts only the hub's CA, shows its certificate."""
    if not ca_bundle:
        return None
    ca_pem, cert_pem, key_pem = split_bundle(ca_bundle)
    return client_context(ca_pem, cert_pem, key_pem)


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def plain_refused(url: str, tls: ssl.SSLContext | None, allow_plain: bool) -> bool:
    """A node holding the hub's CA talks plain only on loopback or when HARK_ALLOW_PLAIN says so."""
    parts = urlsplit(url)
    return tls is not None and parts.scheme in ("http", "mqtt") and not allow_plain and not is_loopback(parts.hostname)


CredentialHandler = Callable[[str, bool], None]  # a credential, and whether the hub took it (False: 401)


class HubClient:
    """Requests to the hub as this node; the credential can change at any time (rotation).

    `on_credential` hears the credential a request carried and whether the hub took it (a 2xx
    answer) or refused it (401); other answers say nothing about the credential.
    """

    def __init__(
        self,
        base_url: str,
        node_id: str,
        credential: str,
        tls: ssl.SSLContext | None = None,
        allow_plain: bool = False,
        on_credential: CredentialHandler | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.node_id = node_id
        self._credential = credential
        self.on_credential = on_credential
        self._tls = tls
        self._allow_plain = allow_plain
        self._http: AsyncHTTPClient | None = None  # made on first use, on the running loop

    def set_credential(self, credential: str) -> None:
        self._credential = credential

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/nodes/{quote(self.node_id, safe='')}/{path}"

    async def try_credential(self, credential: str) -> bool:
        """Ask the hub whether it takes `credential`: the answer goes to `on_credential`; False when there is none."""
        try:
            await self.fetch("GET", self.url("config"), credential=credential)
        except HubRejected as err:
            if err.status == 401:
                return True
            log.info("the hub could not say whether it takes the new credential: %s", err)
            return False
        except NodeError as err:
            log.info("the hub could not say whether it takes the new credential: %s", err)
            return False
        return True

    async def fetch_config(self) -> FetchedConfig:
        """GET the node's config; HubUnreachable, HubRejected or HubProtocolError when it fails."""
        sent_at = time.time()
        body = await self._get(self.url("config"))
        received_at = time.time()
        config = hub_answer(body, _ConfigEnvelope, "hub config answer").data
        if config.node_id != self.node_id:
            raise HubProtocolError(f"hub config is for node {config.node_id!r}, not {self.node_id!r}")
        offset: float | None = None
        if config.hub_time:
            try:
                offset = clock_offset_ms(sent_at, received_at, parse_utc(config.hub_time))
            except ValueError:
                log.warning("hub_time %r is not an ISO 8601 time with a zone", config.hub_time)
        return FetchedConfig(config, offset, round((received_at - sent_at) * 1000.0, 1))

    async def fetch_channel_map(self) -> dict[str, Any] | None:
        """The channel map assigned to this node (a template), or None when none is assigned."""
        body = await self._get(self.url("channel-map-assignments"))
        data = answer_data(body, "hub channel map answer")
        if isinstance(data, dict) and isinstance(data.get("template"), dict):
            data = data["template"]
        if data is not None and not isinstance(data, dict):
            raise HubProtocolError("hub channel map answer is not an object")
        return data

    async def post_listen_chunk(self, stream_id: str, chunk: bytes) -> None:
        """POST one live-listen chunk (issue 23) to the agent route; HubUnreachable, HubRejected as for every request."""
        await self.fetch(
            "POST",
            self.url(f"listen/chunk?stream={quote(stream_id, safe='')}"),
            body=chunk,
            headers={"Content-Type": "application/octet-stream"},
            request_timeout=LISTEN_CHUNK_TIMEOUT_S,
            expected=(200, 201, 202, 204),
        )

    def api_url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/{path}"

    async def _get(self, url: str) -> bytes:
        return (await self.fetch("GET", url)).body or b""

    async def fetch(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        body_producer: Any = None,
        request_timeout: float = const.HTTP_REQUEST_TIMEOUT_S,
        expected: tuple[int, ...] = (200,),
        credential: str | None = None,
    ) -> HTTPResponse:
        """One request as this node (or with `credential`): HubUnreachable (network, 5xx), HubRejected (4xx), HubProtocolError."""
        credential = credential or self._credential
        if plain_refused(url, self._tls, self._allow_plain):
            raise HubProtocolError(f"{method} {url}: plain HTTP outside loopback refused (TLS expected; HARK_ALLOW_PLAIN)")
        request = HTTPRequest(
            url,
            method=method,
            headers={
                "Authorization": f"Bearer {credential}",
                "Accept": "application/json",
                "User-Agent": f"hark-node/{__version__}",
                **(headers or {}),
            },
            body=body,
            body_producer=body_producer,
            allow_nonstandard_methods=body is None and body_producer is None and method in ("POST", "PUT"),
            connect_timeout=const.HTTP_CONNECT_TIMEOUT_S,
            request_timeout=request_timeout,
            ssl_options=self._tls if url.startswith("https:") else None,
        )
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True)
        try:
            response = await self._http.fetch(request, raise_error=False)
        except HTTPClientError as err:  # timeouts
            raise HubUnreachable(f"{method} {url}: {err}") from err
        except OSError as err:  # refused, unreachable, TLS
            raise HubUnreachable(f"{method} {url}: {err}") from err
        if response.code >= 500 or response.code == 599:
            raise HubUnreachable(f"{method} {url}: HTTP {response.code}")
        if self.on_credential is not None and (response.code == 401 or 200 <= response.code < 300):
            self.on_credential(credential, response.code != 401)
        if response.code >= 400:
            code = _error_code(response.body)
            raise HubRejected(
                f"{method} {url}: HTTP {response.code} {code}".rstrip(), response.code, code, dict(response.headers.get_all())
            )
        if response.code not in expected:
            raise HubProtocolError(f"{method} {url}: unexpected HTTP {response.code}")
        return response

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def _error_code(body: bytes | None) -> str:
    """The `error.code` of an API error body, for the log (never the body itself)."""
    try:
        document = decode(body or b"{}", max_bytes=MAX_ANSWER_BYTES)
        return str(document["error"]["code"])
    except (PayloadError, KeyError, TypeError):
        return ""


def hub_answer(body: bytes | None, schema: Any = Any, what: str = "the hub's answer") -> Any:
    """The hub's JSON answer as `schema`, bounded in size and depth; HubProtocolError when it cannot be used."""
    try:
        return decode(body or b"{}", schema, max_bytes=MAX_ANSWER_BYTES)
    except PayloadError as err:
        raise HubProtocolError(f"{what} is not understood: {err.reason}: {err}") from err


def answer_data(body: bytes | None, what: str = "the hub's answer") -> Any:
    """The `data` member of the hub's JSON answer (None when absent); HubProtocolError when it cannot be used."""
    document = hub_answer(body, what=what)
    if not isinstance(document, dict):
        raise HubProtocolError(f"{what} is not understood: not a JSON object")
    return document.get("data")
