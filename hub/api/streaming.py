"""Server-Sent Events: the one loop every stream handler runs (batched writes, keepalives, drop on lag, clean close).

A stream's frames wait in its `Outbox` (`hark_fleet.hub.outbox`), filled by a producer that never waits. The
handler writes all that waits in one write, at most once per `WRITE_INTERVAL_S`, and the next one only when the
socket took the previous (Tornado's own write buffer never grows past one write). A client that does not read fills
its outbox and is dropped: when its socket still takes data it gets `event: reset` and the stream ends; when it
does not (the last write is still waiting), the connection is closed at once. Either way it is counted in
`hark_sse_clients_dropped_total{stream}`, and nobody else waits for it.

With `direct` (a producer that paces its frames itself: a coalesced stream's ticks) the handler also writes a frame
straight from the producer's `put` while nothing waits in the outbox and no write is pending, without waking the
handler's coroutine; the handler then only sends what queued behind a pending write, keepalives, and the reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.outbox import SEND_BUFFER, Outbox
from tornado.iostream import StreamClosedError

FELL_BEHIND = b'event: reset\ndata: {"reason": "this client fell behind"}\n\n'
KEEPALIVE = b": keepalive\n\n"
WRITE_INTERVAL_S = 0.025  # at most one write per client this often: frames in between go out together
DROP_GRACE_S = 5.0  # a dropped client's socket gets this long to take its final reset


class StreamHandler(BaseHandler):
    """A long-lived `text/event-stream` answer fed from an outbox; the hub closes it on shutdown."""

    accepts_query_token = True
    _closing = False
    _writing = False
    _pending: Any = None  # the flush of a direct write, until the socket took it
    _sent_directly = False  # a direct write since the handler last woke
    _outbox: Outbox | None = None
    _stream_name = ""

    async def pump(
        self, outbox: Outbox, preamble: list[bytes], stream: str, write_interval: float = WRITE_INTERVAL_S, direct: bool = False
    ) -> None:
        """Send `preamble`, then what the outbox gets, keepalives while idle, and a reset once the client is dropped.

        At most one write per `write_interval`; 0 when the producer already paces its frames (a coalesced stream's ticks),
        which may then also have its frames written from its `put` (`direct`) while the outbox is empty and the socket idle.
        """
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.method == "HEAD":
            self.finish()  # the headers say what GET would stream; a HEAD has no body to wait for
            return
        self._outbox, self._stream_name = outbox, stream
        outbox.on_drop = self._on_drop
        self._limit_send_buffer()
        self.hub.streams_opened(self)
        clients = self.hub.metrics.sse_clients.labels(stream)
        clients.inc()
        keepalive_s = self.hub.config.sse_keepalive_s
        try:
            await self._send(b"retry: 2000\n\n" + b"".join(preamble))
            if direct:
                outbox.direct = self._write_now
            while not self._closing:
                await outbox.wait(keepalive_s)
                pending = self._pending
                if pending is not None:
                    await pending  # what queued behind a direct write goes after it
                if self._closing:
                    break
                if outbox.dropped:
                    self.write(FELL_BEHIND)
                    try:
                        await asyncio.wait_for(self.flush(), DROP_GRACE_S)
                    except TimeoutError:
                        self._abort()  # it took the frames before but not its reset: it has stopped reading
                    break
                data = outbox.take()
                if not data and self._sent_directly:
                    self._sent_directly = False  # not idle: ticks went out directly
                    continue
                self._sent_directly = False
                await self._send(data or KEEPALIVE)
                if write_interval:
                    await asyncio.sleep(write_interval)
        except StreamClosedError:
            pass
        finally:
            outbox.on_drop = outbox.direct = None
            clients.dec()
            self.hub.streams_closed(self)
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    async def _send(self, data: bytes) -> None:
        self.write(data)
        self._writing = True
        try:
            await self.flush()
        finally:
            self._writing = False

    def _write_now(self, data: bytes) -> bool:
        """`Outbox.direct`: write `data` now unless a write is pending (False: the outbox queues it, and wakes the handler)."""
        if self._writing or self._closing:
            return False
        self.write(data)
        self._writing = self._sent_directly = True
        pending = self._pending = self.flush()
        pending.add_done_callback(self._written)
        return True

    def _written(self, future: Any) -> None:
        if self._pending is future:
            self._pending = None
            self._writing = False
        if future.cancelled() or future.exception() is not None:
            self.close_stream()  # the socket closed; the handler ends its stream

    def _limit_send_buffer(self) -> None:
        """Bound what waits in the kernel for this client (without it, autotuning lets megabytes, seconds of frames, pile up)."""
        sock = getattr(getattr(getattr(self.request.connection, "stream", None), "socket", None), "setsockopt", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def _on_drop(self) -> None:
        """The producer dropped this client (called from its fan-out, so only counted and scheduled here)."""
        self.hub.metrics.sse_dropped.labels(self._stream_name).inc()
        if self._writing:  # its socket has not taken the last write: a reset would only wait behind it
            self._closing = True
            asyncio.get_running_loop().call_soon(self._abort)

    def _abort(self) -> None:
        stream: Any = getattr(self.request.connection, "stream", None)
        if stream is not None and not stream.closed():
            stream.close()

    def close_stream(self) -> None:
        """End this stream (the client went away, or the hub is stopping)."""
        self._closing = True
        if self._outbox is not None:
            self._outbox.wake()
        if self._writing:  # a socket that does not take its last write would hold the hub's shutdown
            asyncio.get_running_loop().call_soon(self._abort)

    def on_connection_close(self) -> None:
        self.close_stream()
