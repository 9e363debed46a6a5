"""Starting and stopping recordings (the library's reads live in `recordings_library`)."""

from __future__ import annotations

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.services import recordings
from hark_fleet.protocol.topics import command_topic

CREATE = "recording:create"
CONTROL = "recording:control"


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    node_id: str
    duration_s: float | None = None
    profile_id: str | None = None
    name: str | None = None


class RecordingCommands(BaseHandler):
    """Tells a node about its recording jobs on `cmd/job` (QoS 1), so it acts at once instead of at its next poll."""

    def tell_node(self, job: dict[str, object], stop: bool = False) -> None:
        bridge = self.hub.bridge
        if bridge is None:
            return
        payload: dict[str, object] = {"job_id": job["id"], "recording_id": job["recording_id"]}
        if stop:
            payload["stop"] = True
        bridge.publish(command_topic(str(job["node_id"]), "job"), payload)


class CreateRecordingHandler(RecordingCommands):
    """`POST /api/v1/recordings`: an ad-hoc recording on a node -> 201 `{"recording", "job"}`."""

    permissions = {"post": CREATE}

    async def post(self) -> None:
        body = self.parse_body(CreateBody)
        recording, job, events = await self.hub.db.run(
            recordings.create_recording, self.actor, self.scope, body.node_id, body.duration_s, body.profile_id, body.name
        )
        self.hub.ingest.publish_events(events)
        self.tell_node(job)
        self.write_data({"recording": recording, "job": job}, 201)


class StopRecordingHandler(RecordingCommands):
    """`POST /api/v1/recordings/{id}/stop`: a queued recording is cancelled, a running one asked to stop."""

    permissions = {"post": CONTROL}

    async def post(self, id: str) -> None:
        recording, job, events, notify = await self.hub.db.run(recordings.stop_recording, self.actor, self.scope, id)
        self.hub.ingest.publish_events(events)
        if notify:
            self.tell_node(job, stop=True)
        self.write_data({"recording": recording, "job": job})
