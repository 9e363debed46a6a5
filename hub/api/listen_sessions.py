"""Listen sessions (issue 23): who listens and who listened, and disconnecting a listener (audited with who and why)."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, stream_export
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import listen_session_queries as sessions
from hark_fleet.hub.services.listing import ListSpec, parse_export_format

MONITOR = "listen:monitor"
MANAGE = "listen:manage"


class DisconnectBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/v1/listen-sessions/{id}/disconnect`: why (kept in the session's `ended_by` and the audit entry)."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SessionsHandler(BaseHandler):
    """`GET /api/v1/listen-sessions`: the caller's sessions (with listen:manage, everyone's on its sites), newest first."""

    spec: ClassVar[ListSpec] = sessions.SESSION_LIST
    permissions = {"get": MONITOR}

    async def get(self) -> None:
        assert self.principal is not None
        request, mine = sessions.parse_request(self.spec, self.query_args())
        items, next_cursor = await self.hub.db.run(sessions.session_page, self.spec, request, self.principal, mine)
        self.write_page(items, next_cursor)


class ActiveSessionsHandler(SessionsHandler):
    """`GET /api/v1/listen-sessions/active`: every session active or disconnected on the caller's sites."""

    spec = sessions.ACTIVE_LIST
    permissions = {"get": MANAGE}


class SessionFacetsHandler(BaseHandler):
    """`GET /api/v1/listen-sessions/facets?fields=state`: counts of state, codec, node and user over the matching sessions."""

    permissions = {"get": MONITOR}

    async def get(self) -> None:
        assert self.principal is not None
        args = self.query_args()
        names = [n for raw in args.get("fields", []) for n in raw.split(",") if n]
        request, mine = sessions.parse_request(sessions.SESSION_LIST, args)
        facets = await self.hub.db.run(sessions.facet_counts, sessions.SESSION_LIST, request, self.principal, mine, names)
        self.write_data(facets)


class SessionExportHandler(ExportHandler):
    """`GET|POST /api/v1/listen-sessions/export?format=csv|ndjson`: every session the list would show."""

    spec = sessions.SESSION_LIST
    permissions = {"get": MONITOR, "post": MONITOR}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> None:
        assert self.principal is not None
        fmt = parse_export_format(args)
        request, mine = sessions.parse_request(self.spec, args, ids)
        batches = sessions.export_batches(self.spec, request, self.principal, mine)
        await stream_export(self, fmt, self.spec.export_columns, batches, "listen-sessions")


class SessionHandler(BaseHandler):
    """`GET /api/v1/listen-sessions/{id}`: one session the caller may see, with `actions`."""

    permissions = {"get": MONITOR}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(sessions.session_detail, self.principal, id))


class DisconnectHandler(BaseHandler):
    """`POST /api/v1/listen-sessions/{id}/disconnect`: end a listener's session now (own, or listen:manage on its site)."""

    permissions = {"post": MONITOR}

    async def post(self, id: str) -> None:
        body = self.parse_body(DisconnectBody)
        reason = body.reason.strip()
        if not reason:
            raise InvalidRequest("Say why the listener is disconnected.", fields={"reason": "must not be blank"})
        await self.hub.listen.disconnect(id, self.actor, reason, principal=self.principal)  # 404 unseen, 409 ended
        self.write_data(await self.hub.db.run(sessions.session_detail, self.principal, id))
