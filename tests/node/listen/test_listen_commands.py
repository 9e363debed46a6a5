"""`cmd/listen` from the hub: decoded into a ListenCommand when usable as a whole, refused (never fatal) when not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hark_fleet.node.commands import MalformedCommand, decode_command
from hark_fleet.protocol.listen import LEASE_S, ListenCommand, ListenStream


def listen(**fields: Any) -> bytes:
    stream = {"stream_id": "lst_a1", "channels": [0, 1], "codec": "opus", "sample_rate": 48000, "bitrate": 64000}
    stream.update(fields.pop("stream", {}))
    return json.dumps({"version": 7, "streams": [stream], **fields}).encode()


def test_a_listen_command_decodes_with_its_streams_lease_and_transport() -> None:
    command = decode_command("listen", listen(lease_s=12, transport="http"))
    assert command == ListenCommand(7, [ListenStream("lst_a1", [0, 1], "opus", 48000, 64000)], 12.0, "http")


def test_defaults_and_the_empty_set() -> None:
    command = decode_command("listen", b'{"version": 3}')
    assert command == ListenCommand(3, [], LEASE_S, "mqtt")
    pcm = decode_command("listen", listen(stream={"codec": "pcm16", "sample_rate": 44100, "bitrate": None, "channels": [2]}))
    assert isinstance(pcm, ListenCommand) and pcm.streams[0].codec == "pcm16" and pcm.streams[0].channels == [2]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b'{"version": "7"}',
        listen(version=-1),
        listen(lease_s=0),
        listen(lease_s=100000),
        listen(transport="udp"),
        listen(stream={"stream_id": "a/b"}),
        listen(stream={"stream_id": "lst_+"}),
        listen(stream={"stream_id": "#"}),
        listen(stream={"stream_id": ""}),
        listen(stream={"stream_id": "x" * 65}),
        listen(stream={"channels": []}),
        listen(stream={"channels": [0, 1, 2]}),
        listen(stream={"channels": [-1]}),
        listen(stream={"codec": "mp3"}),
        listen(stream={"sample_rate": 44100}),  # opus does not run at 44.1 kHz
        listen(stream={"codec": "pcm16", "sample_rate": 8000}),
        listen(stream={"bitrate": 1000}),
        listen(stream={"bitrate": 600000}),
        b'{"version": 1, "streams": [{"stream_id": "s", "channels": [0], "codec": "opus", "sample_rate": 48000},'
        b' {"stream_id": "s", "channels": [1], "codec": "opus", "sample_rate": 48000}]}',
    ],
)
def test_a_malformed_listen_command_is_refused_as_a_whole(payload: bytes) -> None:
    with pytest.raises(MalformedCommand, match="cmd/listen"):
        decode_command("listen", payload)
