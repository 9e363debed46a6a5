"""Scheduled jobs, the node's side (issue 19): sync the jobs it holds ahead of time, and say one was missed."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.nodes import CONTROL as NODE_CONTROL
from hark_fleet.hub.api.nodes import AgentHandler
from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.services import recording_jobs, scheduled_jobs


class HeldJob(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    revision: int


class SyncBody(msgspec.Struct, forbid_unknown_fields=True):
    held: list[HeldJob] = []


class MissedBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    error: str | None = None


class ScheduledJobsHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/recording-jobs/scheduled` `{"held": [{"id", "revision"}]}`: the jobs to hold, and to drop."""

    permissions = {"post": NODE_CONTROL}

    async def post(self, id: str) -> None:
        body = self.parse_body(SyncBody) if self.body_bytes().strip() else SyncBody()
        held = scheduled_jobs.check_held([(h.id, h.revision) for h in body.held])
        answer, events = await self.hub.db.run(scheduled_jobs.sync, self.actor, held, utcnow(), self.hub.config.schedule_lead_s)
        self.hub.ingest.publish_events(events)
        self.write_data(answer)


class JobMissedHandler(BaseHandler):
    """`POST /api/v1/recording-jobs/{id}/missed` `{"lease_epoch", "error"}`: the node could not record its scheduled job."""

    permissions = {"post": NODE_CONTROL}

    async def post(self, id: str) -> None:
        body = self.parse_body(MissedBody)
        answer, events = await self.hub.db.run(recording_jobs.missed, self.actor, id, body.lease_epoch, body.error)
        self.hub.ingest.publish_events(events)
        self.write_data(answer)
