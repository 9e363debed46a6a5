"""Where listen frames go: one MQTT chunk per frame while connected, batched POSTs otherwise, errors on QoS 1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hark_fleet.hub.processes import free_port
from hark_fleet.node.errors import HubUnreachable
from hark_fleet.node.hub_client import HubClient
from hark_fleet.node.listen.sender import ListenSender
from hark_fleet.node.listen.streams import Frame
from hark_fleet.node.topics import NodeTopics
from hark_fleet.protocol.listen import FLAG_DISCONTINUITY, ListenError, ListenStream, parse_chunk
from tornado.web import Application, RequestHandler

STREAM = ListenStream("lst_a", [0, 1], "opus", 48000, 64000)


def frame(seq: int, flags: int = 0) -> Frame:
    return Frame(seq, 1_700_000_000_000_000 + seq * 20_000, bytes([seq % 256]) * 40, flags)


class Fakes:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.published: list[tuple[str, bytes, int]] = []
        self.posted: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.fail_next = False
        self.hold = False

    def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        if not self.connected:
            return False
        self.published.append((topic, payload, qos))
        return True

    async def post(self, stream_id: str, chunk: bytes) -> None:
        self.posted.append((stream_id, chunk))
        if self.hold:
            await self.release.wait()
            self.release.clear()
        if self.fail_next:
            self.fail_next = False
            raise HubUnreachable("POST: connection refused")

    def sender(self, **kwargs: Any) -> ListenSender:
        sender = ListenSender(NodeTopics("n1"), self.publish, lambda: self.connected, self.post, **kwargs)
        sender.start(asyncio.get_running_loop())
        return sender


async def until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_each_frame_is_one_chunk_on_its_mqtt_topic_at_qos_0() -> None:
    async def scenario() -> None:
        fakes = Fakes()
        sender = fakes.sender()
        sender.send(STREAM, frame(0, FLAG_DISCONTINUITY), "mqtt")
        sender.send(STREAM, frame(1), "mqtt")
        assert [(t, q) for t, _, q in fakes.published] == [("hark/v1/nodes/n1/listen/lst_a", 0)] * 2
        first, second = (parse_chunk(p) for _, p, _ in fakes.published)
        assert (first.codec, first.channels, first.sample_rate, first.seq, first.frame_ms) == ("opus", 2, 48000, 0, 20)
        assert first.discontinuity and not second.discontinuity
        assert second.capture_us == frame(1).capture_us and second.frames == [frame(1).payload]
        assert sender.stats()["mqtt_frames"] == 2 and fakes.posted == []

    asyncio.run(scenario())


def test_without_the_broker_frames_are_posted_and_batched_while_a_post_is_in_flight() -> None:
    async def scenario() -> None:
        fakes = Fakes(connected=False)
        fakes.hold = True
        sender = fakes.sender()
        sender.send(STREAM, frame(0), "mqtt")
        await until(lambda: len(fakes.posted) == 1)
        for seq in range(1, 6):
            sender.send(STREAM, frame(seq), "mqtt")
        await asyncio.sleep(0)
        fakes.release.set()
        await until(lambda: len(fakes.posted) == 2)
        fakes.release.set()
        await until(lambda: sender.stats()["http_posts"] == 2)
        chunks = [parse_chunk(body) for _, body in fakes.posted]
        assert [(c.seq, len(c.frames)) for c in chunks] == [(0, 1), (1, 5)]
        assert chunks[1].capture_us == frame(1).capture_us and chunks[1].frames[4] == frame(5).payload
        stats = sender.stats()
        assert (stats["http_frames"], stats["frames_dropped"], stats["mqtt_frames"]) == (6, 0, 0)
        await sender.close()

    asyncio.run(scenario())


def test_the_http_queue_drops_its_oldest_frames_when_full_and_says_so() -> None:
    async def scenario() -> None:
        fakes = Fakes(connected=True)
        fakes.hold = True
        sender = fakes.sender(queue_frames=3)
        sender.send(STREAM, frame(0), "http")  # the hub asked for HTTP: even a connected node posts
        await until(lambda: len(fakes.posted) == 1)
        for seq in range(1, 7):
            sender.send(STREAM, frame(seq), "http")
        await until(lambda: sender.stats()["http_queued"] == 3)
        fakes.hold = False
        fakes.release.set()
        await until(lambda: sender.stats()["http_posts"] == 2)
        second = parse_chunk(fakes.posted[1][1])
        assert (second.seq, len(second.frames), second.discontinuity) == (4, 3, True)
        assert sender.stats()["frames_dropped"] == 3 and fakes.published == []

    asyncio.run(scenario())


def test_a_failed_post_drops_its_frames_and_marks_the_next_chunk() -> None:
    async def scenario() -> None:
        fakes = Fakes(connected=False)
        fakes.fail_next = True
        sender = fakes.sender()
        sender.send(STREAM, frame(0), "mqtt")
        await until(lambda: sender.stats()["http_failures"] == 1)
        sender.send(STREAM, frame(1), "mqtt")
        await until(lambda: sender.stats()["http_posts"] == 1)
        assert parse_chunk(fakes.posted[1][1]).discontinuity
        assert sender.stats()["frames_dropped"] == 1

    asyncio.run(scenario())


def test_a_frame_sent_before_the_loop_is_known_is_dropped_not_raised() -> None:
    fakes = Fakes(connected=False)
    sender = ListenSender(NodeTopics("n1"), fakes.publish, lambda: False, fakes.post)
    sender.send(STREAM, frame(0), "mqtt")
    assert sender.stats()["frames_dropped"] == 1


def test_a_stream_error_is_published_on_its_error_topic_at_qos_1() -> None:
    async def scenario() -> None:
        fakes = Fakes()
        sender = fakes.sender()
        sender.report_error(ListenError("lst_a", "channel 3 is not in the channel map"))
        [(topic, payload, qos)] = fakes.published
        assert (topic, qos) == ("hark/v1/nodes/n1/listen/lst_a/error", 1)
        assert json.loads(payload) == {"stream_id": "lst_a", "error": "channel 3 is not in the channel map"}

    asyncio.run(scenario())


def test_chunks_reach_the_agent_route_with_the_node_credential(no_thread_leak: None) -> None:
    received: list[tuple[str, str | None, str | None, str | None, bytes]] = []

    class ChunkRoute(RequestHandler):
        def post(self, node_id: str) -> None:
            headers = self.request.headers
            received.append(
                (
                    node_id,
                    self.get_argument("stream"),
                    headers.get("Authorization"),
                    headers.get("Content-Type"),
                    self.request.body,
                )
            )
            self.set_status(204)

    async def scenario() -> None:
        port = free_port()
        server = Application([(r"/api/v1/nodes/([^/]+)/listen/chunk", ChunkRoute)]).listen(port, "127.0.0.1")
        client = HubClient(f"http://127.0.0.1:{port}", "n1", "cred-1")
        try:
            sender = ListenSender(NodeTopics("n1"), lambda *a: False, lambda: False, client.post_listen_chunk)
            sender.start(asyncio.get_running_loop())
            for seq in range(3):
                sender.send(STREAM, frame(seq), "http")
            await until(lambda: sender.stats()["http_frames"] == 3)
        finally:
            client.close()
            server.stop()

    asyncio.run(scenario())
    assert {(n, s, a, c) for n, s, a, c, _ in received} == {("n1", "lst_a", "Bearer cred-1", "application/octet-stream")}
    assert [f for *_, body in received for f in parse_chunk(body).frames] == [frame(i).payload for i in range(3)]
