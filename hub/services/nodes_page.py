"""One page of `GET /api/v1/nodes`, read without building a model object per row.

The list is the fleet's busiest read. `node_to_api` (detail, export) materialises a `Node` with every
column, decodes its JSON columns and the handler encodes them again; a page of 50 then cost milliseconds
of the database thread. Here the page's query selects only the columns the answer shows, takes the rows
as the driver returns them, converts the times with a string slice where the stored form allows it, and
passes the JSON columns through as the JSON text they are stored as (`JSONField` writes compact, sorted
JSON), so they are neither decoded nor encoded again; and peewee compiles the SQL of a kind of request once
(the cursor is put in per page; the rows are read afresh every time). The answer is the same as `node_to_api`
gives, field for field (tests/hub/api/test_nodes_page.py compares them).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import msgspec
import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso
from hark_fleet.hub.db.models import Node, database_proxy
from hark_fleet.hub.services.listing import ListRequest, build_query, encode_cursor
from hark_fleet.hub.services.nodes import NODE_LIST

# What `node_to_api` shows as the empty value for a JSON column (`node.hardware or {}`): SQL NULL or these stored texts.
_FALSY_JSON = frozenset({None, "null", "false", "0", "0.0", '""', "[]", "{}"})
_EMPTY_LIST = msgspec.Raw(b"[]")
_EMPTY_OBJECT = msgspec.Raw(b"{}")
SQL_CACHE_MAX = 512  # compiled page queries kept (SQL text and parameters, never rows)
_SQL: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
_AFTER = "\x00hark-node-page-cursor\x00"  # the cursor's place in a compiled query (no node id holds a NUL)


class NodeItem(msgspec.Struct, omit_defaults=False):
    """A node as the list shows it: the fields and order of `node_to_api`."""

    id: str
    name: str
    site: str | None
    tags: msgspec.Raw
    status: str
    last_seen_at: str | None
    connected_at: str | None
    version: str | None
    hardware_id: str | None
    hardware: msgspec.Raw
    interfaces: msgspec.Raw
    capacity: msgspec.Raw
    metrics: msgspec.Raw
    time_quality: str | None
    clock_offset_ms: float | None
    heartbeat_interval_s: float | None
    reported_heartbeat_interval_s: float | None
    created_at: str | None


COLUMNS: tuple[peewee.Field, ...] = (
    Node.id,
    Node.name,
    Node.site,
    Node.tags,
    Node.status,
    Node.last_seen_at,
    Node.connected_at,
    Node.version,
    Node.hardware_id,
    Node.hardware,
    Node.interfaces,
    Node.capacity,
    Node.metrics,
    Node.time_quality,
    Node.clock_offset_ms,
    Node.heartbeat_interval_s,
    Node.reported_heartbeat_interval_s,
    Node.created_at,
)


def _time(value: Any, field: peewee.Field) -> str | None:
    """`iso()` of a stored time: a slice of SQLite's naive UTC text, else through the field's own conversion."""
    if value is None:
        return None
    if type(value) is str and len(value) == 26 and value[10] == " " and value[19] == ".":  # 2026-01-31 12:00:00.123456
        return f"{value[:10]}T{value[11:23]}Z"
    if type(value) is str and len(value) == 19 and value[10] == " ":  # 2026-01-31 12:00:00 (no fraction)
        return f"{value[:10]}T{value[11:]}.000Z"
    return iso(value if isinstance(value, datetime) else field.python_value(value))


def _float(value: Any) -> float | None:
    return value if value is None or type(value) is float else float(value)


def _items(rows: list[tuple[Any, ...]]) -> list[NodeItem]:
    """The page's items from its rows (the columns of COLUMNS); one loop, few calls: it runs for every row of every page."""
    items: list[NodeItem] = []
    append, raw, falsy, empty_list, empty_object = items.append, msgspec.Raw, _FALSY_JSON, _EMPTY_LIST, _EMPTY_OBJECT
    last_seen_field, connected_field, created_field = Node.last_seen_at, Node.connected_at, Node.created_at
    for (
        node_id,
        name,
        site,
        tags,
        status,
        last_seen_at,
        connected_at,
        version,
        hardware_id,
        hardware,
        interfaces,
        capacity,
        metrics,
        time_quality,
        clock_offset_ms,
        heartbeat_interval_s,
        reported_heartbeat_interval_s,
        created_at,
    ) in rows:
        append(
            NodeItem(
                node_id,
                name,
                site,
                empty_list if tags in falsy else raw(tags),
                status,
                _time(last_seen_at, last_seen_field),
                _time(connected_at, connected_field),
                version,
                hardware_id,
                empty_object if hardware in falsy else raw(hardware),
                empty_list if interfaces in falsy else raw(interfaces),
                empty_object if capacity in falsy else raw(capacity),
                empty_object if metrics in falsy else raw(metrics),
                time_quality,
                _float(clock_offset_ms),
                _float(heartbeat_interval_s),
                _float(reported_heartbeat_interval_s),
                _time(created_at, created_field),
            )
        )
    return items


def page_key(request: ListRequest, scope: SiteScope) -> tuple[Any, ...]:
    """What makes one page of the list differ from another: the request's parameters and the caller's scope."""
    filters = tuple(sorted(request.filters.items()))
    return (filters, request.q, request.time_from, request.time_to, request.ids, request.limit, request.after, scope)


class ChangeWatch:
    """Tells, on the event loop and without the database thread, whether the SQLite database may have changed.

    It keeps a connection of its own to the database file, used for nothing but `PRAGMA data_version`, whose value
    changes whenever any other connection commits: the hub's database thread, or another process (a `hark-hub`
    command). A few microseconds, no lock, no thread hand-off; a token that stays the same means a read gives what
    the last read gave. PostgreSQL (other connections write, and nothing cheap tells) and in-memory databases: None.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._connection: sqlite3.Connection | None = None
        self._series = 0  # a new connection (another database, a reopened file) starts another series

    def token(self) -> tuple[int, int] | None:
        db = database_proxy.obj
        if not isinstance(db, peewee.SqliteDatabase) or not db.database or db.database == ":memory:":
            return None
        path = str(db.database)
        try:
            if path != self._path or self._connection is None:
                self.close()
                self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._path, self._series = path, self._series + 1
            (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            self.close()
            return None
        return self._series, version

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._path = None, None


def _query(request: ListRequest, scope: SiteScope, after: str | None) -> peewee.ModelSelect:
    query = build_query(NODE_LIST, request, scope).select(*COLUMNS)
    if after is not None:
        query = query.where(Node.id > after)
    return query.order_by(Node.id).limit(request.limit + 1)


def _compiled(db: peewee.Database, request: ListRequest, scope: SiteScope) -> tuple[str, list[Any]]:
    """The page's SQL and parameters; peewee builds them once per kind of request (its SQL costs more than the read).

    The cursor is what changes from page to page: it is compiled as a placeholder value and put in per request.
    """
    paged = request.after is not None
    filters = tuple(sorted(request.filters.items()))
    key: tuple[Any, ...] = (db, filters, request.q, request.time_from, request.time_to, request.ids, request.limit, paged, scope)
    compiled = _SQL.get(key)
    if compiled is None:
        compiled = db.get_sql_context().sql(_query(request, scope, _AFTER if paged else None)).query()
        if paged and compiled[1].count(_AFTER) != 1:  # nowhere to put the cursor in (not expected): compile each time
            return db.get_sql_context().sql(_query(request, scope, request.after)).query()
        if len(_SQL) >= SQL_CACHE_MAX:
            _SQL.clear()
        _SQL[key] = compiled
    if not paged:
        return compiled
    sql, params = compiled
    return sql, [request.after if p == _AFTER else p for p in params]


def node_page(request: ListRequest, scope: SiteScope) -> tuple[msgspec.Raw, str | None]:
    """One page of the node list as encoded JSON (an array), and the cursor of the next page or None.

    The same rows, order and cursor as `listing.fetch_page(NODE_LIST, ...)`: the same filtered, scoped query,
    in id order after the cursor's id, one row more than the page to know whether another page follows.
    """
    db = database_proxy.obj
    sql, params = _compiled(db, request, scope)
    rows = db.execute_sql(sql, params).fetchall()
    next_cursor = encode_cursor(rows[request.limit - 1][0]) if len(rows) > request.limit else None
    return msgspec.Raw(msgspec.json.encode(_items(rows[: request.limit]))), next_cursor
