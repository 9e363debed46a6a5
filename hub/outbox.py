"""A live stream client's outbox: the encoded SSE frames its socket has not taken yet, bounded.

A producer (the meter fan-out, the events bus) hands every client the same bytes, encoded once, and
never waits: `put` is a list append, two additions and a comparison. The client's stream handler
takes the whole outbox in one write and hands its socket the next write only once the socket took
the previous one. So the outbox fills only while the socket does not take data (a client that stops
reading, a slow link) or while the handler does not get the loop: past `max_frames` frames or
`max_bytes` bytes the client is dropped at once, its frames discarded and its producer told, and the
handler closes the stream. What a client can lag is thereby bounded by its outbox, one write and its
socket's send buffer (`SEND_BUFFER`), whatever the others do.

A handler whose producer paces its frames itself (a coalesced stream's ticks) may also register `direct`: while
the outbox is empty and the handler has no write pending, `put` hands the frame to it, and it writes the frame at
once, without waking the handler (a tick to 1,000 clients is then 1,000 writes, not 1,000 coroutines woken, each
making a new wait). While a write is pending `direct` declines and frames queue, and are dropped, as above.

Everything here runs on the hub's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_UNSENT_BYTES = 1 << 20  # an outbox holding more than this is dropped, whatever its frame count
SEND_BUFFER = 128 * 1024  # SO_SNDBUF of a stream's socket (Linux doubles it): bounds what waits in the kernel


class Outbox:
    """Encoded frames waiting for one stream client's socket; `dropped` once they were too many."""

    __slots__ = ("max_frames", "max_bytes", "frames", "count", "size", "dropped", "on_drop", "direct", "_waiter")

    def __init__(self, max_frames: int, max_bytes: int = MAX_UNSENT_BYTES) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames: list[bytes] = []  # chunks of one frame or more
        self.count = 0  # frames in them
        self.size = 0
        self.dropped = False
        self.on_drop: Callable[[], None] | None = None  # the stream handler's: called once, when dropped
        self.direct: Callable[[bytes], bool] | None = None  # the stream handler's: writes a chunk now, or False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, frame: bytes) -> bool:
        """Queue one frame; False when that made this client too far behind (it is dropped now) or it already was."""
        return self.put_many(frame, 1)

    def put_many(self, chunk: bytes, count: int) -> bool:
        """Queue `count` frames already joined into one chunk (a batch every subscriber of it gets whole); as `put`."""
        if self.dropped:
            return False
        if not self.frames and self.direct is not None and self.direct(chunk):
            return True
        self.frames.append(chunk)
        self.count += count
        self.size += len(chunk)
        if self.count > self.max_frames or self.size > self.max_bytes:
            self.drop()
            return False
        if self._waiter is not None:
            self.wake()
        return True

    def drop(self) -> None:
        """Give up on this client: discard what waits, wake its handler, tell it once."""
        if self.dropped:
            return
        self.dropped = True
        self.frames = []
        self.count = self.size = 0
        self.wake()
        if self.on_drop is not None:
            self.on_drop()

    def take(self) -> bytes:
        """Everything waiting, as one write, and an empty outbox."""
        frames = self.frames
        if not frames:
            return b""
        self.frames = []
        self.count = self.size = 0
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def wake(self) -> None:
        """End a `wait` in progress (new frames, dropped, or the stream is closing)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until there is something to send, the client is dropped, `wake` is called, or `timeout` seconds pass."""
        if self.frames or self.dropped:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
