"""Schedules: list, facets, export, create, detail, change, delete, actions, occurrences, run-now, skip-next, unskip,
preview and the week view (`upcoming`).

Reads need `schedule:read`, writes `schedule:manage`, both within the caller's sites. After a write the
dispatcher brings the schedule's unstarted jobs in line (`schedule_dispatch.reconcile`), its events are
published, the nodes whose jobs changed are told on `cmd/job {"scheduled": true}`, and the dispatch loop
is nudged to look at the schedules at once.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import msgspec
from hark_fleet.hub.api.base import BaseHandler, body_error
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import schedule_dispatch, schedule_occurrences, schedules
from hark_fleet.hub.services.schedule_checks import DESCRIPTION_MAX, MAX_EXDATES, NAME_MAX, RRULE_MAX
from hark_fleet.hub.services.schedule_dispatch import DispatchResult
from hark_fleet.hub.services.schedules import SCHEDULE_LIST
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.topics import command_topic

log = logging.getLogger(__name__)

READ = schedules.READ
MANAGE = schedules.MANAGE
Id = Annotated[str, msgspec.Meta(max_length=40)]
Local = Annotated[str, msgspec.Meta(max_length=19)]
Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX)]
Zone = Annotated[str, msgspec.Meta(max_length=64)]
Rule = Annotated[str, msgspec.Meta(max_length=RRULE_MAX)]
Time = Annotated[str, msgspec.Meta(max_length=40)]
Tag = Annotated[str, msgspec.Meta(max_length=64)]
OnConflict = Literal["reject", "skip", "allow"]
UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class SelectorBody(msgspec.Struct, forbid_unknown_fields=True):
    site: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = []


class TargetBody(msgspec.Struct, forbid_unknown_fields=True):
    node_ids: Annotated[list[Id], msgspec.Meta(max_length=500)] | Unset = UNSET
    selector: SelectorBody | Unset = UNSET


class SolarBody(msgspec.Struct, forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(max_length=20)]
    offset_minutes: int = 0
    latitude: float | None = None
    longitude: float | None = None
    elevation_m: float | None = None


class ScheduleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    target: TargetBody
    start_local: Local
    duration_s: int
    description: Description = ""
    enabled: bool = True
    time_zone: Zone | None = None  # default: the site's
    rrule: Rule | None = None
    exdates: Annotated[list[Local], msgspec.Meta(max_length=MAX_EXDATES)] = []
    valid_from: Time | None = None
    valid_until: Time | None = None
    solar: SolarBody | None = None
    profile_id: Id = "default"
    channel_map_id: Id | None = None
    metadata: dict[str, Any] = {}
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = []
    on_conflict: OnConflict = "reject"


class SchedulePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    version: int  # the version last read: 409 if it moved on
    name: Name | Unset = UNSET
    target: TargetBody | Unset = UNSET
    start_local: Local | Unset = UNSET
    duration_s: int | Unset = UNSET
    description: Description | Unset = UNSET
    enabled: bool | Unset = UNSET
    time_zone: Zone | None | Unset = UNSET
    rrule: Rule | None | Unset = UNSET
    exdates: Annotated[list[Local], msgspec.Meta(max_length=MAX_EXDATES)] | Unset = UNSET
    valid_from: Time | None | Unset = UNSET
    valid_until: Time | None | Unset = UNSET
    solar: SolarBody | None | Unset = UNSET
    profile_id: Id | Unset = UNSET
    channel_map_id: Id | None | Unset = UNSET
    metadata: dict[str, Any] | Unset = UNSET
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] | Unset = UNSET
    on_conflict: OnConflict | Unset = UNSET


class RunNowBody(msgspec.Struct, forbid_unknown_fields=True):
    duration_s: int | None = None


def _values(body: msgspec.Struct) -> dict[str, Any]:
    """A decoded body as plain values, fields left out omitted."""
    return {k: msgspec.to_builtins(v) for k, v in msgspec.structs.asdict(body).items() if v is not UNSET}


class ScheduleWrites(BaseHandler):
    """After a write: reconcile the schedule's jobs, publish, tell the nodes, nudge the dispatcher."""

    async def reconcile(self, schedule_id: str) -> None:
        try:
            result = await self.hub.db.run(schedule_dispatch.reconcile, schedule_id, utcnow())
        except Exception:  # the change is saved; the dispatcher's next pass brings the jobs in line
            log.exception("reconciling schedule %s after a change failed", schedule_id)
        else:
            self.announce(result)
        dispatcher = getattr(self.hub, "schedules", None)
        if dispatcher is not None:
            dispatcher.nudge()

    def announce(self, result: DispatchResult) -> None:
        self.hub.ingest.publish_events(result.events)
        bridge = self.hub.bridge
        if bridge is None:
            return
        for node_id in sorted(result.nodes):
            bridge.publish(command_topic(node_id, "job"), {"scheduled": True})

    def time_arg(self, name: str) -> Any:
        values = self.query_args().get(name)
        return self.optional_time(values[-1], name) if values else None


class SchedulesHandler(ScheduleWrites, ListHandler):
    """`GET /api/v1/schedules` and `POST` to create one (201)."""

    spec = SCHEDULE_LIST
    permissions = {"get": READ, "post": MANAGE}

    async def post(self) -> None:
        values = _values(self.parse_body(ScheduleBody))
        schedule = await self.hub.db.run(schedules.create_schedule, self.actor, self.scope, values, utcnow())
        await self.reconcile(schedule["id"])
        self.write_data(schedule, 201)


class ScheduleFacetsHandler(FacetsHandler):
    spec = SCHEDULE_LIST
    permissions = {"get": READ}


class ScheduleExportHandler(ExportHandler):
    spec = SCHEDULE_LIST
    permissions = {"get": READ, "post": READ}


class ScheduleHandler(ScheduleWrites):
    """`GET|PATCH|DELETE /api/v1/schedules/{id}`; PATCH needs the `version` read (409 if it moved on)."""

    permissions = {"get": READ, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(schedules.schedule_detail, self.scope, id, self.principal, utcnow()))

    async def patch(self, id: str) -> None:
        changes = _values(self.parse_body(SchedulePatchBody))
        schedule, changed = await self.hub.db.run(schedules.update_schedule, self.actor, self.scope, id, changes, utcnow())
        if changed:
            await self.reconcile(id)
        self.write_data(schedule)

    async def delete(self, id: str) -> None:
        await self.hub.db.run(schedules.delete_schedule, self.actor, self.scope, id, utcnow())
        await self.reconcile(id)
        self.write_no_content()


class ScheduleActionsHandler(BaseHandler):
    """`GET /api/v1/schedules/{id}/actions`: what the caller may do to this schedule now."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(schedules.schedule_detail, self.scope, id, self.principal, utcnow())
        self.write_data(detail["actions"])


class OccurrencesHandler(ScheduleWrites):
    """`GET /api/v1/schedules/{id}/occurrences?from&to&limit`: planned, past and skipped occurrences with their recordings."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        limit = self.query_integer("limit", schedule_occurrences.DEFAULT_LIMIT, 1, schedule_occurrences.MAX_LIMIT)
        start, end = self.time_arg("from"), self.time_arg("to")
        answer = await self.hub.db.run(schedule_occurrences.list_occurrences, self.scope, id, start, end, limit, utcnow())
        self.write_json(answer)


class RunNowHandler(ScheduleWrites):
    """`POST /api/v1/schedules/{id}/run-now` (202): a one-off occurrence starting now, dispatched at once."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        body = self.parse_body(RunNowBody) if self.body_bytes().strip() else RunNowBody()
        schedule = await self.hub.db.run(schedules.run_now_target, self.scope, id, body.duration_s)
        occurrence, result = await self.hub.db.run(schedule_dispatch.run_now, self.actor, schedule, utcnow(), body.duration_s)
        self.announce(result)
        self.write_data({"occurrence": occurrence}, 202)


class SkipNextHandler(ScheduleWrites):
    """`POST /api/v1/schedules/{id}/skip-next`: the next occurrence is skipped (its jobs withdrawn)."""

    permissions = {"post": MANAGE}

    async def post(self, id: str) -> None:
        occurrence = await self.hub.db.run(schedule_occurrences.skip_next, self.actor, self.scope, id, utcnow())
        await self.reconcile(id)
        self.write_data(occurrence)


class UnskipHandler(ScheduleWrites):
    """`POST /api/v1/schedules/{id}/occurrences/{iid}/unskip`: undo a skip before the occurrence starts."""

    permissions = {"post": MANAGE}

    async def post(self, id: str, iid: str) -> None:
        occurrence = await self.hub.db.run(schedule_occurrences.unskip, self.actor, self.scope, id, iid, utcnow())
        await self.reconcile(id)
        self.write_data(occurrence)


class PreviewHandler(BaseHandler):
    """`POST /api/v1/schedules/preview`: an unsaved schedule's next occurrences and its problems (never a 400 for them)."""

    permissions = {"post": READ}
    max_body_bytes = 256 * 1024

    async def post(self) -> None:
        raw = self.body_bytes()
        values: Any = {}
        if raw.strip():
            try:
                values = decode(raw, dict[str, Any], max_bytes=self.max_body_bytes)
            except PayloadError as err:
                if err.validation is not None:
                    raise InvalidRequest("The body must be a JSON object.", fields={"body": "must be a JSON object"}) from err
                raise body_error(err) from err
        self.write_data(await self.hub.db.run(schedules.preview, self.scope, values, utcnow()))


class UpcomingHandler(ScheduleWrites):
    """`GET /api/v1/schedules/upcoming?site&node_id&from&to`: every visible enabled schedule's takes (the week view)."""

    permissions = {"get": READ}

    async def get(self) -> None:
        args = self.query_args()
        site = args["site"][-1] if args.get("site") else None
        node_id = args["node_id"][-1] if args.get("node_id") else None
        start, end = self.time_arg("from"), self.time_arg("to")
        answer = await self.hub.db.run(schedule_occurrences.upcoming, self.scope, site, node_id, start, end, utcnow())
        self.write_json(answer)
