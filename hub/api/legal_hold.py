"""`PUT|DELETE /api/v1/recordings/{id}/legal-hold`: place and release a recording's legal hold."""

from __future__ import annotations

from typing import Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.services import legal_hold
from hark_fleet.protocol.messages import ConfigChanged
from hark_fleet.protocol.topics import command_topic

EDIT = legal_hold.PERMISSION
HELD_CHANGED = msgspec.json.encode(ConfigChanged(changed=["held_recordings"]))


class LegalHoldBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


class LegalHoldHandler(BaseHandler):
    """`PUT` `{"reason"}` places the hold (or re-words it); `DELETE` releases it. Both answer the recording."""

    permissions = {"put": EDIT, "delete": EDIT}
    runs_on_full_disk = frozenset({"put"})  # holding must not wait for space: it only protects

    async def put(self, id: str) -> None:
        body = self.parse_body(LegalHoldBody)
        recording, events = await self.hub.db.run(legal_hold.set_hold, self.actor, self.scope, id, body.reason)
        self.hub.ingest.publish_events(events)
        self.tell_node(recording)
        self.write_data(recording)

    async def delete(self, id: str) -> None:
        recording, events = await self.hub.db.run(legal_hold.release_hold, self.actor, self.scope, id)
        self.hub.ingest.publish_events(events)
        self.tell_node(recording)
        self.write_data(recording)

    def tell_node(self, recording: dict[str, Any]) -> None:
        """The node's cache keeps held recordings (its config lists them): have it fetch its config again."""
        if self.hub.bridge is not None:
            self.hub.bridge.publish(command_topic(recording["node_id"], "config"), HELD_CHANGED)
