"""Handlers shared by every family's collection: list, facets and streamed export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services.listing import (
    ExportEncoder,
    ExportFormat,
    ListSpec,
    export_batches,
    facet_counts,
    fetch_page,
    parse_export_format,
    parse_list_request,
)

MAX_EXPORT_IDS = 10_000


class ExportSelection(msgspec.Struct, forbid_unknown_fields=True):
    """A POSTed export: a selection of ids and/or filters (as in the query string)."""

    ids: list[str] | None = None
    filters: dict[str, str | list[str]] = {}


class ListHandler(BaseHandler):
    """`GET /family`: filtered, scoped, cursor-paged."""

    spec: ClassVar[ListSpec]

    async def get(self) -> None:
        request = parse_list_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(fetch_page, self.spec, request, self.scope)
        self.write_page(items, next_cursor)


class FacetsHandler(BaseHandler):
    """`GET /family/facets?fields=a&fields=b`: value counts over the filtered rows."""

    spec: ClassVar[ListSpec]

    async def get(self) -> None:
        args = self.query_args()
        names = [n for raw in args.get("fields", []) for n in raw.split(",") if n]
        request = parse_list_request(self.spec, args)
        facets = await self.hub.db.run(facet_counts, self.spec, request, self.scope, names)
        self.write_data(facets)


class ExportHandler(BaseHandler):
    """`GET|POST /family/export?format=csv|ndjson`: every matching row, streamed in batches."""

    spec: ClassVar[ListSpec]
    max_body_bytes = 1024 * 1024

    async def get(self) -> None:
        await self._export(self.query_args(), None)

    async def post(self) -> None:
        args = self.query_args()
        ids = None
        if self.body_bytes().strip():
            selection = self.parse_body(ExportSelection)
            ids = selection.ids
            if ids is not None and len(ids) > MAX_EXPORT_IDS:
                raise InvalidRequest("Too many ids.", fields={"ids": f"at most {MAX_EXPORT_IDS}"})
            for name, value in selection.filters.items():
                args[name] = [value] if isinstance(value, str) else list(value)
        await self._export(args, ids)

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        fmt = parse_export_format(args)
        request = parse_list_request(self.spec, args, ids)
        await stream_export(self, fmt, self.spec.export_columns, export_batches(self.spec, request, self.scope), "export")


async def stream_export(
    handler: BaseHandler,
    fmt: ExportFormat,
    columns: tuple[str, ...],
    next_batch: Callable[[Any], tuple[list[dict[str, Any]], Any]],
    name: str,
) -> None:
    """Stream `next_batch(after)` pages (run on the database thread) as `<name>.<fmt>` until one returns no `after`."""
    encoder = ExportEncoder(fmt, columns)
    handler.set_header("Content-Type", encoder.content_type)
    handler.set_header("Content-Disposition", f'attachment; filename="{name}.{fmt}"')
    after: Any = None
    first = True
    while first or after is not None:
        rows, after = await handler.hub.db.run(next_batch, after)
        chunk = encoder.encode(rows)
        if chunk:
            handler.write(chunk)
            await handler.flush()
        first = False
    handler.finish()
