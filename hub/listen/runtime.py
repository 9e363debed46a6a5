"""The hub's live listen runtime (issue 23): node streams, their listeners, and the commands that keep nodes encoding.

`ListenHub` is made by the Hub (`hub.listen`), started after the bridge and stopped before it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hark_fleet.protocol.topics import NodeTopic

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)


class ListenHub:
    """Every live stream this hub relays; see the issue 23 contract for what each method does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self) -> None:
        """Terminate sessions a previous run left open, then begin renewing node streams."""

    async def stop(self) -> None:
        """Close every listener's socket and mark their sessions terminated (`hub_stopped`)."""

    def on_chunk(self, topic: NodeTopic, payload: bytes) -> None:
        """A chunk from MQTT `listen/{stream_id}` (or `listen/{stream_id}/error`): relay it to the stream's listeners."""
