"""Recording jobs: users follow, retry and stop them; nodes claim them and report on them under a lease."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.api.nodes import CONTROL as NODE_CONTROL
from hark_fleet.hub.api.nodes import AgentHandler
from hark_fleet.hub.api.recordings import RecordingCommands
from hark_fleet.hub.services import recording_jobs
from hark_fleet.hub.services.recording_jobs import JOB_LIST

READ = "recording:read"
CONTROL = "recording:control"


class BulkBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    # Jobs the node is running now: not handed back as recovered (it would fence its own worker).
    active_job_ids: list[str] = []


class CaptureReport(msgspec.Struct, forbid_unknown_fields=True):
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    format: str | None = None
    integrity: dict[str, Any] | None = None
    interrupted: bool | None = None
    time_quality: str | None = None
    clock_offset_ms: float | None = None
    late_s: float | None = None  # a scheduled job started this long after its plan (issue 19)
    scheduled_start_at: str | None = None


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    state: Literal["recording", "uploading"]
    progress: dict[str, Any] = {}
    recording: CaptureReport | None = None


class FinishBody(msgspec.Struct, forbid_unknown_fields=True):
    lease_epoch: int
    error: str | None = None


# -- users --------------------------------------------------------------------------------------------


class RecordingJobsHandler(ListHandler):
    """`GET /api/v1/recording-jobs`: newest first, filtered by `node_id`, `state`, `recording_id`, `site`."""

    spec = JOB_LIST
    permissions = {"get": READ}


class RecordingJobFacetsHandler(FacetsHandler):
    spec = JOB_LIST
    permissions = {"get": READ}


class RecordingJobExportHandler(ExportHandler):
    spec = JOB_LIST
    permissions = {"get": READ, "post": READ}


class RecordingJobHandler(BaseHandler):
    """`GET /api/v1/recording-jobs/{id}`: a user with recording:read, or the job's own node (dual mode)."""

    permissions = {"get": READ}

    async def authorize(self, permission: str) -> None:
        if self.principal is not None and self.principal.kind == "node":
            await super().authorize(NODE_CONTROL)  # whose job it is is checked with the job
            return
        await super().authorize(permission)

    async def get(self, id: str) -> None:
        if self.principal is not None and self.principal.kind == "node":
            self.write_data(await self.hub.db.run(recording_jobs.agent_job_detail, self.actor, id))
            return
        self.write_data(await self.hub.db.run(recording_jobs.job_detail, self.scope, id))


class RecordingJobActionsHandler(BaseHandler):
    """`GET /api/v1/recording-jobs/{id}/actions`."""

    permissions = {"get": READ}

    async def get(self, id: str) -> None:
        detail = await self.hub.db.run(recording_jobs.job_detail, self.scope, id)
        self.write_data(detail["actions"])


class RetryHandler(RecordingCommands):
    """`POST /api/v1/recording-jobs/{id}/retry`: a failed or cancelled job that never captured is queued again."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        job, events = await self.hub.db.run(recording_jobs.retry, self.actor, self.scope, id)
        self.hub.ingest.publish_events(events)
        self.tell_node(job)
        self.write_data(job)


class BulkRetryHandler(RecordingCommands):
    """`POST /api/v1/recording-jobs/bulk-retry` `{"ids"}`: a result per id."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        body = self.parse_body(BulkBody)
        results, events, queued = await self.hub.db.run(recording_jobs.bulk_retry, self.actor, self.scope, body.ids)
        self.hub.ingest.publish_events(events)
        for job in queued:
            self.tell_node(job)
        self.write_data(results)


class BulkStopHandler(RecordingCommands):
    """`POST /api/v1/recording-jobs/bulk-stop` `{"ids"}`: a result per id."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        body = self.parse_body(BulkBody)
        results, events, running = await self.hub.db.run(recording_jobs.bulk_stop, self.actor, self.scope, body.ids)
        self.hub.ingest.publish_events(events)
        for job in running:
            self.tell_node(job, stop=True)
        self.write_data(results)


# -- the node's own -------------------------------------------------------------------------------------


class ClaimNextHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/recording-jobs/claim-next`: the node's next job (its unfinished ones first), or 204."""

    permissions = {"post": NODE_CONTROL}

    async def post(self, id: str) -> None:
        body = self.parse_body(ClaimBody) if self.body_bytes().strip() else ClaimBody()
        claimed, events = await self.hub.db.run(recording_jobs.claim_next, self.actor, body.active_job_ids)
        self.hub.ingest.publish_events(events)
        if claimed is None:
            self.write_no_content()
            return
        self.write_data(claimed)


class JobHeartbeatHandler(BaseHandler):
    """`POST /api/v1/recording-jobs/{id}/heartbeat`: progress under the lease; the answer says `stop_requested`."""

    permissions = {"post": NODE_CONTROL}

    async def post(self, id: str) -> None:
        body = self.parse_body(HeartbeatBody)
        reported = msgspec.structs.asdict(body.recording) if body.recording is not None else None
        answer, events = await self.hub.db.run(
            recording_jobs.heartbeat, self.actor, id, body.lease_epoch, body.state, body.progress, reported
        )
        self.hub.ingest.publish_events(events)
        self.write_data(answer)


class JobFinishHandler(BaseHandler):
    """`POST /api/v1/recording-jobs/{id}/cancelled|failed`: the node ends its job."""

    permissions = {"post": NODE_CONTROL}
    state = ""

    async def post(self, id: str) -> None:
        body = self.parse_body(FinishBody)
        answer, events = await self.hub.db.run(recording_jobs.finish, self.actor, id, body.lease_epoch, self.state, body.error)
        self.hub.ingest.publish_events(events)
        self.write_data(answer)


class JobCancelledHandler(JobFinishHandler):
    state = "cancelled"


class JobFailedHandler(JobFinishHandler):
    state = "failed"
