"""Placeholder (issue 21): the notifier (intake from the event bus, routing to channels, delivery); filled in by its owner."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub


class Notifier:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def nudge(self) -> None:
        return None
