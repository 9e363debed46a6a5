"""The hub's in-memory meter store: per-second history, fan-out by site, slow subscribers dropped."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.meters import HISTORY_S, SUBSCRIBER_QUEUE, MeterStore, MeterSubscriber, sse_frame
from hark_fleet.hub.outbox import Outbox
from hark_fleet.protocol.messages import Loudness, MeterChannel, MeterFrame


def frame(seq: int, peak: float | None = -6.0, rms: float | None = -9.0) -> MeterFrame:
    return MeterFrame(ts="2026-12-01T12:00:00Z", seq=seq, interval_ms=100, channels=[MeterChannel(0, peak, rms)])


def test_history_folds_each_second_and_keeps_one_hour() -> None:
    store = MeterStore()
    for second in range(HISTORY_S + 10):
        store.add("n1", frame(second, peak=-float(second % 7)), now=1000.0 + second)
        store.add("n1", frame(second, peak=-40.0, rms=None), now=1000.5 + second)
    points = store.history("n1", HISTORY_S, now=1000.0 + HISTORY_S + 10)
    assert len(points) == HISTORY_S
    assert points[-1]["channels"][0]["peak_dbfs"] == -float((HISTORY_S + 9) % 7)
    assert points[-1]["channels"][0]["rms_dbfs"] == pytest.approx(-9.0 - 3.01, abs=0.01)  # half the power: one frame silent
    assert len(store.history("n1", 300, now=1000.0 + HISTORY_S + 10)) == 300


def test_frames_reach_only_subscribers_that_may_see_the_nodes_site() -> None:
    lookups: list[str] = []
    store = MeterStore(lookups.append)
    everyone = store.subscribe(ALL_SITES, None)
    north = store.subscribe(SiteScope(frozenset({"north"})), None)
    store.add("n1", frame(1))
    assert lookups == ["n1"] and not everyone.frames  # the site is not known yet: nobody gets it
    store.add("n1", frame(2))
    assert lookups == ["n1"]  # one lookup at a time
    store.set_site("n1", "south")
    store.add("n1", frame(3))
    assert len(everyone.frames) == 1 and not north.frames
    data = everyone.frames[0].split(b"data: ", 1)[1]
    assert json.loads(data)["node_id"] == "n1" and json.loads(data)["seq"] == 3


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    store = MeterStore()
    store.set_site("n1", None)
    slow = store.subscribe(ALL_SITES, None)
    fast = store.subscribe(ALL_SITES, frozenset({"n1"}))
    for seq in range(SUBSCRIBER_QUEUE + 1):
        store.add("n1", frame(seq))
        fast.take()  # its socket takes every write
    assert slow.dropped and slow not in store.subscribers and store.subscribers_dropped == 1
    assert not fast.dropped and fast in store.subscribers


def test_a_subscriber_whose_unsent_bytes_pass_the_bound_is_dropped_before_its_frame_count_is_reached() -> None:
    store = MeterStore()
    store.set_site("n1", None)
    sub = MeterSubscriber(ALL_SITES, None, max_bytes=4 * len(sse_frame("n1", frame(0))))
    store.subscribers.add(sub)
    for seq in range(5):
        store.add("n1", frame(seq))
    assert sub.dropped and sub not in store.subscribers and store.subscribers_dropped == 1
    assert sub.frames == [] and sub.take() == b""  # what waited is let go at once


def test_a_read_s_frames_reach_overview_subscribers_as_one_chunk_and_the_others_frame_by_frame() -> None:
    store = MeterStore()
    for node_id in ("n1", "n2", "n3"):
        store.set_site(node_id, "north" if node_id != "n3" else "south")
    overviews = [store.subscribe(ALL_SITES, None) for _ in range(2)]
    north = store.subscribe(SiteScope(frozenset({"north"})), None)
    one_node = store.subscribe(ALL_SITES, frozenset({"n2"}))
    store.add_batch([("n1", frame(1)), ("n2", frame(2)), ("n3", frame(3)), ("n4", frame(4))])  # n4: site not known yet
    for sub in overviews:
        assert len(sub.frames) == 1 and sub.count == 3
        sent = [json.loads(part.split(b"data: ", 1)[1]) for part in sub.take().split(b"\n\n") if part]
        assert [(f["node_id"], f["seq"]) for f in sent] == [("n1", 1), ("n2", 2), ("n3", 3)]
    assert [json.loads(p.split(b"data: ", 1)[1])["node_id"] for p in north.frames] == ["n1", "n2"]
    assert len(one_node.frames) == 1 and store.frames_out == 2 * 3 + 2 + 1
    small = MeterSubscriber(ALL_SITES, None, size=5)  # the frame bound counts the frames in a chunk
    store.subscribers.add(small)
    for sub in overviews:
        sub.take()
    store.add_batch([("n1", frame(5)), ("n2", frame(6)), ("n3", frame(7))])
    assert not small.dropped
    store.add_batch([("n1", frame(8)), ("n2", frame(9)), ("n3", frame(10))])
    assert small.dropped and small not in store.subscribers and store.subscribers_dropped == 1
    assert not any(sub.dropped for sub in overviews)


def test_the_sse_payload_is_the_frame_with_its_node_id() -> None:
    payload = sse_frame("n1", frame(7))
    assert payload.startswith(b"event: meter\ndata: ") and payload.endswith(b"\n\n")
    body = json.loads(payload.split(b"data: ", 1)[1])
    assert body["node_id"] == "n1" and body["seq"] == 7 and body["channels"][0]["peak_dbfs"] == -6.0


def loud_frame(seq: int, peak: float | None, rms: float | None, momentary: float, integrated: float) -> MeterFrame:
    return MeterFrame(
        ts="2026-12-01T12:00:00Z",
        seq=seq,
        interval_ms=100,
        channels=[MeterChannel(0, peak, rms), MeterChannel(1, None, None)],
        loudness=Loudness(momentary_lufs=momentary, short_term_lufs=momentary - 1, integrated_lufs=integrated),
    )


def test_each_node_gets_one_summary_per_minute_when_the_minute_ends() -> None:
    store = MeterStore()
    start = 1_800_000_000.0  # a minute boundary
    for tick in range(1200):  # two minutes at 10 Hz
        now = start + tick / 10
        store.add("n1", loud_frame(tick, peak=-6.0 if tick == 7 else -20.0, rms=-30.0, momentary=-23.0, integrated=-24.0), now)
        if tick < 600:
            store.add("n2", loud_frame(tick, peak=None, rms=None, momentary=-40.0, integrated=-41.0), now)
    assert [(s.node_id, s.minute) for s in store.ended] == [("n1", 1_800_000_000)]  # n2 is silent: not known yet
    taken = store.take_minutes(start + 120.5)  # both minutes of n1 ended, and n2's
    assert sorted((s.node_id, s.minute, s.frames) for s in taken) == [
        ("n1", 1_800_000_000, 600),
        ("n1", 1_800_000_060, 600),
        ("n2", 1_800_000_000, 600),
    ]
    first = next(s for s in taken if s.node_id == "n1" and s.minute == 1_800_000_000)
    peak_mean = 10 * math.log10((599 * 10 ** (-20 / 10) + 10 ** (-6 / 10)) / 600)  # energy mean of the peaks
    assert first.channels[0] == pytest.approx((-6.0, peak_mean, -30.0, -30.0), abs=0.01)  # rounded when stored
    assert first.channels[1] == (None, None, None, None)
    assert (first.momentary_lufs_max, first.short_term_lufs_max, first.integrated_lufs) == (-23.0, -24.0, -24.0)
    assert store.take_minutes(start + 121.0) == [] and store.ended == []


def test_the_minute_in_progress_shows_in_reads_and_is_taken_on_a_clean_stop() -> None:
    store = MeterStore()
    start = 1_800_000_000.0
    for tick in range(25):
        store.add("n1", loud_frame(tick, -10.0, -12.0, -20.0, -21.0), start + tick / 10)
    pending = store.pending("n1")
    assert [(s.minute, s.frames) for s in pending] == [(1_800_000_000, 25)]  # the second in progress included
    assert store.take_minutes(start + 2.55) == []  # the minute has not ended
    assert [(s.minute, s.frames) for s in store.take_minutes(None)] == [(1_800_000_000, 25)]
    assert store.pending("n1") == []
    store.add("n1", loud_frame(99, -10.0, -12.0, -20.0, -21.0), start + 3.0)
    assert [(s.minute, s.frames) for s in store.take_minutes(None)] == [(1_800_000_000, 1)]  # the rest, merged when stored


def test_a_forgotten_node_leaves_no_minute_behind() -> None:
    store = MeterStore()
    store.add("n1", frame(1), now=1_800_000_000.0)
    store.add("n1", frame(2), now=1_800_000_061.0)
    assert len(store.ended) == 1
    store.forget("n1")
    assert store.ended == [] and store.take_minutes(None) == []


def test_a_subscriber_with_a_max_rate_gets_that_many_frames_per_second_of_each_node_and_every_clip() -> None:
    store = MeterStore()
    store.set_site("n1", None)
    store.set_site("n2", None)
    every = store.subscribe(ALL_SITES, None)
    thinned = store.subscribe(ALL_SITES, None, max_rate=2)
    start = 1_800_000_000.0
    jitter = [0.0, 0.03, -0.02, 0.04, -0.04, 0.01, -0.03, 0.02, 0.0, -0.01]  # frames come a little early or late
    for tick in range(50):  # 5 s at 10 Hz from two nodes
        for node_id in ("n1", "n2"):
            store.add(node_id, frame(tick), start + tick / 10 + jitter[tick % 10])
    clipped = MeterFrame(ts="2026-12-01T12:00:00Z", seq=50, interval_ms=100, channels=[MeterChannel(0, 0.0, -3.0, clip=12)])
    store.add("n1", clipped, start + 5.0 + 0.01)  # right after a frame that went out: sent all the same

    assert len(every.frames) == 101
    sent = [json.loads(payload.split(b"data: ", 1)[1]) for payload in thinned.frames]
    thinned.take()
    by_node = {node_id: [f["seq"] for f in sent if f["node_id"] == node_id] for node_id in ("n1", "n2")}
    assert 10 <= len(by_node["n2"]) <= 11, by_node  # 2 per second over 5 s, give or take the first
    assert all(b - a >= 3 for a, b in zip(by_node["n2"], by_node["n2"][1:], strict=False)), by_node  # never 2 within 0.25 s
    assert by_node["n1"][-1] == 50 and 11 <= len(by_node["n1"]) <= 12, by_node  # the clip went out too
    # After a pause the next frame goes out at once.
    store.add("n2", frame(99), start + 60.0)
    assert json.loads(thinned.take().split(b"data: ", 1)[1])["seq"] == 99


# -- coalesced streams ---------------------------------------------------------------------------------


def events(sub: Outbox) -> list[dict[str, Any]]:
    """The coalesced events waiting in a client's outbox (taken), decoded."""
    return [json.loads(part.split(b"data: ", 1)[1]) for part in sub.take().split(b"\n\n") if part]


def sited_store() -> MeterStore:
    store = MeterStore()
    for node_id, site in (("n1", "north"), ("n2", "north"), ("n3", "south")):
        store.set_site(node_id, site)
    return store


def test_a_tick_is_encoded_once_per_group_however_many_clients_share_it_and_carries_the_latest_frames() -> None:
    store = sited_store()
    everyone = [store.subscribe_coalesced(ALL_SITES, None, 100) for _ in range(5)]
    north = [store.subscribe_coalesced(SiteScope(frozenset({"north"}), owner=f"u{i}"), None, 100) for i in range(2)]
    only_n3 = store.subscribe_coalesced(ALL_SITES, frozenset({"n3"}), 100)
    start = 1_800_000_000.0
    for seq in range(1, 4):  # three frames of each node within one tick
        for node_id in ("n1", "n2", "n3"):
            store.add(node_id, frame(seq), start + seq / 100)
    assert store.tick(100, start + 0.1) == 3 and store.ticks_encoded == 3  # three groups, eight clients
    assert len({id(sub.frames[0]) for sub in everyone}) == 1  # the same bytes in every outbox of the group
    assert all(sub.count == 1 for sub in [*everyone, *north, only_n3])
    first = events(everyone[0])[0]
    assert first["tick"] == 18_000_000_001 and first["snapshot"] is False and first["interval_ms"] == 100
    assert {node_id: f["seq"] for node_id, f in first["frames"].items()} == {"n1": 3, "n2": 3, "n3": 3}
    assert set(events(north[0])[0]["frames"]) == {"n1", "n2"}
    assert set(events(only_n3)[0]["frames"]) == {"n3"}
    for sub in [*everyone[1:], north[1]]:
        sub.take()
    store.add("n1", frame(4), start + 0.15)  # only n1 changes: only it goes out, and not to whom does not see it
    assert store.tick(100, start + 0.2) == 2 and store.ticks_encoded == 5
    assert [list(e["frames"]) for e in events(everyone[0])] == [["n1"]] and events(north[0])[0]["frames"]["n1"]["seq"] == 4
    assert only_n3.frames == []
    assert store.tick(100, start + 0.3) == 0 and everyone[0].frames == []  # nothing new: no event
    store.add("n4", frame(1), start + 0.35)  # a node whose site is not known yet: nobody sees it
    assert store.tick(100, start + 0.4) == 0


def test_clipped_samples_between_ticks_are_added_up_into_the_frame_that_goes_out() -> None:
    store = sited_store()
    sub = store.subscribe_coalesced(ALL_SITES, frozenset({"n1"}), 100)
    start = 1_800_000_000.0

    def clipping(seq: int, clip: int) -> MeterFrame:
        return MeterFrame(ts="2026-12-01T12:00:00Z", seq=seq, interval_ms=100, channels=[MeterChannel(0, -1.0, -6.0, clip=clip)])

    for seq, clip in ((1, 5), (2, 0), (3, 3), (4, 0)):  # the last frame of the tick has no clip of its own
        store.add("n1", clipping(seq, clip), start + seq / 100)
    store.tick(100, start + 0.1)
    sent = events(sub)[0]["frames"]["n1"]
    assert sent["seq"] == 4 and sent["channels"][0]["clip"] == 8
    store.add("n1", clipping(5, 0), start + 0.15)
    store.tick(100, start + 0.2)
    assert events(sub)[0]["frames"]["n1"]["channels"][0]["clip"] == 0  # counted once, not carried on


def test_a_coalesced_client_first_gets_a_snapshot_of_the_recent_frames_it_may_see_then_the_changes() -> None:
    store = sited_store()
    now = time.time()
    store.add("n1", frame(1), now - 10)  # an old frame: not live any more
    store.add("n2", frame(2), now - 1)
    store.add("n3", frame(3), now - 0.5)
    north = store.subscribe_coalesced(SiteScope(frozenset({"north"})), None, 100)
    snapshot = store.snapshot(north, now)
    body = json.loads(snapshot.split(b"data: ", 1)[1])
    assert snapshot.startswith(b"event: meters\n") and body["snapshot"] is True
    assert {node_id: f["seq"] for node_id, f in body["frames"].items()} == {"n2": 2}
    other = store.subscribe_coalesced(SiteScope(frozenset({"north"})), None, 100)
    assert store.snapshot(other, now) is snapshot  # encoded once per tick for the group
    store.add("n1", frame(4), now + 0.01)  # after the snapshot: in the next tick
    store.tick(100, now + 0.1)
    assert [list(e["frames"]) for e in events(north)] == [["n1"]]
    lonely = store.subscribe_coalesced(ALL_SITES, frozenset({"n9"}), 100)
    assert store.snapshot(lonely, now) == b""  # nothing to show: no event


def test_a_coalesced_client_that_falls_behind_is_dropped_and_its_group_goes_on() -> None:
    store = sited_store()
    slow = store.subscribe_coalesced(ALL_SITES, None, 1000)  # dropped past 3 ticks not taken (2 s at 1 s ticks)
    fast = store.subscribe_coalesced(ALL_SITES, None, 1000)
    start = 1_800_000_000.0
    for tick in range(4):
        store.add("n1", frame(tick), start + tick)
        store.tick(1000, start + tick + 0.5)
        fast.take()
    assert slow.dropped and slow not in slow.group.subscribers and store.subscribers_dropped == 1
    assert not fast.dropped and fast in fast.group.subscribers


def test_the_tick_timer_runs_on_the_loop_only_while_coalesced_clients_exist() -> None:
    store = sited_store()

    async def follow() -> list[dict[str, Any]]:
        sub = store.subscribe_coalesced(ALL_SITES, None, 50)
        other = store.subscribe_coalesced(SiteScope(frozenset({"south"})), None, 50)
        ticker = store.tickers[50]
        assert ticker.handle is not None
        got: list[dict[str, Any]] = []
        for seq in range(1, 4):
            store.add("n1", frame(seq))
            await sub.wait(5)
            got += events(sub)
        store.unsubscribe_coalesced(other)
        assert store.tickers[50] is ticker  # one group left
        store.unsubscribe_coalesced(sub)
        assert store.tickers == {} and store.groups == {} and ticker.handle is None
        return got

    got = asyncio.run(follow())
    assert [e["frames"]["n1"]["seq"] for e in got] == [1, 2, 3]
    assert all(b["tick"] > a["tick"] for a, b in zip(got, got[1:], strict=False))
