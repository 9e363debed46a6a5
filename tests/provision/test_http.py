"""The provisioning tool's JSON calls against a real HTTP server that answers garbage (a stranger on the LAN)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hark_fleet.provision.errors import RequestFailed
from hark_fleet.provision.http import call_json


class _Stranger(http.server.BaseHTTPRequestHandler):
    """Answers every request with `body` and `status`."""

    body = b"{}"
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def stranger() -> Iterator[tuple[str, type[_Stranger]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/local/v1/info", _Stranger
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize(
    "body",
    [b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[" * 1000 + b"]" * 1000, b"\xff\xfe", b"{" + b" " * 20_000_000 + b"}"],
    ids=["deep-object", "deep-list", "not-utf8", "huge"],
)
def test_a_deep_huge_or_garbled_answer_is_a_request_failure(
    stranger: tuple[str, type[_Stranger]], body: bytes, status: int
) -> None:
    url, handler = stranger
    handler.body, handler.status = body, status
    with pytest.raises(RequestFailed):
        asyncio.run(call_json("GET", url))


def test_a_refusal_names_the_fields_the_hub_refused(stranger: tuple[str, type[_Stranger]]) -> None:
    url, handler = stranger
    handler.status = 400
    handler.body = b'{"error": {"code": "invalid_request", "message": "Unknown sites.", "fields": {"site": "no site north"}}}'
    with pytest.raises(RequestFailed, match=r"400 Unknown sites\. \(site: no site north\)") as raised:
        asyncio.run(call_json("GET", url))
    assert (raised.value.status, raised.value.code) == (400, "invalid_request")
