"""Live listen (issue 23): open a session on a node, who is listening, end it, its WebSocket, and the node's chunk route.

The WebSocket (`GET /nodes/{id}/listen/stream?session=`) authenticates like the other stream routes (bearer
header, the console's cookie, or `?token=`), then sends one TEXT `hello`, the node's chunks as binary messages
(their bytes as the node made them), `stats` now and then, and `end` before the hub closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import tornado.websocket
from hark_fleet.hub.api.base import BaseHandler, json_dumps
from hark_fleet.hub.api.nodes import CONTROL, AgentHandler
from hark_fleet.hub.errors import Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from hark_fleet.hub.services import listen_sessions
from hark_fleet.hub.services.listen_sessions import MONITOR, OpenBody
from hark_fleet.protocol.listen import MAX_CHUNK_BYTES

BACKLOG_MS = 1000  # a listener whose socket holds more than this much audio unsent gets frames dropped
MIN_SEND_BUFFER = 8 * 1024
PING_S = 10.0


class NodeListenHandler(BaseHandler):
    """`POST /api/v1/nodes/{id}/listen`: a listen session; `GET`: the node's sessions not terminated (who listens)."""

    permissions = {"get": MONITOR, "post": MONITOR}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(listen_sessions.node_sessions, self.scope, id))

    async def post(self, id: str) -> None:
        raw = self.body_bytes()
        body = self.parse_body(OpenBody) if raw.strip() else OpenBody()
        assert self.principal is not None
        session = await self.hub.listen.open(
            self.principal, self.actor, self.scope, id, body, self.request.headers.get("User-Agent")
        )
        self.set_header("Location", f"/api/v1/listen-sessions/{session['id']}")
        self.write_data(session, 201)


class NodeListenSessionHandler(BaseHandler):
    """`DELETE /api/v1/nodes/{id}/listen/{sid}`: end a session (own, or with listen:manage) -> 204."""

    permissions = {"delete": MONITOR}

    async def delete(self, id: str, sid: str) -> None:
        await self.hub.db.run(listen_sessions.get_of_node, self.scope, id, sid)
        await self.hub.listen.end(self.principal, self.actor, id, sid)
        self.write_no_content()


class ListenStreamHandler(BaseHandler, tornado.websocket.WebSocketHandler):
    """`GET /api/v1/nodes/{id}/listen/stream?session={sid}`: the session's WebSocket (only its own user or key opens it)."""

    permissions = {"get": MONITOR}
    accepts_query_token = True
    session_id = ""
    _pending_frames = 0
    _ended = False

    async def get(self, id: str) -> None:
        sid = self.get_query_argument("session", "")
        if not sid:
            raise InvalidRequest("Name the listen session: ?session=<id>.", fields={"session": "is required"})
        row = await self.hub.db.run(listen_sessions.get_of_node, self.scope, id, sid)
        if not listen_sessions.is_own(row, self.principal):
            raise Forbidden("Only the user or key that opened this listen session may open its stream.")
        if row.state == "terminated" or not await self.hub.listen.take_over(sid):
            raise Conflict(f"Listen session {sid} has ended ({row.end_reason or 'terminated'}).", code="session_ended")
        self.session_id = sid
        await super().get(id)

    @property
    def ping_interval(self) -> float | None:
        """Pings find a client that vanished without closing (its session then goes `disconnected`)."""
        return PING_S

    @property
    def ping_timeout(self) -> float | None:
        return PING_S

    async def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self._limit_send_buffer()
        self.hub.streams_opened(self)
        hello = await self.hub.listen.connect(self.session_id, self)
        if hello is None:
            self.end("ended")
            return
        self.send_text(hello)

    def _limit_send_buffer(self) -> None:
        """Bound what waits in the kernel for this listener to a fraction of a second of its audio."""
        listener = self.hub.listen.listeners.get(self.session_id)
        stream: Any = getattr(self.ws_connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if listener is None or sock is None:
            return
        fmt = listener.fmt
        per_s = (fmt.bitrate or 64000) // 8 if fmt.codec == "opus" else fmt.sample_rate * len(fmt.channels) * 2
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(MIN_SEND_BUFFER, per_s // 4))

    def on_message(self, message: str | bytes) -> None:
        """Listeners send nothing the hub needs (a browser's keepalive is ignored)."""

    def on_close(self) -> None:
        self.hub.streams_closed(self)
        if self.session_id:
            self.hub.listen.socket_closed(self.session_id, self)

    # -- what the runtime calls (hark_fleet.hub.listen.runtime.ListenSocket) --

    def send_text(self, message: dict[str, Any]) -> None:
        if self._ended or self.ws_connection is None:
            return
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            future = self.write_message(json_dumps(message).decode())
            future.add_done_callback(_retrieve)

    def send_chunk(self, payload: bytes, frames: int, frame_ms: int) -> bool:
        """Write one chunk unless this listener already has BACKLOG_MS of audio waiting (then it is dropped: False)."""
        if self._ended or self.ws_connection is None:
            return False
        if (self._pending_frames + frames) * frame_ms > BACKLOG_MS:
            return False
        try:
            future = self.write_message(payload, binary=True)
        except tornado.websocket.WebSocketClosedError:
            return False
        self._pending_frames += frames
        future.add_done_callback(lambda f: self._written(f, frames))
        return True

    def _written(self, future: asyncio.Future[None], frames: int) -> None:
        self._pending_frames -= frames
        _retrieve(future)

    def end(self, reason: str) -> None:
        """Send `end` and close (the session ended, or the hub stops)."""
        if self._ended:
            return
        self.send_text({"type": "end", "reason": reason})
        self._ended = True
        self.close(1000, reason)

    def close_stream(self) -> None:
        """The hub is stopping (Hub.stop closes its streams before its connections)."""
        self.hub.listen.hub_stopping(self)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a socket closed meanwhile: nothing to do, but not "never retrieved" either


class AgentListenChunkHandler(AgentHandler):
    """`POST /api/v1/nodes/{id}/listen/chunk?stream={stream_id}`: a node's chunk over HTTP, relayed like one from MQTT."""

    permissions = {"post": CONTROL}
    max_body_bytes = MAX_CHUNK_BYTES

    async def post(self, id: str) -> None:
        stream_id = self.get_query_argument("stream", "")
        if not stream_id:
            raise InvalidRequest("Name the stream: ?stream=<id>.", fields={"stream": "is required"})
        payload = self.body_bytes()
        if len(payload) > MAX_CHUNK_BYTES:
            raise PayloadTooLarge(f"The body is larger than {MAX_CHUNK_BYTES} bytes.", limit=MAX_CHUNK_BYTES)
        dropped = await self.hub.listen.relay_posted(id, stream_id, payload)
        if dropped == "unknown_stream":
            raise NotFound(f"No listen stream {stream_id} on node {id}: nobody listens to it now.", code="unknown_stream")
        if dropped is not None:
            raise InvalidRequest("The body is not a listen chunk of this stream.", fields={"body": dropped})
        self.write_no_content()
