"""One HTTP request to a checked destination: connect only to the addresses the outbound check pinned.

`outbound.check_destination` resolves the host once and vets every address; `post` then hands tornado a
resolver that answers with exactly those addresses (and refuses any other host), so nothing is resolved
again between the check and the connection. TLS still verifies the certificate against the URL's host name
(the system's trust store). Redirects are never followed; a 3xx is an answer like any other. The response
body is capped, and so is the time spent.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any

from hark_fleet.hub.notify.outbound import Destination, check_destination
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.netutil import Resolver
from tornado.simple_httpclient import HTTPTimeoutError, SimpleAsyncHTTPClient

MAX_BODY_BYTES = 256 * 1024
USER_AGENT = "hark-hub (notifications)"


class PinnedResolver(Resolver):
    """Answers with the checked addresses of one destination, and nothing for any other host."""

    def initialize(self, destination: Destination) -> None:
        self.destination = destination

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC) -> list[tuple[int, Any]]:
        if host.lower().rstrip(".") != self.destination.host or port != self.destination.port:
            raise OSError(f"{host}:{port} is not the checked destination")
        out: list[tuple[int, Any]] = []
        for address in self.destination.addresses:
            af = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_UNSPEC, af):
                out.append((af, (address, port)))
        if not out:
            raise OSError(f"no checked address of {host} in the requested family")
        return out


@dataclass(frozen=True, slots=True)
class Response:
    """What came back: the status (None when nothing did), headers, body, or the transport error."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None
    latency_ms: float


async def checked(url: str, allow_private: bool) -> Destination:
    """`check_destination` off the event loop (it resolves the host name)."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: check_destination(url, allow_private=allow_private))


async def send(
    destination: Destination, method: str, url: str, headers: dict[str, str], body: bytes, timeout_s: float
) -> Response:
    """Send one request to `url`, connecting only to `destination`'s addresses."""
    client = SimpleAsyncHTTPClient(
        force_instance=True, resolver=PinnedResolver(destination=destination), max_body_size=MAX_BODY_BYTES
    )
    request = HTTPRequest(
        url,
        method=method,
        headers={"User-Agent": USER_AGENT, **headers},
        body=body,
        connect_timeout=timeout_s,
        request_timeout=timeout_s,
        follow_redirects=False,
        validate_cert=True,
        decompress_response=True,
        allow_nonstandard_methods=False,
    )
    started = time.perf_counter()
    try:
        response = await client.fetch(request, raise_error=False)
    except HTTPTimeoutError:
        return Response(None, {}, b"", f"timed out after {timeout_s:g} s", _since(started))
    except HTTPClientError as err:
        if err.response is None or err.code == 599:
            return Response(None, {}, b"", _error_text(err), _since(started))
        response = err.response
    except (TimeoutError, OSError, ValueError) as err:
        return Response(None, {}, b"", _error_text(err), _since(started))
    finally:
        client.close()
    if response.code == 599:
        return Response(None, {}, b"", _error_text(response.error), _since(started))
    return Response(response.code, dict(response.headers.get_all()), response.body or b"", None, _since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def _error_text(err: BaseException | None) -> str:
    if err is None:
        return "no response"
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text
