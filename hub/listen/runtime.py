"""The hub's live listen runtime (issue 23): node streams, their listeners, and the commands that keep nodes encoding.

`ListenHub` is made by the Hub (`hub.listen`), started after the bridge and stopped before it.

Sessions of one node asking for the same format (channels, codec, rate, bitrate) share one node stream
(`lst_` id): the node encodes it once and the hub writes each chunk's bytes, unchanged, to every connected
listener of it. The node is told the whole set of its streams on `cmd/listen` at every change and again
every `RENEW_S` (its lease); an empty set once the last listener leaves. Everything here runs on the event
loop; the database side is `hark_fleet.hub.services.listen_sessions`.

More than one hub instance (issue 24, PostgreSQL): each instance relays to the listeners whose sockets it holds
and tells the node its own set (`cmd/listen` names the instance; the node runs the union). Stream ids are a
function of node and format, so listeners of one format on two instances share one node stream; every instance
receives every chunk (MQTT `listen/#` is not a shared subscription) and ignores, uncounted, those of streams it
has no listener for. A session records its instance (`hub_instance`): a client whose stream reaches another
instance (a load balancer, a reconnect) is taken over there; an end decided on another instance (DELETE,
disconnect) reaches the holder by a cluster message and, failing that, by the holder's check of the database
every sweep; sessions of an instance that died are ended by any live one (`terminate_orphans`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.errors import Conflict, NotFound
from hark_fleet.hub.events import Event
from hark_fleet.hub.mqtt.drops import DropLog
from hark_fleet.hub.services import listen_sessions as sessions_db
from hark_fleet.hub.services import listen_settings
from hark_fleet.hub.services.audit import SYSTEM, Actor
from hark_fleet.hub.services.listen_sessions import Format, OpenBody
from hark_fleet.protocol.listen import RENEW_S, ChunkError, ListenCommand, ListenError, chunk_header, listen_topic
from hark_fleet.protocol.topics import NodeTopic, command_topic

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

log = logging.getLogger(__name__)

SWEEP_S = 1.0  # the grace sweeper's period
ORPHANS_S = 5.0  # clustered: sessions of instances gone (not seen for LIVE_S) are looked for this often
MSG_END = "listen.end"  # cluster message: these sessions ended elsewhere; their holder closes their sockets
MSG_RELEASE = "listen.release"  # cluster message: another instance took these sessions over
FLUSH_S = 5.0  # byte counters reach the database at most this often
STATS_S = 2.0  # a connected listener gets a `stats` message this often
_COUNT = struct.Struct("<H")
COUNT_AT = 24  # the chunk header's frame count (hark_fleet.protocol.listen)
WS_REASONS = {  # end_reason -> what the socket's `end` message says
    "disconnected": "disconnected",
    "ended": "ended",
    "node_offline": "node_offline",
    "node_stopped": "node_stopped",
    "hub_stopped": "hub_stopped",
}


class ListenSocket(Protocol):
    """A listener's WebSocket, as the runtime drives it (hark_fleet.hub.api.listen.ListenStreamHandler)."""

    def send_text(self, message: dict[str, Any]) -> None: ...

    def send_chunk(self, payload: bytes, frames: int, frame_ms: int) -> bool: ...

    def end(self, reason: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Listener:
    """A session not terminated, in memory: its socket (when connected) and its counters."""

    session_id: str
    node_id: str
    stream_id: str
    fmt: Format
    opened: float = field(default_factory=time.monotonic)
    socket: ListenSocket | None = None
    gone_at: float | None = None  # monotonic time its client went away (None: connected, or never yet)
    connected_once: bool = False
    bytes_sent: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    flushed: tuple[int, int] = (0, 0)

    @property
    def counters(self) -> tuple[int, int]:
        return self.bytes_sent, self.frames_sent


@dataclass
class NodeStream:
    """One stream a node encodes, and the sessions listening to it."""

    stream_id: str
    node_id: str
    fmt: Format
    sessions: set[str] = field(default_factory=set)


class ListenHub:
    """Every live stream this hub relays; see the issue 23 contract for what each method does."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.listeners: dict[str, Listener] = {}
        self.streams: dict[str, NodeStream] = {}
        self.node_streams: dict[str, dict[Format, str]] = {}  # node id -> format -> stream id
        self.transport = hub.config.listen_transport  # what `cmd/listen` tells nodes: mqtt | http
        self.instance: str = hub.instance_id  # this hub process in the deployment (issue 24)
        self.clustered = bool(hub.config.on_postgres)  # other instances may hold listeners of the same nodes
        self.stopping = False
        self._version = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[Any]] = set()
        self._drops = DropLog(log)
        self.chunks_relayed = 0
        self.chunks_dropped: dict[str, int] = {}
        self._remote_streams: dict[tuple[str, str], float] = {}  # (node, stream) open on another instance -> until

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Terminate sessions a previous run left open (clustered: those of instances gone), then begin renewing streams."""
        if self.clustered:
            ended = len(await self.hub.db.run(sessions_db.terminate_orphans, self.instance))
        else:
            ended = await self.hub.db.run(sessions_db.terminate_all_open, "hub_stopped")
        if ended:
            log.info("%d listen sessions of an earlier run ended (hub_stopped)", ended)
        add_listener: Any = self.hub.events.add_listener
        try:
            add_listener(self._on_event, everywhere=True)  # every instance's node events end the sessions held here
        except TypeError:  # an events hub of one instance: every event is this instance's
            add_listener(self._on_event)
        messages = getattr(self.hub, "cluster_messages", None)
        if messages is not None:
            messages.on(MSG_END, self._on_end_message)
            messages.on(MSG_RELEASE, self._on_release_message)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Close every listener's socket and mark their sessions terminated (`hub_stopped`)."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._work:
            await asyncio.gather(*self._work, return_exceptions=True)
        if self.listeners:
            try:
                await self.end_sessions(
                    list(self.listeners), "hub_stopped", SYSTEM, {"type": "system", "id": None, "name": "hub"}
                )
            except Exception:
                log.exception("could not mark listen sessions ended at shutdown; the next start does")

    # -- opening and ending -----------------------------------------------------------------

    async def open(
        self, principal: Principal, actor: Actor, scope: SiteScope, node_id: str, body: OpenBody, user_agent: str | None
    ) -> dict[str, Any]:
        """A new session on a node (`POST /nodes/{id}/listen`): its stream starts on the node if it is new."""
        async with self._lock:
            running = dict(self.node_streams.get(node_id, {}))
            session, fmt = await self.hub.db.run(
                sessions_db.open_session, scope, principal, actor, node_id, body, user_agent, running, self.instance
            )
            stream_id = session["stream_id"]
            new = self._add_listener(Listener(session["id"], node_id, stream_id, fmt))
        if new:
            self.send_command(node_id)
        return session

    def _add_listener(self, listener: Listener) -> bool:
        """Register a listener and its stream; True when the stream is new here (the node must be told)."""
        self.listeners[listener.session_id] = listener
        stream = self.streams.get(listener.stream_id)
        new = stream is None
        if stream is None:
            stream = self.streams[listener.stream_id] = NodeStream(listener.stream_id, listener.node_id, listener.fmt)
            self.node_streams.setdefault(listener.node_id, {})[listener.fmt] = listener.stream_id
        stream.sessions.add(listener.session_id)
        self._gauge()
        return new

    async def take_over(self, session_id: str) -> bool:
        """Whether the session's listener is here, taking it over when it is open on another instance (clustered).

        A load balancer may send a listener's stream to another instance than its POST, and a client whose instance
        died reconnects to another: the session moves here, and its former holder lets go of it.
        """
        if session_id in self.listeners:
            return True
        if not self.clustered or self.stopping:
            return False
        taken = await self.hub.db.run(sessions_db.take_over, session_id, self.instance)
        if taken is None:
            return False
        row, previous = taken
        new = False
        async with self._lock:
            if session_id not in self.listeners:
                listener = Listener(row.id, row.node_id, row.stream_id, sessions_db.format_of(row))
                listener.bytes_sent, listener.frames_sent = row.bytes_sent, row.frames_sent
                listener.flushed = listener.counters
                new = self._add_listener(listener)
        if new:
            self.send_command(row.node_id)
        if previous is not None and previous != self.instance:
            log.info("listen session %s taken over from hub instance %s", session_id, previous)
            self._message(MSG_RELEASE, {"session_ids": [session_id], "to": self.instance})
        return True

    async def end(self, principal: Principal | None, actor: Actor, node_id: str, session_id: str) -> dict[str, Any]:
        """`DELETE /nodes/{id}/listen/{sid}`: own session or listen:manage; terminated `ended`, audited."""
        await self.hub.db.run(sessions_db.check_end, principal, session_id, node_id)
        ended = await self.end_sessions(
            [session_id], "ended", actor, sessions_db.actor_json(actor), "listen_session.end", anywhere=True
        )
        if not ended:
            raise Conflict(f"Listen session {session_id} has already ended.", code="session_ended")
        return ended[0]

    async def disconnect(
        self, session_id: str, actor: Actor, reason: str | None = None, principal: Principal | None = None
    ) -> dict[str, Any]:
        """Disconnect a session (`POST /listen-sessions/{id}/disconnect`): terminated `disconnected`, audited with who and why.

        With `principal`, only its own sessions or, with listen:manage, those of its sites (else 404; 409 `session_ended`
        for one already terminated). Returns the session after.
        """
        if principal is not None:
            await self.hub.db.run(sessions_db.check_end, principal, session_id, None)
        ended = await self.end_sessions(
            [session_id], "disconnected", actor, sessions_db.actor_json(actor, reason), "listen_session.disconnect", anywhere=True
        )
        if not ended:
            raise Conflict(f"Listen session {session_id} has already ended.", code="session_ended")
        return ended[0]

    async def end_sessions(
        self,
        session_ids: list[str],
        reason: str,
        actor: Actor,
        ended_by: dict[str, Any] | None = None,
        action: str | None = None,
        anywhere: bool = False,
    ) -> list[dict[str, Any]]:
        """Terminate sessions with `reason`: their sockets get `end` and close, streams left empty stop on the node.

        Clustered, only the sessions this instance holds end, unless `anywhere` (an end a user asked for): then
        those held by another instance end in the database and their holder is told to close their sockets.
        """
        counters = {sid: self.listeners[sid].counters for sid in session_ids if sid in self.listeners}
        instance = self.instance if self.clustered and not anywhere else None
        ended = await self.hub.db.run(sessions_db.terminate, session_ids, reason, actor, ended_by, counters, action, instance)
        self._close_local(session_ids, reason)
        elsewhere = [s["id"] for s in ended if s["id"] not in counters]
        if self.clustered and elsewhere:
            self._message(MSG_END, {"session_ids": elsewhere, "reason": reason})
        return ended

    def _close_local(self, session_ids: list[str], reason: str | None) -> None:
        """Forget these listeners here: sockets get `end` (for `reason`; None: closed quietly), empty streams stop."""
        touched: set[str] = set()
        for sid in session_ids:
            listener = self.listeners.pop(sid, None)
            if listener is None:
                continue
            socket, listener.socket = listener.socket, None
            if socket is not None:
                if reason in WS_REASONS:
                    socket.end(WS_REASONS[reason])
                elif reason is None:
                    socket.close()
            stream = self.streams.get(listener.stream_id)
            if stream is not None:
                stream.sessions.discard(sid)
                if not stream.sessions:
                    self._drop_stream(stream)
                    touched.add(stream.node_id)
        self._gauge()
        for node_id in touched:
            self.send_command(node_id)

    # -- between instances ------------------------------------------------------------------

    def _message(self, kind: str, payload: dict[str, Any]) -> None:
        messages = getattr(self.hub, "cluster_messages", None)
        if messages is None:
            return  # the holder finds out from the database within a sweep
        try:
            messages.send_soon(kind, payload)
        except Exception:
            log.exception("could not tell the other hub instances (%s); they find out from the database", kind)

    def _on_end_message(self, payload: dict[str, Any], sender: str) -> Any:
        """Sessions ended on another instance: those held here close (their final counters written)."""
        ids = [sid for sid in payload.get("session_ids") or [] if isinstance(sid, str) and sid in self.listeners]
        if sender == self.instance or not ids:
            return None
        reason = payload.get("reason")
        return self._ended_elsewhere({sid: reason if isinstance(reason, str) else "ended" for sid in ids})

    def _on_release_message(self, payload: dict[str, Any], sender: str) -> None:
        """Another instance took these sessions over (their client's stream reached it): let go of them quietly."""
        if sender == self.instance:
            return
        ids = [sid for sid in payload.get("session_ids") or [] if isinstance(sid, str) and sid in self.listeners]
        if ids:
            self._close_local(ids, None)

    async def _ended_elsewhere(self, reasons: dict[str, str]) -> None:
        counters = {sid: self.listeners[sid].counters for sid in reasons if sid in self.listeners}
        for reason in sorted(set(reasons.values())):
            self._close_local([sid for sid, r in reasons.items() if r == reason], reason)
        if counters:
            await self.hub.db.run(sessions_db.flush_counters, counters, self.instance)

    async def reconcile(self) -> None:
        """Clustered: let go of the sessions the database says are no longer this instance's (ended or taken over)."""
        if not self.clustered or not self.listeners:
            return
        gone = await self.hub.db.run(sessions_db.not_held, sorted(self.listeners), self.instance)
        moved = [sid for sid, reason in gone.items() if reason is None]
        if moved:
            self._close_local(moved, None)
        ended = {sid: reason for sid, reason in gone.items() if reason is not None}
        if ended:
            await self._ended_elsewhere(ended)

    async def end_orphans(self) -> list[str]:
        """Clustered: end the open sessions of instances gone (their sockets died with them); any live instance may."""
        if not self.clustered:
            return []
        ended: list[str] = await self.hub.db.run(sessions_db.terminate_orphans, self.instance)
        if ended:
            log.info("%d listen sessions of hub instances gone ended (hub_stopped)", len(ended))
        return ended

    def _drop_stream(self, stream: NodeStream) -> None:
        self.streams.pop(stream.stream_id, None)
        formats = self.node_streams.get(stream.node_id, {})
        if formats.get(stream.fmt) == stream.stream_id:
            formats.pop(stream.fmt)

    # -- the node's command ------------------------------------------------------------------

    def next_version(self) -> int:
        """Increasing across commands and across hub runs (seeded from the clock in milliseconds)."""
        self._version = max(self._version + 1, int(time.time() * 1000))
        return self._version

    def command_for(self, node_id: str) -> ListenCommand:
        formats = self.node_streams.get(node_id, {})
        streams = [fmt.stream(stream_id) for fmt, stream_id in sorted(formats.items(), key=lambda item: item[1])]
        return ListenCommand(version=self.next_version(), streams=streams, transport=self.transport, hub=self.instance)

    def send_command(self, node_id: str) -> bool:
        """Publish the node's whole set of streams on `cmd/listen` (QoS 1); forget a node left with none."""
        command = self.command_for(node_id)
        if not command.streams:
            self.node_streams.pop(node_id, None)
        bridge = self.hub.bridge
        if bridge is None:
            return False
        return bridge.publish(command_topic(node_id, "listen"), msgspec.json.encode(command), qos=1)

    # -- sockets ------------------------------------------------------------------------------

    def is_live(self, session_id: str) -> bool:
        return session_id in self.listeners

    async def connect(self, session_id: str, socket: ListenSocket) -> dict[str, Any] | None:
        """A listener's socket opened: the session is active (a socket it had before is replaced); the hello to send."""
        listener = self.listeners.get(session_id)
        if listener is None or self.stopping:
            return None
        listener.gone_at = None
        session = await self.hub.db.run(sessions_db.mark_connected, session_id)
        if session is None or self.listeners.get(session_id) is not listener or self.stopping:
            return None
        # Only now, with no await before the caller writes the hello: no chunk can reach the socket ahead of it.
        previous, listener.socket = listener.socket, socket
        listener.connected_once = True
        if previous is not None and previous is not socket:
            previous.close()  # a reconnect replaces a socket whose end the hub has not noticed yet
        session["bytes_sent"], session["frames_sent"] = listener.counters
        self._gauge()
        fmt = listener.fmt
        return {
            "type": "hello",
            "session": session,
            "codec": fmt.codec,
            "sample_rate": fmt.sample_rate,
            "channels": len(fmt.channels),
            "frame_ms": 20,
            "bitrate": fmt.bitrate,
        }

    def socket_closed(self, session_id: str, socket: ListenSocket) -> None:
        """A listener's socket went away: unless the hub ended it, the session is disconnected and the grace runs."""
        listener = self.listeners.get(session_id)
        if listener is None or listener.socket is not socket:
            return
        listener.socket = None
        self._gauge()
        if self.stopping:
            return
        listener.gone_at = time.monotonic()
        sent, frames = listener.counters
        listener.flushed = (sent, frames)
        self._spawn(self.hub.db.run(sessions_db.mark_disconnected, session_id, sent, frames, self._mine()))

    def hub_stopping(self, socket: ListenSocket) -> None:
        """The hub stops accepting (it closes its streams first): the socket gets `end` hub_stopped and closes."""
        self.stopping = True
        socket.end("hub_stopped")

    # -- chunks -------------------------------------------------------------------------------

    def on_chunk(self, topic: NodeTopic, payload: bytes) -> None:
        """A chunk from MQTT `listen/{stream_id}` (or `listen/{stream_id}/error`): relay it to the stream's listeners."""
        rest = topic.rest or ""
        if rest.endswith("/error"):
            self.on_error(topic.node_id, rest[: -len("/error")], payload)
            return
        self.relay(topic.node_id, rest, payload)

    def relay(self, node_id: str, stream_id: str, payload: bytes) -> str | None:
        """Write the chunk's bytes to every connected listener of the stream; None when relayed, else why it was dropped."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.node_id != node_id:
            if self.clustered:
                return "unknown_stream"  # another instance's listeners' stream: not a drop
            return self._dropped("unknown_stream", node_id, stream_id)
        problem = self._check(stream, payload)
        if problem is not None:
            return problem
        frame_ms = payload[6]  # the header's, checked by _check
        (frames,) = _COUNT.unpack_from(payload, COUNT_AT)
        size = len(payload)
        for session_id in stream.sessions:
            listener = self.listeners.get(session_id)
            if listener is None or listener.socket is None:
                continue
            if listener.socket.send_chunk(payload, frames, frame_ms):
                listener.bytes_sent += size
                listener.frames_sent += frames
            else:
                listener.frames_dropped += frames
                self.hub.metrics.listen_frames_dropped.inc(frames)
        self.chunks_relayed += 1
        self.hub.metrics.listen_chunks.labels("relayed").inc()
        return None

    async def relay_posted(self, node_id: str, stream_id: str, payload: bytes) -> str | None:
        """A chunk a node POSTed (its HTTP transport); None when taken, else why it was refused.

        Clustered, a chunk of a stream open on any instance goes to MQTT's `listen/` topic, so that every instance
        relays it to its own listeners (this one too, from its subscription); else, and without a broker, `relay`.
        """
        bridge = self.hub.bridge
        if not self.clustered or bridge is None or not bridge.connected:
            return self.relay(node_id, stream_id, payload)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.node_id == node_id:
            problem = self._check(stream, payload)
        else:
            try:
                chunk_header(payload)
                problem = None
            except ChunkError as err:
                problem = self._dropped("invalid_chunk", node_id, stream_id, str(err))
            if problem is None and not await self._open_anywhere(node_id, stream_id):
                problem = self._dropped("unknown_stream", node_id, stream_id)
        if problem is not None:
            return problem
        if not bridge.publish(listen_topic(node_id, stream_id), payload, qos=0):
            return self.relay(node_id, stream_id, payload)
        return None

    async def _open_anywhere(self, node_id: str, stream_id: str) -> bool:
        """Whether an open session of any instance listens to this stream (remembered for a few seconds)."""
        now = time.monotonic()
        key = (node_id, stream_id)
        if self._remote_streams.get(key, 0.0) > now:
            return True
        if len(self._remote_streams) > 1000:
            self._remote_streams = {k: t for k, t in self._remote_streams.items() if t > now}
        if not await self.hub.db.run(sessions_db.stream_open, node_id, stream_id):
            return False
        self._remote_streams[key] = now + ORPHANS_S
        return True

    def _check(self, stream: NodeStream, payload: bytes) -> str | None:
        """Why the chunk is not one of this stream's (counted as a drop), None when it is."""
        try:
            codec, channels, _frame_ms, _flags, rate, _seq, _capture = chunk_header(payload)
        except ChunkError as err:
            return self._dropped("invalid_chunk", stream.node_id, stream.stream_id, str(err))
        fmt = stream.fmt
        if codec != fmt.codec or channels != len(fmt.channels) or rate != fmt.sample_rate:
            return self._dropped("wrong_format", stream.node_id, stream.stream_id, f"{codec} {channels} ch {rate} Hz")
        return None

    def _dropped(self, reason: str, node_id: str, stream_id: str, detail: str = "") -> str:
        self.chunks_dropped[reason] = self.chunks_dropped.get(reason, 0) + 1
        self.hub.metrics.listen_chunks.labels(reason).inc()
        self._drops.dropped(node_id, reason, f"listen/{stream_id}", detail)
        return reason

    def on_error(self, node_id: str, stream_id: str, payload: bytes) -> None:
        """The node cannot run a stream: its sessions end `node_stopped`, with the node's error as the reason."""
        try:
            error = msgspec.json.decode(payload, type=ListenError)
            message = error.error
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            message = f"the node reported an error the hub could not read: {err}"
        stream = self.streams.get(stream_id)
        if stream is None or stream.node_id != node_id:
            return
        log.warning("node %s cannot run listen stream %s: %s", node_id, stream_id, message)
        ended_by = {"type": "node", "id": node_id, "name": None, "reason": message[:500]}
        self._spawn(self.end_sessions(sorted(stream.sessions), "node_stopped", Actor("node", node_id, None), ended_by))

    # -- node events ---------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """A node going offline or deleted ends its sessions (`node_offline`)."""
        if event.type not in ("node.offline", "node.deleted"):
            return
        node_id = event.data.get("node_id")
        if not isinstance(node_id, str):
            return
        ids = [sid for sid, listener in self.listeners.items() if listener.node_id == node_id]
        if ids:
            why = "the node was deleted" if event.type == "node.deleted" else "the node went offline"
            ended_by = {"type": "system", "id": None, "name": "hub", "reason": why}
            self._spawn(self.end_sessions(ids, "node_offline", SYSTEM, ended_by))

    # -- the sweeper ---------------------------------------------------------------------------

    async def _run(self) -> None:
        last_flush = last_renew = last_stats = last_orphans = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            try:
                await self.reconcile()
                await self.sweep(now)
            except Exception:
                log.exception("listen sweep failed; retrying")
            if self.clustered and now - last_orphans >= ORPHANS_S:
                last_orphans = now
                try:
                    await self.end_orphans()
                except Exception:
                    log.exception("ending the listen sessions of hub instances gone failed; retrying")
            if now - last_renew >= RENEW_S:
                last_renew = now
                for node_id in list(self.node_streams):
                    self.send_command(node_id)
            if now - last_stats >= STATS_S:
                last_stats = now
                self.send_stats()
            if now - last_flush >= FLUSH_S:
                last_flush = now
                try:
                    await self.flush()
                except Exception:
                    log.exception("writing listen counters failed; retrying")

    async def sweep(self, now: float | None = None) -> None:
        """Sessions whose client is gone (or never came) for longer than the grace end `client_gone`; nodes gone end theirs."""
        if not self.listeners:
            return
        now = time.monotonic() if now is None else now
        settings = await self.hub.db.run(listen_settings.load)
        grace = float(settings.disconnect_grace_s)
        gone = [
            sid
            for sid, listener in self.listeners.items()
            if listener.socket is None
            and (
                (listener.gone_at is not None and now - listener.gone_at >= grace)
                or (not listener.connected_once and now - listener.opened >= grace)
            )
        ]
        if gone:
            ended_by = {"type": "system", "id": None, "name": "hub", "reason": f"its client was gone for {grace:g} s"}
            await self.end_sessions(gone, "client_gone", SYSTEM, ended_by)
        nodes = sorted({listener.node_id for listener in self.listeners.values()})
        statuses = await self.hub.db.run(sessions_db.node_statuses, nodes)
        lost = {n for n in nodes if statuses.get(n) not in sessions_db.ONLINE}
        if lost:
            ids = [sid for sid, listener in self.listeners.items() if listener.node_id in lost]
            ended_by = {"type": "system", "id": None, "name": "hub", "reason": "the node is offline or gone"}
            await self.end_sessions(ids, "node_offline", SYSTEM, ended_by)

    async def flush(self) -> None:
        """Write the counters that moved since the last flush."""
        moved = {sid: listener.counters for sid, listener in self.listeners.items() if listener.counters != listener.flushed}
        if not moved:
            return
        await self.hub.db.run(sessions_db.flush_counters, moved, self._mine())
        for sid, counters in moved.items():
            listener = self.listeners.get(sid)
            if listener is not None:
                listener.flushed = counters

    def send_stats(self) -> None:
        per_node: dict[str, int] = {}
        for listener in self.listeners.values():
            if listener.socket is not None:
                per_node[listener.node_id] = per_node.get(listener.node_id, 0) + 1
        for listener in list(self.listeners.values()):
            if listener.socket is not None:
                listener.socket.send_text(
                    {
                        "type": "stats",
                        "bytes_sent": listener.bytes_sent,
                        "frames_sent": listener.frames_sent,
                        "frames_dropped": listener.frames_dropped,
                        "listeners": per_node.get(listener.node_id, 0),
                    }
                )

    # -- helpers -------------------------------------------------------------------------------

    def node_listeners(self, node_id: str) -> int:
        return sum(1 for listener in self.listeners.values() if listener.node_id == node_id)

    def _mine(self) -> str | None:
        """Clustered: this instance, so that writes touch only the sessions it still holds (None: every session)."""
        return self.instance if self.clustered else None

    def _gauge(self) -> None:
        self.hub.metrics.listen_listeners.set(sum(1 for listener in self.listeners.values() if listener.socket is not None))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(functools.partial(self._done))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("listen work failed", exc_info=task.exception())

    def require_live(self, session_id: str) -> None:
        if session_id not in self.listeners:
            raise NotFound(f"Listen session {session_id} is not live.")
