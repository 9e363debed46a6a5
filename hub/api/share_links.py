"""Share links (issue 23): make, list and revoke links that play a recording without an account."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, stream_export
from hark_fleet.hub.auth.passwords import hash_password
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import share_links
from hark_fleet.hub.services.listing import parse_export_format, parse_list_request
from hark_fleet.hub.services.share_links import SHARE_LINK_LIST, NewLink

SHARE = share_links.PERMISSION


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    expires_at: str
    password: str | None = None
    max_uses: int | None = None
    allow_download: bool = False
    label: str = ""


class RecordingShareLinksHandler(BaseHandler):
    """`POST /api/v1/recordings/{id}/share-links` makes a link (its token shown once); `GET` lists the recording's."""

    permissions = {"get": SHARE, "post": SHARE}
    max_body_bytes = 16 * 1024

    async def get(self, id: str) -> None:
        args = self.query_args()
        if "recording_id" in args:
            raise InvalidRequest("Some query parameters are invalid.", fields={"recording_id": "the path names the recording"})
        request = parse_list_request(SHARE_LINK_LIST, args)
        items, next_cursor = await self.hub.db.run(share_links.recording_links, self.scope, id, request)
        self.write_page(items, next_cursor)

    async def post(self, id: str) -> None:
        body = self.parse_body(CreateBody)
        share_links.check_password(body.password)
        # argon2id takes tens of milliseconds: not on the event loop, and not on the database thread.
        password_hash = await self.hub.run_cpu(hash_password, body.password) if body.password is not None else None
        new = NewLink(body.expires_at, password_hash, body.max_uses, body.allow_download, body.label)
        link, token = await self.hub.db.run(share_links.create_link, self.actor, self.scope, id, new)
        url = f"{self.hub.public_url.rstrip('/')}/s/{token}"
        self.write_data({"share_link": link, "token": token, "url": url}, 201)


class ShareLinksHandler(BaseHandler):
    """`GET /api/v1/share-links`: every link in the caller's sites, newest first."""

    permissions = {"get": SHARE}

    async def get(self) -> None:
        request = parse_list_request(SHARE_LINK_LIST, self.query_args())
        items, next_cursor = await self.hub.db.run(share_links.link_page, request, self.scope)
        self.write_page(items, next_cursor)


class ShareLinkFacetsHandler(BaseHandler):
    """`GET /api/v1/share-links/facets`."""

    permissions = {"get": SHARE}

    async def get(self) -> None:
        args = self.query_args()
        names = [n for raw in args.pop("fields", []) for n in raw.split(",") if n]
        request = parse_list_request(SHARE_LINK_LIST, args)
        self.write_data(await self.hub.db.run(share_links.facets, request, self.scope, names))


class ShareLinkExportHandler(ExportHandler):
    """`GET|POST /api/v1/share-links/export?format=csv|ndjson`."""

    spec = SHARE_LINK_LIST
    permissions = {"get": SHARE, "post": SHARE}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        fmt = parse_export_format(args)
        request = parse_list_request(self.spec, args, ids)
        batches = share_links.export_batches(request, self.scope)
        await stream_export(self, fmt, self.spec.export_columns, batches, "share-links")


class ShareLinkHandler(BaseHandler):
    """`GET /api/v1/share-links/{id}` with its actions; `DELETE` revokes it (kept for the audit)."""

    permissions = {"get": SHARE, "delete": SHARE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(share_links.link_detail, self.scope, id))

    async def delete(self, id: str) -> None:
        await self.hub.db.run(share_links.revoke_link, self.actor, self.scope, id)
        self.write_no_content()
