"""Small messages between the hub instances of one deployment (issue 24): `hub.cluster_messages`.

    await hub.cluster_messages.send("listen.end", {"session_id": ...})   # every instance, this one too
    hub.cluster_messages.send_soon("caches.clear", {})                    # the same from code that cannot wait
    hub.cluster_messages.on("listen.end", handler)                        # handler(payload, sender_instance_id)

On PostgreSQL a message is one `NOTIFY` on the `hark_cluster` channel: JSON with the kind, the payload and the
sender's `hub.instance_id`, under PostgreSQL's limit of 8000 bytes (`MessageTooBig` past it, nothing sent). Every
instance listening gets it, the sender too (a handler compares `sender` with `hub.instance_id` to skip its own).
Delivery is at most once: an instance whose `LISTEN` connection was down misses what was sent meanwhile (it
catches up from the database; see `PgNotify.on_reconnect`). On SQLite there is one hub: `send` calls the local
handlers directly. Handlers run on the loop; one that returns an awaitable has it run as a task.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hark_fleet.hub.cluster.pg_notify import PAYLOAD_MAX, PgNotify, notify_sql
from hark_fleet.hub.db.database import HubDatabase

log = logging.getLogger(__name__)

CHANNEL = "hark_cluster"

MessageHandler = Callable[[dict[str, Any], str], Awaitable[None] | None]


class MessageTooBig(ValueError):
    """A message whose JSON would not fit in one NOTIFY."""


class ClusterMessages:
    """Send small JSON messages to every hub instance; handlers by kind."""

    def __init__(self, instance_id: str, db: HubDatabase, notify: PgNotify | None) -> None:
        self.instance_id = instance_id
        self.db = db
        self.shared = notify is not None
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        if notify is not None:
            notify.listen(CHANNEL, self._received)

    def on(self, kind: str, handler: MessageHandler) -> None:
        """Call `handler(payload, sender_instance_id)` for every message of `kind` (several handlers may share a kind)."""
        self._handlers.setdefault(kind, []).append(handler)

    def encode(self, kind: str, payload: dict[str, Any]) -> str:
        """The NOTIFY payload of a message; MessageTooBig when it would not fit."""
        text = json.dumps({"kind": kind, "from": self.instance_id, "payload": payload}, separators=(",", ":"))
        size = len(text.encode())
        if size > PAYLOAD_MAX:
            raise MessageTooBig(f"a cluster message of kind {kind} is {size} bytes; at most {PAYLOAD_MAX} fit in one NOTIFY")
        return text

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        """Send to every instance (this one too); returns once sent (PostgreSQL) or handled here (SQLite)."""
        text = self.encode(kind, payload)
        if not self.shared:
            self._dispatch(kind, payload, self.instance_id)
            return
        await self.db.run(notify_sql, self.db.db, CHANNEL, text)

    def send_soon(self, kind: str, payload: dict[str, Any]) -> None:
        """`send` from code that cannot await (a failure is logged); MessageTooBig is raised at once."""
        text = self.encode(kind, payload)
        if not self.shared:
            self._dispatch(kind, payload, self.instance_id)
            return
        self._spawn(self._send_logged(kind, text))

    async def _send_logged(self, kind: str, text: str) -> None:
        try:
            await self.db.run(notify_sql, self.db.db, CHANNEL, text)
        except Exception:
            log.exception("could not send a cluster message of kind %s", kind)

    async def stop(self) -> None:
        """Wait for the messages being sent and the handlers running."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _received(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind, sender, payload = message["kind"], message["from"], message["payload"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a cluster message that is not one: %.200s", raw)
            return
        if isinstance(kind, str) and isinstance(payload, dict):
            self._dispatch(kind, payload, str(sender))

    def _dispatch(self, kind: str, payload: dict[str, Any], sender: str) -> None:
        for handler in self._handlers.get(kind, ()):
            try:
                result = handler(payload, sender)
            except Exception:
                log.exception("a handler of cluster message %s failed", kind)
                continue
            if inspect.isawaitable(result):
                self._spawn(self._awaited(kind, result))

    async def _awaited(self, kind: str, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("a handler of cluster message %s failed", kind)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
