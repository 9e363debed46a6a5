"""Shared list machinery: site scope, filters, text search, cursor pages, facets and exports."""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import io
import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
import peewee
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.clock import iso, parse_iso
from hark_fleet.hub.errors import InvalidRequest, NotFound
from hark_fleet.hub.services import query
from hark_fleet.protocol.decoding import decode

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EXPORT_BATCH = 500
RESERVED_PARAMS = frozenset({"limit", "cursor", "q", "from", "to", "format", "fields", "token"})
MAX_CURSOR_BYTES = 1024
MAX_QUERY_TEXT = 200  # `q`, as the OpenAPI document's maxLength says
ExportFormat = Literal["csv", "ndjson"]


@dataclass(frozen=True, slots=True)
class Filter:
    """A query parameter that filters a list: `?name=value` (repeatable: any of the values)."""

    name: str
    field: peewee.Field
    parse: Callable[[str], Any] = str
    contains: bool = False  # the field is a JSON list; match rows whose list holds the value
    facet: bool = True


@dataclass(frozen=True, slots=True)
class ListSpec:
    """How one family's collection is filtered, searched, scoped, paged, faceted and exported."""

    model: type[peewee.Model]
    serialize: Callable[[Any], dict[str, Any]]
    filters: tuple[Filter, ...] = ()
    search: tuple[peewee.Field, ...] = ()
    time_field: peewee.Field | None = None
    site_field: peewee.Field | None = None
    owner_field: peewee.Field | None = None  # who made a row: a site-limited caller still sees its own
    export_columns: tuple[str, ...] = ()
    descending: bool = False  # newest first (ids are time-ordered)

    def filter(self, name: str) -> Filter | None:
        return next((f for f in self.filters if f.name == name), None)


@dataclass(frozen=True, slots=True)
class ListRequest:
    """Parsed list parameters (filters, text, time range, page)."""

    filters: Mapping[str, tuple[Any, ...]]
    q: str | None
    time_from: datetime | None
    time_to: datetime | None
    limit: int
    after: str | None
    ids: tuple[str, ...] | None = None


def one_of(options: tuple[str, ...]) -> Callable[[str], str]:
    """A filter parser accepting only `options`."""

    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def parse_list_request(spec: ListSpec, args: Mapping[str, Sequence[str]], ids: Sequence[str] | None = None) -> ListRequest:
    """Validate query parameters against `spec`; every problem is named in one 400."""
    args = {name: values for name, values in args.items() if values}  # a name given no value (`[]` in a body) is absent
    problems: dict[str, str] = {}
    filters: dict[str, tuple[Any, ...]] = {}
    for name, values in args.items():
        if name in RESERVED_PARAMS:
            continue
        flt = spec.filter(name)
        if flt is None:
            problems[name] = "unknown filter"
            continue
        try:
            filters[name] = tuple(flt.parse(v) for v in values)
        except ValueError as err:
            problems[name] = str(err) or "invalid value"
    limit, after = parse_paging(args, problems)
    times: dict[str, datetime | None] = {"from": None, "to": None}
    for key in times:
        if key in args:
            if spec.time_field is None:
                problems[key] = "this list has no time range"
                continue
            try:
                times[key] = parse_iso(args[key][-1])
            except ValueError:
                problems[key] = "must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z"
    q = parse_search(args, problems)
    if problems:
        raise InvalidRequest("Some query parameters are invalid.", fields=problems)
    return ListRequest(filters, q, times["from"], times["to"], limit, after, tuple(ids) if ids is not None else None)


def parse_paging(args: Mapping[str, Sequence[str]], problems: dict[str, str]) -> tuple[int, str | None]:
    """`limit` and `cursor` of a list request (the page size and the id after which it starts); problems named in `problems`."""
    limit = DEFAULT_LIMIT
    if "limit" in args:
        try:
            limit = query.integer(args["limit"][-1], 1, MAX_LIMIT)
        except ValueError as err:
            problems["limit"] = str(err)
    after = None
    if "cursor" in args and args["cursor"][-1]:
        try:
            after = decode_cursor(args["cursor"][-1])
        except ValueError:
            problems["cursor"] = "is not a cursor this API returned"
    return limit, after


def parse_search(args: Mapping[str, Sequence[str]], problems: dict[str, str]) -> str | None:
    """The free-text `q` of a list request (None when blank); too long a text is named in `problems`."""
    raw_q = args["q"][-1] if "q" in args else ""
    if len(raw_q) > MAX_QUERY_TEXT:
        problems["q"] = f"must be at most {MAX_QUERY_TEXT} characters"
    return raw_q.strip() or None


def encode_cursor(last_id: str) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class _Cursor(msgspec.Struct, forbid_unknown_fields=True):
    after: str


def decode_cursor(cursor: str) -> str:
    """The id a cursor points after; ValueError for anything this hub did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return decode(raw, _Cursor, max_bytes=MAX_CURSOR_BYTES).after
    except (binascii.Error, ValueError) as err:  # PayloadError is a ValueError
        raise ValueError("bad cursor") from err


def _any(clauses: Sequence[Any]) -> Any:
    return functools.reduce(operator.or_, clauses)


def _contains(expr: Any, text: str) -> peewee.Node:
    """`expr` contains `text` literally (LIKE wildcards in `text` are escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return peewee.NodeList((expr, peewee.SQL("LIKE"), f"%{escaped}%", peewee.SQL("ESCAPE '\\'")))


def site_in_scope(site_field: Any, scope: SiteScope) -> Any:
    """The SQL condition "this row's site is inside `scope`" (less its hidden sites)."""
    if scope.sites is None:
        return site_field.is_null() | site_field.not_in(sorted(scope.hidden)) if scope.hidden else peewee.SQL("1 = 1")
    return site_field.in_(sorted(scope.sites))


def scoped(
    query: peewee.ModelSelect, site_field: peewee.Field | None, scope: SiteScope, owner_field: peewee.Field | None = None
) -> peewee.ModelSelect:
    """Limit `query` to the caller's sites (and its own rows): the one place every family's queries pass through."""
    if scope.everywhere or site_field is None:
        return query
    clause = site_in_scope(site_field, scope)
    if owner_field is not None and scope.owner is not None:
        clause = clause | (owner_field == scope.owner)
    return query.where(clause)


def get_scoped(
    model: type[peewee.Model],
    object_id: str,
    site_field: peewee.Field | None,
    scope: SiteScope,
    owner_field: peewee.Field | None = None,
) -> Any:
    """One object by id if it is inside `scope`; otherwise NotFound (as if it did not exist)."""
    pk: Any = model._meta.primary_key
    row = scoped(model.select().where(pk == object_id), site_field, scope, owner_field).first()
    if row is None:
        raise NotFound(f"No {model._meta.name.replace('_', ' ')} {object_id}.")
    return row


def _after(spec: ListSpec, query: peewee.ModelSelect, after: str | None) -> peewee.ModelSelect:
    pk: Any = spec.model._meta.primary_key
    if after is not None:
        query = query.where(pk < after if spec.descending else pk > after)
    return query.order_by(pk.desc() if spec.descending else pk)


def build_query(spec: ListSpec, request: ListRequest, scope: SiteScope = ALL_SITES) -> peewee.ModelSelect:
    """The filtered, scoped query of `spec`'s model (not yet ordered or paged)."""
    model = spec.model
    query = scoped(model.select(), spec.site_field, scope, spec.owner_field)
    for name, values in request.filters.items():
        flt = spec.filter(name)
        assert flt is not None
        if flt.contains:
            query = query.where(_any([_contains(flt.field, json.dumps(v)) for v in values]))
        else:
            query = query.where(flt.field.in_(values))
    if request.q and spec.search:
        needle = request.q.lower()
        clauses = [_contains(peewee.fn.LOWER(fld), needle) for fld in spec.search]
        query = query.where(_any(clauses))
    if spec.time_field is not None:
        if request.time_from is not None:
            query = query.where(spec.time_field >= request.time_from)
        if request.time_to is not None:
            query = query.where(spec.time_field < request.time_to)
    if request.ids is not None:
        pk: Any = model._meta.primary_key
        query = query.where(pk.in_(list(request.ids)))
    return query


def fetch_page(spec: ListSpec, request: ListRequest, scope: SiteScope = ALL_SITES) -> tuple[list[dict[str, Any]], str | None]:
    """One page in id order (ids are time-ordered) and the cursor of the next, or None."""
    query = _after(spec, build_query(spec, request, scope), request.after)
    rows: list[Any] = list(query.limit(request.limit + 1))
    next_cursor = encode_cursor(rows[request.limit - 1].id) if len(rows) > request.limit else None
    return [spec.serialize(r) for r in rows[: request.limit]], next_cursor


def facet_counts(
    spec: ListSpec, request: ListRequest, scope: SiteScope, names: Sequence[str] | None
) -> dict[str, list[dict[str, Any]]]:
    """Value counts for each facet field over the rows the filters match."""
    chosen = [f for f in spec.filters if f.facet and (not names or f.name in names)]
    if names:
        unknown = sorted(set(names) - {f.name for f in spec.filters if f.facet})
        if unknown:
            raise InvalidRequest("Unknown facet.", fields={"fields": f"no facet named {', '.join(unknown)}"})
    result: dict[str, list[dict[str, Any]]] = {}
    base = build_query(spec, request, scope)
    for flt in chosen:
        if flt.contains:
            counts: dict[Any, int] = {}
            column: Any = base.select(flt.field).tuples()
            for (values,) in column:
                for value in values or []:
                    counts[value] = counts.get(value, 0) + 1
            pairs = list(counts.items())
        else:
            count = peewee.fn.COUNT(spec.model._meta.primary_key)
            pairs = list(base.select(flt.field, count).group_by(flt.field).tuples())  # type: ignore[arg-type]
        pairs.sort(key=lambda p: (-p[1], "" if p[0] is None else str(p[0])))
        result[flt.name] = [{"value": value, "count": n} for value, n in pairs]
    return result


def export_batches(
    spec: ListSpec, request: ListRequest, scope: SiteScope
) -> Callable[[str | None], tuple[list[dict[str, Any]], str | None]]:
    """A function returning the next batch of serialized rows after an id (for streaming exports)."""

    def next_batch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        query = _after(spec, build_query(spec, request, scope), after)
        rows: list[Any] = list(query.limit(EXPORT_BATCH))
        last = rows[-1].id if len(rows) == EXPORT_BATCH else None
        return [spec.serialize(r) for r in rows], last

    return next_batch


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


class ExportEncoder:
    """Turns serialized rows into CSV (with a header) or NDJSON text."""

    def __init__(self, fmt: ExportFormat, columns: Sequence[str]) -> None:
        self.format = fmt
        self.columns = list(columns)
        self._header_done = False

    @property
    def content_type(self) -> str:
        return "text/csv; charset=utf-8" if self.format == "csv" else "application/x-ndjson"

    def encode(self, rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> str:
        if self.format == "ndjson":
            return "".join(json.dumps(r, separators=(",", ":"), default=_json_default) + "\n" for r in rows)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if not self._header_done:
            writer.writerow(self.columns)
            self._header_done = True
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in self.columns])
        return out.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def parse_export_format(args: Mapping[str, Sequence[str]]) -> ExportFormat:
    fmt = (args.get("format") or ["csv"])[-1]
    if fmt not in ("csv", "ndjson"):
        raise InvalidRequest("Unknown export format.", fields={"format": "must be csv or ndjson"})
    return fmt  # type: ignore[return-value]
