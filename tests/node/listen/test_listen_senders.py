"""Live-listen streams asked for by several hub instances (issue 24): one set per sender, the node runs their union."""

from __future__ import annotations

import threading

from hark_fleet.node.listen.streams import Frame, ListenStreams
from hark_fleet.protocol.listen import FLAG_DISCONTINUITY, ListenCommand, ListenStream, stream_id_for

from tests.harness import wait_for
from tests.node.listen.test_listen_streams import listening, opus, pcm


def from_hub(hub: str, version: int, *streams: ListenStream, lease_s: float = 30.0) -> ListenCommand:
    return ListenCommand(version, list(streams), lease_s, "mqtt", hub)


def threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("hark-listen-"))


def thread_of(stream_id: str) -> threading.Thread:
    [thread] = [t for t in threading.enumerate() if t.name == f"hark-listen-{stream_id}"]
    return thread


def assert_one_unbroken_stream(frames: list[Frame]) -> None:
    """The frames of one stream that never started again: seq from 0, always rising, by one except where it says why.

    A stream thread (or the whole process) stalled longer than MAX_BEHIND_S jumps to the live audio: its next frame
    carries FLAG_DISCONTINUITY and its seq skips the frames lost; a restarted stream would begin again at seq 0.
    """
    assert frames[0].seq == 0
    for previous, frame in zip(frames, frames[1:], strict=False):
        assert frame.seq == previous.seq + 1 or (frame.seq > previous.seq and frame.flags & FLAG_DISCONTINUITY), (previous, frame)


def test_two_hubs_wanting_the_same_stream_share_one_encoder_and_one_hubs_empty_set_keeps_it() -> None:
    with listening() as (_, streams, caught):
        assert streams.apply(from_hub("hub-a", 10, opus()))
        assert streams.apply(from_hub("hub-b", 3, opus(), pcm()))  # a lower version from another sender is not stale
        caught.wait("lst_a", 5)
        caught.wait("lst_p", 5)
        assert sorted(streams.running) == ["lst_a", "lst_p"]
        assert threads() == ["hark-listen-lst_a", "hark-listen-lst_p"]  # lst_a is encoded once for both
        encoder_thread = thread_of("lst_a")
        assert streams.apply(from_hub("hub-b", 4))  # hub-b's listeners left: lst_a stays for hub-a
        assert streams.running == ["lst_a"]
        before = len(caught.frames("lst_a"))
        caught.wait("lst_a", before + 10)
        assert thread_of("lst_a") is encoder_thread  # never restarted: the same thread, one stream throughout
        assert_one_unbroken_stream(caught.frames("lst_a"))
        assert streams.apply(from_hub("hub-a", 11))
        assert streams.running == []
        stats = streams.stats()
        assert {s["hub"]: s["streams"] for s in stats["senders"]} == {"hub-a": [], "hub-b": []}


def test_a_stale_command_is_judged_against_its_own_senders_version() -> None:
    with listening() as (_, streams, caught):
        assert streams.apply(from_hub("hub-a", 10, opus()))
        assert streams.apply(from_hub("hub-b", 20, pcm()))
        assert not streams.apply(from_hub("hub-a", 9))  # hub-a's late older set: ignored
        assert sorted(streams.running) == ["lst_a", "lst_p"] and streams.stats()["stale_commands"] == 1
        assert streams.apply(from_hub("hub-a", 11))  # newer than hub-a's last, though older than hub-b's
        assert streams.running == ["lst_p"]


def test_one_senders_lease_ending_stops_only_what_no_other_sender_wants() -> None:
    with listening() as (_, streams, caught):
        streams.apply(from_hub("dead", 1, opus(), pcm(), lease_s=1.0))  # a hub that is about to die
        streams.apply(from_hub("alive", 1, opus(), lease_s=30.0))
        caught.wait("lst_p", 5)
        encoder_thread = thread_of("lst_a")
        wait_for(lambda: streams.running == ["lst_a"], 20, "the dead hub's lease to stop its own stream")
        before = len(caught.frames("lst_a"))
        caught.wait("lst_a", before + 10)  # the other hub's stream went on
        assert thread_of("lst_a") is encoder_thread
        assert_one_unbroken_stream(caught.frames("lst_a"))
        assert streams.apply(from_hub("alive", 2, opus(), lease_s=30.0))  # a renewal prunes the dead sender
        assert [s["hub"] for s in streams.stats()["senders"]] == ["alive"]
        assert streams.running == ["lst_a"] and caught.errors == []


def test_a_renewal_from_any_sender_keeps_its_streams_past_anothers_lease() -> None:
    now = [0.0]
    with listening() as (path, _, caught):
        streams = ListenStreams(path, caught.send, caught.error, clock=lambda: now[0])
        try:
            streams.apply(from_hub("a", 1, opus(), lease_s=5.0))
            streams.apply(from_hub("b", 1, opus(), lease_s=10.0))
            caught.wait("lst_a", 3)
            encoder_thread = thread_of("lst_a")
            now[0] = 7.0  # a's lease ended, b's has not
            before = len(caught.frames("lst_a"))
            caught.wait("lst_a", before + 5)
            assert streams.running == ["lst_a"] and thread_of("lst_a") is encoder_thread
            assert_one_unbroken_stream(caught.frames("lst_a"))
            now[0] = 11.0  # and now b's too: the stream stops by itself
            wait_for(lambda: streams.running == [], 10, "the last lease to end the stream")
        finally:
            streams.close()


def test_a_command_that_names_no_hub_is_one_sender_as_before() -> None:
    with listening() as (_, streams, caught):
        assert streams.apply(ListenCommand(5, [opus()]))
        assert not streams.apply(ListenCommand(4, [pcm()]))
        assert streams.apply(ListenCommand(6, [pcm()]))
        assert streams.running == ["lst_p"]
        assert [s["hub"] for s in streams.stats()["senders"]] == [""]


def test_stream_ids_are_the_same_for_the_same_node_and_format_and_differ_otherwise() -> None:
    a = stream_id_for("nod_1", [0, 1], "opus", 48000, 64000)
    assert a == stream_id_for("nod_1", (0, 1), "opus", 48000, 64000) and a.startswith("lst_") and len(a) == 24
    others = {
        stream_id_for("nod_2", [0, 1], "opus", 48000, 64000),
        stream_id_for("nod_1", [1, 0], "opus", 48000, 64000),
        stream_id_for("nod_1", [0, 1], "pcm16", 48000, None),
        stream_id_for("nod_1", [0, 1], "opus", 24000, 64000),
        stream_id_for("nod_1", [0, 1], "opus", 48000, 32000),
    }
    assert a not in others and len(others) == 5
