"""Server-Sent Events: the one loop every stream handler runs (keepalives, drop on lag, clean close)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hark_fleet.hub.api.base import BaseHandler
from tornado.iostream import StreamClosedError

FELL_BEHIND = b'event: reset\ndata: {"reason": "this client fell behind"}\n\n'


class StreamHandler(BaseHandler):
    """A long-lived `text/event-stream` answer fed from a queue; the hub closes it on shutdown."""

    accepts_query_token = True

    async def pump(
        self,
        queue: asyncio.Queue[Any],
        encode: Callable[[Any], bytes],
        dropped: Callable[[], bool],
        preamble: list[bytes],
    ) -> None:
        """Send `preamble`, then every queued item, keepalives while idle, and a reset once the client is dropped."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.method == "HEAD":
            self.finish()  # the headers say what GET would stream; a HEAD has no body to wait for
            return
        self._closed = asyncio.Event()
        self.hub.streams_opened(self)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            self.write(b"retry: 2000\n\n" + b"".join(preamble))
            await self.flush()
            while not self._closed.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=self.hub.config.sse_keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    self.write(encode(getter.result()))
                    while not queue.empty():
                        self.write(encode(queue.get_nowait()))
                else:
                    getter.cancel()
                    if closed in done:
                        break
                    self.write(b": keepalive\n\n")
                if dropped():
                    self.write(FELL_BEHIND)
                    await self.flush()
                    break
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            closed.cancel()
            self.hub.streams_closed(self)
        if not self._finished:
            try:
                self.finish()
            except StreamClosedError:
                pass

    def close_stream(self) -> None:
        """End this stream (the client went away, or the hub is stopping)."""
        if hasattr(self, "_closed"):
            self._closed.set()

    def on_connection_close(self) -> None:
        self.close_stream()
