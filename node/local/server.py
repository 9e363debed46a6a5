"""The node's local HTTP endpoint: a small route table, one base handler with the error shape.

Routes under `/local/v1`: `info` (public, no secrets), `provision` and `reset` (claim code
or credential). More routes (the technician's pages) join `ROUTES` with handlers that
subclass `LocalHandler` and receive the same `LocalContext`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import tornado.web
from hark_fleet.node.errors import NodeError
from hark_fleet.node.local.errors import InvalidRequest, LocalError, MethodNotAllowed, NotFound, PayloadTooLarge
from hark_fleet.node.local.provision import Handover, Provisioning
from hark_fleet.node.state import StateStore
from hark_fleet.protocol.decoding import PayloadError, decode
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

if TYPE_CHECKING:
    from hark_fleet.node.local.technician import TechnicianAccess

log = logging.getLogger(__name__)

LOCAL_PREFIX = "/local/v1"
MAX_BODY_BYTES = 64 * 1024  # a route's JSON body; larger ones are answered 413
MAX_REQUEST_BYTES = 1024 * 1024  # what the server reads at all (past it Tornado drops the connection)


@dataclass(frozen=True, slots=True)
class LocalContext:
    """What every local handler may use."""

    store: StateStore
    provisioning: Provisioning
    version: str
    audio_summary: Callable[[], str]
    data_dir: Path = Path(".")
    technician: TechnicianAccess | None = None
    agent: Callable[[], Any] = field(default=lambda: None)  # the running Agent, or None


class _EveryMethod(tuple[str, ...]):
    """Contains every method name, so Tornado hands each request to `prepare` (405 with `Allow` there)."""

    def __contains__(self, method: object) -> bool:
        return True


class LocalHandler(tornado.web.RequestHandler):
    """Base of every local route: JSON in and out, errors as `{"error": {"code", "message", ...}}`."""

    SUPPORTED_METHODS = _EveryMethod()  # Tornado answered TRACE and the like itself, without `Allow`
    methods: ClassVar[frozenset[str]] = frozenset()
    ctx: LocalContext

    def initialize(self, ctx: LocalContext) -> None:
        self.ctx = ctx

    def prepare(self) -> None:
        if self.request.method not in self.methods:
            raise MethodNotAllowed(
                f"{self.request.method} is not allowed here.", headers={"Allow": ", ".join(sorted(self.methods))}
            )
        if len(self.request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")

    def parse_body(self, type_: type[Any]) -> Any:
        """The JSON body as `type_` (bounded in size and depth); every problem is a 400, or 413 when too large."""
        try:
            return decode(self.request.body or b"{}", type_, max_bytes=MAX_BODY_BYTES)
        except PayloadError as err:
            if err.reason == "too_large":
                raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.") from err
            if err.reason == "invalid_json":
                raise InvalidRequest("The body is not JSON.") from err
            raise InvalidRequest(f"Invalid body: {err}") from err

    def bearer(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        return header[7:].strip() or None if header.lower().startswith("bearer ") else None

    @property
    def source(self) -> str:
        return self.request.remote_ip or "unknown"

    def write_data(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"data": data}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, LocalError):
            body = error.body()
            for name, value in error.headers.items():
                self.set_header(name, value)
        else:
            body = {"error": {"code": "internal_error" if status_code >= 500 else "invalid_request", "message": self._reason}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, LocalError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LocalError):
            return  # an answer, not a failure
        super().log_exception(typ, value, tb)


class UnknownRouteHandler(LocalHandler):
    def prepare(self) -> None:
        raise NotFound("No such local route.")


class InfoHandler(LocalHandler):
    """`GET /local/v1/info`: hardware id, provisioning state, node id, version, audio (no secrets)."""

    methods = frozenset({"GET"})

    def get(self) -> None:
        state = self.ctx.store.state
        self.write_data(
            {
                "hardware_id": state.hardware_id,
                "state": state.provisioning_state,
                "node_id": state.node_id,
                "version": self.ctx.version,
                "audio": self.ctx.audio_summary(),
                "hub_url": state.hub_url,
            }
        )


class ProvisionBody(msgspec.Struct, forbid_unknown_fields=True):
    claim_code: str
    node_id: str
    credential: str
    hub_url: str
    mqtt_url: str | None = None
    ca_pem: str | None = None


class ProvisionHandler(LocalHandler):
    """`POST /local/v1/provision`: take an identity, authenticated by the claim code."""

    methods = frozenset({"POST"})

    async def post(self) -> None:
        body = self.parse_body(ProvisionBody)
        handover = Handover(body.node_id, body.credential, body.hub_url, body.mqtt_url, body.ca_pem)
        state = await self.ctx.provisioning.provision(handover, body.claim_code, self.source)
        self.write_data({"state": state.provisioning_state, "node_id": state.node_id, "hardware_id": state.hardware_id})


class ResetBody(msgspec.Struct, forbid_unknown_fields=True):
    claim_code: str | None = None


class ResetHandler(LocalHandler):
    """`POST /local/v1/reset`: factory reset with the node's credential (bearer), its claim code or a technician session."""

    methods = frozenset({"POST"})

    async def post(self) -> None:
        body = self.parse_body(ResetBody)
        credential = self.bearer()
        technician = self.ctx.technician
        session_id = self.get_cookie("hark_technician") or credential
        if technician is not None and not body.claim_code and technician.has_session(session_id):
            who = technician.session(session_id).who
            technician.log.add("factory_reset", who, self.source)
            credential = self.ctx.store.state.credential
        state = await self.ctx.provisioning.reset(body.claim_code, credential, self.source)
        self.write_data({"state": state.provisioning_state, "hardware_id": state.hardware_id})


ROUTES: tuple[tuple[str, type[LocalHandler]], ...] = (
    (f"{LOCAL_PREFIX}/info", InfoHandler),
    (f"{LOCAL_PREFIX}/provision", ProvisionHandler),
    (f"{LOCAL_PREFIX}/reset", ResetHandler),
)


def make_local_app(ctx: LocalContext) -> tornado.web.Application:
    """The local endpoint's application: every route bound to `ctx`."""
    from hark_fleet.node.local.technician_api import TECHNICIAN_ROUTES, PageHandler  # noqa: PLC0415 - they subclass LocalHandler

    routes = ROUTES + (TECHNICIAN_ROUTES if ctx.technician is not None else ())
    handlers: list[Any] = [(re.escape(path) + "$", handler, {"ctx": ctx}) for path, handler in routes]
    if ctx.technician is not None:
        handlers += [(r"/$", PageHandler, {"ctx": ctx}), (r"/local/page/([a-z0-9_.-]+)$", PageHandler, {"ctx": ctx})]
    return tornado.web.Application(handlers, default_handler_class=UnknownRouteHandler, default_handler_args={"ctx": ctx})


class LocalServer:
    """The local endpoint on `host:port` (port 0: a free one, see `port`)."""

    def __init__(self, ctx: LocalContext) -> None:
        self.ctx = ctx
        self.port = 0
        self._server: HTTPServer | None = None

    def start(self, host: str, port: int) -> None:
        try:
            sockets = bind_sockets(port, host)
        except OSError as err:
            raise NodeError(f"cannot listen on {host}:{port} for the local endpoint: {err.strerror}") from err
        self._server = HTTPServer(make_local_app(self.ctx), max_body_size=MAX_REQUEST_BYTES, idle_connection_timeout=30)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        log.info("local endpoint on http://%s:%d%s", host, self.port, LOCAL_PREFIX)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
