"""The bridge reads what the socket holds in one go and handles it as a batch; a bad message never costs the others."""

from __future__ import annotations

import asyncio
import fcntl
import json
import termios
from typing import Any

import msgspec
import pytest
from hark_fleet.hub.metrics import HubMetrics
from hark_fleet.hub.mqtt.bridge import BrokerAddress, MqttBridge, ProtocolError, Publish, split_packets
from hark_fleet.protocol.topics import NodeTopic

from tests.harness import Mosquitto
from tests.hub.mqtt.test_bridge import client, close


class Frame(msgspec.Struct):
    seq: int


def publish_packet(topic: str, payload: bytes, qos: int = 0, mid: int = 0) -> bytes:
    variable = len(topic).to_bytes(2, "big") + topic.encode() + (mid.to_bytes(2, "big") if qos else b"")
    body = variable + payload
    length = bytearray()
    size = len(body)
    while True:
        byte, size = size % 128, size // 128
        length.append(byte | 0x80 if size else byte)
        if not size:
            break
    return bytes([0x30 | qos << 1]) + bytes(length) + body


def ingested(metrics: HubMetrics, kind: str) -> float:
    return metrics.registry.get_sample_value("hark_mqtt_ingested_total", {"kind": kind}) or 0.0


def dropped(metrics: HubMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("hark_mqtt_messages_dropped_total", {"reason": reason}) or 0.0


def test_split_packets_takes_whole_packets_and_leaves_a_partial_one_for_the_next_read() -> None:
    big = b"x" * 300  # a two-byte remaining length
    stream = (
        publish_packet("hark/v1/nodes/n1/meters", b'{"seq":1}')
        + b"\x90\x03\x00\x01\x01"  # a SUBACK
        + publish_packet("hark/v1/nodes/n1/heartbeat", big, qos=1, mid=513)
    )
    for cut in range(len(stream) + 1):  # whatever the read returned so far
        buffer = bytearray(stream[:cut])
        publishes: list[Publish] = []
        others: list[tuple[int, bytes]] = []
        used = split_packets(buffer, publishes, others)
        del buffer[:used]
        buffer += stream[cut:]
        used = split_packets(buffer, publishes, others)
        assert used == len(buffer)
        assert publishes == [
            Publish(b"hark/v1/nodes/n1/meters", b'{"seq":1}', 0, 0, False),
            Publish(b"hark/v1/nodes/n1/heartbeat", big, 1, 513, False),
        ]
        assert others == [(0x90, b"\x00\x01\x01")]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x30\xff\xff\xff\xff\x01",  # a remaining length of five bytes
        b"\x30\x01\x00",  # a PUBLISH too short for its topic length
        b"\x32\x04\x00\x02ab",  # QoS 1 without a packet id
        b"\x30\x03\x00\x09a",  # a topic longer than the packet
    ],
)
def test_split_packets_refuses_what_is_not_mqtt(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        split_packets(bytearray(garbage), [], [])


def test_a_malformed_message_in_a_batch_costs_only_itself() -> None:
    metrics = HubMetrics()
    bridge = MqttBridge(BrokerAddress("127.0.0.1", 1), "batch-test", metrics)
    frames: list[tuple[str, int]] = []
    beats: list[int] = []

    def on_frames(items: list[tuple[NodeTopic, Frame]]) -> int:
        frames.extend((topic.node_id, frame.seq) for topic, frame in items)
        return len(items)

    def on_beat(topic: NodeTopic, beat: Frame) -> None:
        if beat.seq == 13:
            raise RuntimeError("unlucky")
        beats.append(beat.seq)

    bridge.route("meters", on_frames, Frame, batch=True)
    bridge.route("heartbeat", on_beat, Frame)
    batch = [
        Publish(b"hark/v1/nodes/a/meters", b'{"seq":1}', 0, 0, False),
        Publish(b"hark/v1/nodes/b/meters", b"{not json", 0, 0, False),
        Publish(b"hark/v1/nodes/c/meters", b'{"seq":"three"}', 0, 0, False),
        Publish(b"hark/v1/nodes/d/heartbeat", b'{"seq":13}', 0, 0, False),
        Publish(b"hark/v1/nodes/e/heartbeat", b'{"seq":5}', 0, 0, False),
        Publish(b"not/a/node/topic", b'{"seq":1}', 0, 0, False),
        Publish(b"hark/v1/nodes/\xff/meters", b'{"seq":1}', 0, 0, False),
        Publish(b"hark/v1/nodes/f/meters", b'{"seq":6.0}', 0, 0, False),  # a whole float for an int: accepted
        Publish(b"hark/v1/nodes/g/meters", b'{"seq":7}', 0, 0, False),
    ]
    bridge.handle_batch(batch)
    assert frames == [("a", 1), ("f", 6), ("g", 7)]
    assert beats == [5]
    assert ingested(metrics, "meters") == 3 and ingested(metrics, "heartbeat") == 1
    assert dropped(metrics, "invalid_json") == 1 and dropped(metrics, "invalid_payload") == 1
    assert dropped(metrics, "handler_error") == 1 and dropped(metrics, "bad_topic") == 2
    received = metrics.registry.get_sample_value("hark_mqtt_messages_received_total", {"kind": "meters"})
    assert received == 5  # read off the wire with a node topic: counted as received, not as ingested


def test_a_batch_handler_that_fails_loses_its_kind_for_that_batch_not_the_other_kinds() -> None:
    metrics = HubMetrics()
    bridge = MqttBridge(BrokerAddress("127.0.0.1", 1), "batch-test", metrics)
    beats: list[int] = []
    bridge.route("meters", lambda items: 1 / 0, Frame, batch=True)
    bridge.route("heartbeat", lambda topic, beat: beats.append(beat.seq), Frame)
    bridge.handle_batch(
        [
            Publish(b"hark/v1/nodes/a/meters", b'{"seq":1}', 0, 0, False),
            Publish(b"hark/v1/nodes/a/heartbeat", b'{"seq":2}', 0, 0, False),
        ]
    )
    assert beats == [2]
    assert ingested(metrics, "meters") == 0 and ingested(metrics, "heartbeat") == 1
    assert dropped(metrics, "handler_error") == 1


def test_a_queued_message_counts_as_ingested_only_when_its_applier_says_so() -> None:
    metrics = HubMetrics()
    bridge = MqttBridge(BrokerAddress("127.0.0.1", 1), "batch-test", metrics)
    queued: list[Frame] = []
    bridge.route("heartbeat", lambda topic, beat: queued.append(beat), Frame, applied_later=True)
    bridge.handle_batch([Publish(b"hark/v1/nodes/a/heartbeat", b'{"seq":2}', 0, 0, False)])
    assert len(queued) == 1 and ingested(metrics, "heartbeat") == 0
    bridge.count_ingested("heartbeat", len(queued))  # what FleetIngest.flush does after the commit
    assert ingested(metrics, "heartbeat") == 1


def socket_pending(fd: int) -> int:
    """Bytes waiting in a socket's receive buffer."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def test_a_burst_is_read_in_a_handful_of_reads_not_one_per_message(mosquitto: Mosquitto) -> None:
    asyncio.run(burst(mosquitto))


async def burst(mosquitto: Mosquitto) -> None:
    metrics = HubMetrics()
    address = BrokerAddress(mosquitto.host, mosquitto.port)
    bridge = MqttBridge(address, "hark-hub-batching-test", metrics)
    got: list[tuple[str, int]] = []
    bridge.route("meters", lambda items: got.extend((t.node_id, f.seq) for t, f in items) or len(items), Frame, batch=True)
    bridge.start()
    sender = client(address, "batch-sender")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    try:
        assert await bridge.wait_connected(10)
        while not got:  # subscribed: a probe frame comes through
            sender.publish("hark/v1/nodes/probe/meters", b'{"seq":-1}', qos=1).wait_for_publish(5)
            assert loop.time() < deadline, "the bridge never subscribed"
            await asyncio.sleep(0.05)
        fd = bridge._fd
        assert fd is not None
        loop.remove_reader(fd)  # hold the reading while the burst lands in the socket
        while socket_pending(fd):  # probes still on their way: taken now
            bridge._read()
        probes = len(got)
        got.clear()
        reads_before = bridge.reads
        count = 500
        payloads = [json.dumps({"seq": i}).encode() for i in range(count)]
        # QoS 0 (as meter frames are): QoS 1 would leave the broker at most 20 unacknowledged in flight
        infos: list[Any] = [sender.publish(f"hark/v1/nodes/n{i % 7}/meters", payloads[i], qos=0) for i in range(count)]
        for info in infos:
            await loop.run_in_executor(None, info.wait_for_publish, 5)
        expected = sum(len(publish_packet(f"hark/v1/nodes/n{i % 7}/meters", payloads[i])) for i in range(count))
        while socket_pending(fd) < expected:  # every frame waits in the bridge's socket
            assert loop.time() < deadline, f"{socket_pending(fd)} of {expected} bytes arrived"
            await asyncio.sleep(0.01)
        loop.add_reader(fd, bridge._read)
        while len([g for g in got if g[0] != "probe"]) < count:
            assert loop.time() < deadline, f"{len(got)} of {count} frames handled"
            await asyncio.sleep(0.01)
        reads = bridge.reads - reads_before
        assert reads <= 3, f"{count} messages took {reads} reads"
        assert sorted(seq for node, seq in got if node != "probe") == list(range(count))
        assert ingested(metrics, "meters") == len(got) + probes
    finally:
        close(sender)
        await bridge.stop()
