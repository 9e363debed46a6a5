"""The base handler every route uses: authentication, permissions, bodies, envelopes and errors."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import msgspec
import tornado.web
from hark_fleet.hub.auth.principal import ALL_SITES, Principal, SiteScope
from hark_fleet.hub.clock import parse_iso
from hark_fleet.hub.errors import (
    ApiError,
    Forbidden,
    InsufficientStorage,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    is_storage_full,
)
from hark_fleet.hub.services import audit as audit_service
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.auth import csrf_token
from hark_fleet.protocol.decoding import PayloadError, decode
from tornado.httputil import responses

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)
# Query fields (name=value pairs) one request may carry; more is a 400 here. The HTTP layer parses up to
# hark_fleet.hub.server.QUERY_FIELDS_PARSED of them first, so this answer is in the error shape.
MAX_QUERY_FIELDS = 1000
T = TypeVar("T")

PUBLIC = None  # a method whose permission is PUBLIC needs no authentication
AUTHENTICATED = "authenticated"  # any authenticated caller, whatever its permissions
SESSION_COOKIE = "hark_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    503: "unavailable",
}
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MSGSPEC_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


_encoder = msgspec.json.Encoder()


def json_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of an answer (msgspec; the stdlib for what msgspec refuses, e.g. a dict with bool keys).

    msgspec passes `msgspec.Raw` through as it is (a page encoded on the database thread) and writes NaN and
    infinities as null, where the stdlib wrote the invalid `NaN`.
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class EncodedAnswer:
    """A JSON answer encoded off the event loop (e.g. on the database thread), with the ETag Tornado would give it."""

    body: bytes
    etag: str  # Tornado's form: the quoted hex SHA-1 of the body


def encode_answer(payload: Any) -> EncodedAnswer:
    body = json_dumps(payload)
    return EncodedAnswer(body, f'"{hashlib.sha1(body).hexdigest()}"')  # Tornado's own ETag (RequestHandler.compute_etag)


def encode_page(items: list[Any] | msgspec.Raw, next_cursor: str | None) -> EncodedAnswer:
    """`write_page`'s answer, encoded where it is called."""
    return encode_answer({"data": items, "meta": {"next_cursor": next_cursor}})


def validation_fields(err: msgspec.ValidationError) -> dict[str, str]:
    """Turn msgspec's message into the API's `fields` map (name -> problem)."""
    message = str(err)
    match = _MSGSPEC_PATH.search(message)
    path = match.group("path") if match else ""
    problem = message[: match.start()] if match else message
    named = _MSGSPEC_FIELD.search(problem)
    if problem.startswith("Object missing required field") and named:
        return {_join(path, named.group("name")): "is required"}
    if problem.startswith("Object contains unknown field") and named:
        return {_join(path, named.group("name")): "is not a known field"}
    return {path or "body": problem[0].lower() + problem[1:] if problem else "is invalid"}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def body_error(err: PayloadError) -> ApiError:
    """The API's answer to a body the shared decoder refused: 413 when too large, else 400 naming the problem."""
    if err.reason == "too_large":
        return PayloadTooLarge(f"The body is {err}.")
    if err.reason == "too_deep":
        return InvalidRequest("The body is nested too deeply.", fields={"body": f"is {err}"})
    if err.validation is not None:
        return InvalidRequest("The body does not match what this route expects.", fields=validation_fields(err.validation))
    return InvalidRequest("The body is not valid JSON.", fields={"body": "is not valid JSON"})


class EveryMethod(tuple[str, ...]):
    """Contains every method name, so Tornado hands each request to `prepare` (which answers 405 with `Allow`)."""

    def __contains__(self, method: object) -> bool:
        return True


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Thin handlers subclass this and declare `permissions`: method -> permission (or PUBLIC).

    A method missing from `permissions` is not allowed (405 with `Allow`), so no route is open by
    accident; HEAD is answered wherever GET is, with GET's permission and GET's answer minus its body.
    """

    SUPPORTED_METHODS = EveryMethod()
    permissions: ClassVar[Mapping[str, str | None]] = {}
    max_body_bytes: ClassVar[int] = 1024 * 1024
    accepts_query_token: ClassVar[bool] = False  # streams may take `?token=` (browsers cannot set headers there)
    # Writes that still run on a full disk (on the hub's reserve): those that let an operator make room.
    runs_on_full_disk: ClassVar[frozenset[str]] = frozenset()

    hub: Hub
    route: str
    principal: Principal | None
    permission: str | None
    scope: SiteScope

    def initialize(self, hub: Hub, route: str) -> None:
        self.hub = hub
        self.route = route
        self.principal = None
        self.permission = None
        self.scope = ALL_SITES
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._body_too_large = False
        self._started = time.perf_counter()
        self._counted = False
        self._body_unread = False

    # -- request lifecycle -------------------------------------------------

    async def prepare(self) -> None:
        self.hub.requests_started()
        self._counted = True
        self._body_unread = True
        method = self.request.method.lower()
        if method == "head" and method not in self.permissions:
            method = "get"  # HEAD is GET without the body
        if method not in self.permissions:
            allowed = ", ".join(self.allowed_methods())
            raise MethodNotAllowed(f"{self.request.method} is not allowed here.", headers={"Allow": allowed} if allowed else {})
        fields = sum(len(values) for values in self.request.query_arguments.values())
        if fields > MAX_QUERY_FIELDS:
            raise InvalidRequest(f"The query string has {fields} fields; at most {MAX_QUERY_FIELDS} are taken.")
        declared = self.request.headers.get("Content-Length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidRequest("Content-Length is not a number.")
            if int(declared) > self.max_body_bytes:
                raise PayloadTooLarge(f"The body is larger than {self.max_body_bytes} bytes.", limit=self.max_body_bytes)
        self.permission = self.permissions[method]
        if self.permission is not PUBLIC and not self.open_to_caller():
            self.principal = await self.authenticate()
            await self.authorize(self.permission)
        if self.hub.disk.full and self.writes(method):
            raise InsufficientStorage()
        self._body_unread = False

    def writes(self, method: str) -> bool:
        """Whether `method` here may write (a `*:read` permission never does, whatever the verb)."""
        if method.upper() in SAFE_METHODS or method in self.runs_on_full_disk:
            return False
        return not (isinstance(self.permission, str) and self.permission.endswith(":read"))

    def allowed_methods(self) -> list[str]:
        """The methods this route answers (its `Allow` header): those declared, and HEAD wherever GET is."""
        methods = [m.upper() for m in self.permissions]
        if "GET" in methods and "HEAD" not in methods:
            methods.insert(methods.index("GET") + 1, "HEAD")
        return methods

    async def _head_as_get(self, *args: str, **kwargs: str) -> None:
        """GET's answer; Tornado sends its headers and drops its body."""
        result = self.get(*args, **kwargs)
        if result is not None:
            await result

    head: Callable[..., Awaitable[None] | None] = _head_as_get  # typed as Tornado types its verbs

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large:
            return
        self._body_size += len(chunk)
        if self._body_size <= self.max_body_bytes:
            self._chunks.append(chunk)
            return
        # A body without Content-Length grew past the limit: answer now; Tornado then
        # stops reading and closes the connection once the answer is sent.
        self._body_too_large = True
        self._body_unread = True
        self._chunks.clear()
        error = PayloadTooLarge(f"The body is larger than {self.max_body_bytes} bytes.", limit=self.max_body_bytes)
        self.send_error(error.status, exc_info=(type(error), error, None))

    def on_finish(self) -> None:
        if self._counted:
            self.hub.requests_finished()
        metrics = self.hub.metrics
        method = self.request.method or "?"
        metrics.http_requests.labels(self.route, method, str(self.get_status())).inc()
        metrics.http_latency.labels(self.route, method).observe(time.perf_counter() - self._started)

    # -- authentication ------------------------------------------------------

    def open_to_caller(self) -> bool:
        """Whether this route is open to this caller without credentials (a configured exception)."""
        return False

    def bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if self.accepts_query_token:
            token = self.get_query_argument("token", None)
            if token:
                return token
        return None

    def set_session_cookie(self, token: str, expires_at: datetime, same_site: str = "Strict") -> None:
        """The console's HttpOnly session cookie (Secure when the request came over TLS)."""
        self.set_cookie(
            SESSION_COOKIE,
            token,
            expires=expires_at,
            path="/",
            httponly=True,
            samesite=same_site,
            secure=self.request.protocol == "https",
        )

    def session_cookie(self) -> str | None:
        return self.get_cookie(SESSION_COOKIE) or None

    async def authenticate(self) -> Principal:
        """The caller, from the bearer header (or `?token=` on streams), else the console's cookie."""
        token = self.bearer_token()
        via_cookie = False
        if token is None:
            token = self.session_cookie()
            via_cookie = token is not None
        if token is None:
            raise Unauthenticated("Send a bearer token: Authorization: Bearer <token>.")
        try:
            principal = await self.hub.authenticator.authenticate(token)
        except Unauthenticated as err:
            unwritten = self.hub.authenticator.refusals.admit(self.request.remote_ip)
            if unwritten is not None:  # repeats from one address: one row a minute, with their count
                more = f"; {unwritten} more from this address before this one, not written one by one" if unwritten else ""
                await self.audit(
                    "auth.token",
                    outcome="failure",
                    reason=f"{err.code} on {self.request.method} {self.request.path}{more}",
                    actor=Actor.of(None, self.request.remote_ip),
                )
            raise
        if via_cookie and self.request.method not in SAFE_METHODS:
            sent = self.request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
                raise Forbidden(f"A write with the session cookie needs the {CSRF_HEADER} header.", code="csrf_failed")
        return principal

    async def authorize(self, permission: str) -> None:
        """Allow the request if the caller holds `permission`; otherwise audit the denial and answer 403."""
        principal = self.principal
        if permission == AUTHENTICATED and principal is not None:
            self.scope = ALL_SITES
            return
        if principal is not None and principal.can(permission):
            self.scope = principal.scope(permission)
            return
        if principal is not None and principal.kind == "key":
            error: ApiError = Forbidden(
                f"This API key's scopes do not include {permission}.",
                code="insufficient_scope",
                required=[permission],
                current=list(principal.key_scopes or ()),
            )
        else:
            error = Forbidden(f"This needs the permission {permission}.", required=[permission])
        await self.audit("access.denied", permission=permission, outcome="failure", reason=f"{self.request.method} {self.route}")
        raise error

    @property
    def actor(self) -> Actor:
        return Actor.of(self.principal, self.request.remote_ip)

    async def audit(self, action: str, *, actor: Actor | None = None, **fields: Any) -> None:
        """Write an audit event from the handler (mutations audit inside their service instead)."""
        try:
            await self.hub.db.run(functools.partial(audit_service.record, actor or self.actor, action, **fields))
        except Exception as err:
            if fields.get("outcome") != "failure" or not is_storage_full(err):
                raise
            # A refusal stays a refusal (401, 403) on a full disk; only its audit line is lost.
            log.warning("disk full: audit event %s (failure) not written", action)

    # -- bodies ----------------------------------------------------------------

    def body_bytes(self) -> bytes:
        if self._body_too_large:
            raise PayloadTooLarge(f"The body is larger than {self.max_body_bytes} bytes.", limit=self.max_body_bytes)
        return b"".join(self._chunks)

    def parse_body(self, schema: type[T]) -> T:
        """Decode the JSON body into `schema` (a msgspec Struct); every problem becomes a 400."""
        raw = self.body_bytes()
        if not raw.strip():
            raise InvalidRequest("The request needs a JSON body.", fields={"body": "is required"})
        try:
            return decode(raw, schema, max_bytes=self.max_body_bytes)
        except PayloadError as err:
            raise body_error(err) from err

    def parse_changes(self, schema: type[msgspec.Struct]) -> dict[str, Any]:
        """A PATCH body as the fields it sets (fields left out are `msgspec.UNSET` in `schema`)."""
        body = msgspec.structs.asdict(self.parse_body(schema))
        return {k: v for k, v in body.items() if v is not msgspec.UNSET}

    @staticmethod
    def optional_time(text: str | None, field: str) -> datetime | None:
        """An optional ISO 8601 time from a body field or the query; a bad one is a 400 naming the field."""
        if text is None:
            return None
        try:
            return parse_iso(text)
        except ValueError as err:
            raise InvalidRequest("Invalid time.", fields={field: "must be an ISO 8601 time with a zone"}) from err

    def query_args(self) -> dict[str, list[str]]:
        """Query parameters as text, each a list of its values."""
        try:
            return {k: [v.decode("utf-8") for v in vs] for k, vs in self.request.query_arguments.items()}
        except UnicodeDecodeError as err:
            raise InvalidRequest("Query parameters must be UTF-8.") from err

    def query_flag(self, name: str, default: bool = False) -> bool:
        """A `true|false` query parameter (the last one sent); anything else is a 400 naming it."""
        raw = self.query_args().get(name)
        try:
            return query.boolean(raw[-1]) if raw else default
        except ValueError as err:
            raise InvalidRequest("Some query parameters are invalid.", fields={name: str(err)}) from err

    @overload
    def query_integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int: ...
    @overload
    def query_integer(self, name: str, default: None, minimum: int | None = None, maximum: int | None = None) -> int | None: ...
    def query_integer(self, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None) -> int | None:
        """A whole-number query parameter (`5` or `5.0`) within bounds; anything else is a 400 naming it."""
        raw = self.query_args().get(name)
        try:
            return query.integer(raw[-1], minimum, maximum) if raw else default
        except ValueError as err:
            raise InvalidRequest("Some query parameters are invalid.", fields={name: str(err)}) from err

    # -- responses ---------------------------------------------------------------

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json_dumps(payload))

    def write_data(self, data: Any, status: int = 200) -> None:
        self.write_json({"data": data}, status)

    def write_page(self, items: list[Any] | msgspec.Raw, next_cursor: str | None) -> None:
        self.write_json({"data": items, "meta": {"next_cursor": next_cursor}})

    def write_encoded(self, answer: EncodedAnswer, status: int = 200) -> None:
        """An answer encoded elsewhere; a GET whose `If-None-Match` names its ETag gets 304, as Tornado does it."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Etag", answer.etag)
        if status == 200 and self.request.method in ("GET", "HEAD") and self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(answer.body)

    def write_no_content(self) -> None:
        self.set_status(204)
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.clear_header("Content-Type")
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            body = exc.body()
        else:
            code = _STATUS_CODES.get(status_code, "internal_error" if status_code >= 500 else "error")
            if status_code >= 500:
                message = "The hub could not complete the request; the error is in its log."
            else:
                message = responses.get(status_code, "Error") + "."
            body = {"error": {"code": code, "message": message}}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if self._body_unread:
            # Refused before the body was read: Tornado closes the connection after this
            # answer, so tell the client not to reuse it.
            self.set_header("Connection", "close")
        self.finish(json_dumps(body))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, ApiError) and is_storage_full(exc):
            self.hub.disk.write_failed()
            exc = InsufficientStorage()
            kwargs["exc_info"] = (type(exc), exc, None)
        if isinstance(exc, ApiError):
            status_code = exc.status
            kwargs["reason"] = responses.get(status_code, "Error")
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.debug("%s %s -> %s %s", self.request.method, self.request.path, value.status, value.code)
            return
        if is_storage_full(value):
            log.warning("%s %s -> 507: the disk is full (%s)", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    """Every path no route matches."""

    permissions = {m: PUBLIC for m in HTTP_METHODS}

    async def prepare(self) -> None:
        self.hub.requests_started()
        self._counted = True
        self._body_unread = True
        raise NotFound(f"No route {self.request.path}.")
