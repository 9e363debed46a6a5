"""Where a live-listen stream's frames go: MQTT at QoS 0, a chunk per frame, or batched POSTs to the agent route.

MQTT (the default, and what the hub asks for while the node is connected) is the low-delay path:
each 20 ms frame is published from the stream's own thread the moment it is encoded, to
`hark/v1/nodes/{id}/listen/{stream_id}`; paho only queues it (the network thread writes), so the
stream never waits for the network. When the hub's command says `transport: "http"`, or while the
broker is not connected, frames go to `POST /api/v1/nodes/{id}/listen/chunk?stream={stream_id}`
instead: one request in flight per stream, the frames that arrive meanwhile batched into the next
chunk (up to MAX_FRAMES_PER_CHUNK), held in a bounded queue that drops its oldest frame when full
(counted; the next chunk then carries FLAG_DISCONTINUITY).

A stream that cannot run is reported on `listen/{stream_id}/error` at QoS 1 (JSON ListenError).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hark_fleet.node.errors import HubRejected, NodeError
from hark_fleet.node.listen.streams import Frame
from hark_fleet.node.topics import NodeTopics
from hark_fleet.protocol.listen import (
    FLAG_DISCONTINUITY,
    HEADER_BYTES,
    MAX_CHUNK_BYTES,
    MAX_FRAMES_PER_CHUNK,
    ListenError,
    ListenStream,
    encode_chunk,
)

log = logging.getLogger(__name__)

HTTP_QUEUE_FRAMES = 100  # two seconds of frames wait for a POST; older ones are dropped

Publish = Callable[[str, bytes, int], bool]  # topic, payload, qos -> queued for sending
Post = Callable[[str, bytes], Awaitable[None]]  # stream_id, chunk


@dataclass
class _HttpQueue:
    stream: ListenStream
    frames: deque[Frame] = field(default_factory=deque)
    dropped: bool = False  # frames were dropped since the last chunk: the next one says so
    task: asyncio.Task[None] | None = None
    rejected_logged: bool = False


class ListenSender:
    """Sends the frames of every stream; `send` is called on the streams' threads and never blocks."""

    def __init__(
        self,
        topics: NodeTopics,
        publish: Publish,
        connected: Callable[[], bool],
        post: Post,
        queue_frames: int = HTTP_QUEUE_FRAMES,
    ) -> None:
        self.topics = topics
        self._publish = publish
        self._connected = connected
        self._post = post
        self.queue_frames = queue_frames
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, _HttpQueue] = {}
        self.mqtt_frames = 0
        self.mqtt_bytes = 0
        self.http_frames = 0
        self.http_bytes = 0
        self.http_posts = 0
        self.http_failures = 0
        self.frames_dropped = 0
        self.errors_reported = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the HTTP path runs on."""
        self._loop = loop

    def send(self, stream: ListenStream, frame: Frame, transport: str) -> None:
        """One frame, now: published on MQTT when asked and connected, else queued for the next POST."""
        if transport == "mqtt" and self._connected():
            channels = len(stream.channels)
            chunk = encode_chunk(
                stream.codec, channels, stream.sample_rate, frame.seq, frame.capture_us, [frame.payload], flags=frame.flags
            )
            if self._publish(self.topics.listen(stream.stream_id), chunk, 0):
                self.mqtt_frames += 1
                self.mqtt_bytes += len(chunk)
                return
        loop = self._loop
        if loop is None or loop.is_closed():
            self.frames_dropped += 1
            return
        try:
            loop.call_soon_threadsafe(self._queue, stream, frame)
        except RuntimeError:  # the loop closed meanwhile: the agent is stopping
            self.frames_dropped += 1

    def report_error(self, error: ListenError) -> None:
        """A stream that cannot run, on `listen/{stream_id}/error` (QoS 1); from any thread."""
        if self._publish(self.topics.listen_error(error.stream_id), msgspec.json.encode(error), 1):
            self.errors_reported += 1
        else:
            log.warning("listen stream %s: its error could not be reported (broker not connected)", error.stream_id)

    def stats(self) -> dict[str, Any]:
        return {
            "mqtt_frames": self.mqtt_frames,
            "mqtt_bytes": self.mqtt_bytes,
            "http_frames": self.http_frames,
            "http_bytes": self.http_bytes,
            "http_posts": self.http_posts,
            "http_failures": self.http_failures,
            "frames_dropped": self.frames_dropped,
            "http_queued": sum(len(q.frames) for q in self._queues.values()),
            "errors_reported": self.errors_reported,
        }

    async def close(self) -> None:
        """Cancel the POSTs in flight and forget what waits."""
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()

    # -- the HTTP path, on the loop ------------------------------------------------------

    def _queue(self, stream: ListenStream, frame: Frame) -> None:
        queue = self._queues.get(stream.stream_id)
        if queue is None or queue.stream != stream:
            queue = self._queues[stream.stream_id] = _HttpQueue(stream)
        if len(queue.frames) >= self.queue_frames:
            queue.frames.popleft()
            queue.dropped = True
            self.frames_dropped += 1
        queue.frames.append(frame)
        if queue.task is None:
            queue.task = asyncio.get_running_loop().create_task(self._drain(queue))

    async def _drain(self, queue: _HttpQueue) -> None:
        stream = queue.stream
        try:
            while queue.frames:
                frames = _take_batch(queue.frames)
                flags = frames[0].flags | (FLAG_DISCONTINUITY if queue.dropped else 0)
                queue.dropped = False
                chunk = encode_chunk(
                    stream.codec,
                    len(stream.channels),
                    stream.sample_rate,
                    frames[0].seq,
                    frames[0].capture_us,
                    [f.payload for f in frames],
                    flags=flags,
                )
                try:
                    await self._post(stream.stream_id, chunk)
                except NodeError as err:
                    self.http_failures += 1
                    self.frames_dropped += len(frames)
                    queue.dropped = True
                    if not isinstance(err, HubRejected) or not queue.rejected_logged:
                        log.warning("listen stream %s: POST of %d frames failed: %s", stream.stream_id, len(frames), err)
                    queue.rejected_logged = queue.rejected_logged or isinstance(err, HubRejected)
                    continue
                self.http_posts += 1
                self.http_frames += len(frames)
                self.http_bytes += len(chunk)
        finally:
            queue.task = None
            # an idle queue goes, unless its next chunk must still say that frames were lost
            if not queue.frames and not queue.dropped and self._queues.get(stream.stream_id) is queue:
                del self._queues[stream.stream_id]


def _take_batch(frames: deque[Frame]) -> list[Frame]:
    """The oldest frames that fit one chunk: consecutive seq, no discontinuity after the first, within the size limit."""
    batch = [frames.popleft()]
    size = HEADER_BYTES + 2 + len(batch[0].payload)
    while frames and len(batch) < MAX_FRAMES_PER_CHUNK:
        following = frames[0]
        if following.seq != batch[-1].seq + 1 or following.flags & FLAG_DISCONTINUITY:
            break
        if size + 2 + len(following.payload) > MAX_CHUNK_BYTES:
            break
        batch.append(frames.popleft())
        size += 2 + len(batch[-1].payload)
    return batch
