"""A real `hark-node` on the click source: cmd/listen over a real Mosquitto starts a stream whose chunks arrive at QoS 0."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hark_fleet.protocol.listen import ListenError, parse_chunk

from tests.harness import Mosquitto, wait_for
from tests.node.fakes import ConfigStub, FakeHub
from tests.node.test_agent_process import NodeProcess

pytestmark = pytest.mark.slow


def test_a_node_on_the_click_source_streams_what_cmd_listen_asks_and_stops_on_the_empty_set(
    tmp_path: Path, mosquitto: Mosquitto, no_thread_leak: None
) -> None:
    node_id, credential = "listen-node", "cred-listen-0123456789"
    stream = {"stream_id": "lst_e2e", "channels": [0], "codec": "pcm16", "sample_rate": 48000}
    bad = {"stream_id": "lst_bad", "channels": [5], "codec": "opus", "sample_rate": 48000}
    with ConfigStub(node_id, mosquitto.url, {credential}) as stub, FakeHub(mosquitto.host, mosquitto.port, node_id) as hub:
        node = NodeProcess(
            tmp_path, node_id, credential, stub.url, {"HARK_NODE_AUDIO_SOURCE": "synthetic:click?period=0.2&channels=1"}
        )
        node.start()
        try:
            hub.wait_status("online", timeout=20)
            hub.send("listen", {"version": 1, "streams": [stream, bad], "lease_s": 30})
            wait_for(lambda: len([r for r in hub.received("listen") if r.topic.endswith("/lst_e2e")]) >= 30, 20, "30 chunks")
            chunks = [r for r in hub.received("listen") if r.topic.endswith("/lst_e2e")]
            assert {r.qos for r in chunks} == {0}
            parsed = [parse_chunk(r.payload) for r in chunks[:30]]
            assert [c.seq for c in parsed] == list(range(30))
            assert {(c.codec, c.channels, c.sample_rate, len(c.frames)) for c in parsed} == {("pcm16", 1, 48000, 1)}
            wait_for(lambda: [r for r in hub.received("listen") if r.topic.endswith("/lst_bad/error")], 10, "the stream's error")
            errors = [r for r in hub.received("listen") if r.topic.endswith("/lst_bad/error")]
            assert errors[0].qos == 1
            error = msgspec.json.decode(errors[0].payload, type=ListenError)
            assert error.stream_id == "lst_bad" and "channel 5" in error.error
            hub.send("listen", {"version": 2, "streams": []})
            wait_for(lambda: "listen stream lst_e2e stopped" in node.log(), 10, "the stream to stop")
            node.alive()
        finally:
            code = node.stop()
    assert code == 0, node.log()
    assert "synthetic click every 0.2s -6 dBFS" in node.log()
