"""The hub's in-memory meter store: per-second history, fan-out by site, slow subscribers dropped."""

from __future__ import annotations

import json

import pytest
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.meters import HISTORY_S, MeterStore, sse_frame
from hark_fleet.protocol.messages import MeterChannel, MeterFrame


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
    assert lookups == ["n1"] and everyone.queue.empty()  # the site is not known yet: nobody gets it
    store.add("n1", frame(2))
    assert lookups == ["n1"]  # one lookup at a time
    store.set_site("n1", "south")
    store.add("n1", frame(3))
    assert everyone.queue.qsize() == 1 and north.queue.empty()
    data = everyone.queue.get_nowait().split(b"data: ", 1)[1]
    assert json.loads(data)["node_id"] == "n1" and json.loads(data)["seq"] == 3


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    store = MeterStore()
    store.set_site("n1", None)
    slow = store.subscribe(ALL_SITES, None)
    fast = store.subscribe(ALL_SITES, frozenset({"n1"}))
    for seq in range(300):
        store.add("n1", frame(seq))
        while not fast.queue.empty():
            fast.queue.get_nowait()
    assert slow.dropped and slow not in store.subscribers and store.subscribers_dropped == 1
    assert not fast.dropped and fast in store.subscribers


def test_the_sse_payload_is_the_frame_with_its_node_id() -> None:
    payload = sse_frame("n1", frame(7))
    assert payload.startswith(b"event: meter\ndata: ") and payload.endswith(b"\n\n")
    body = json.loads(payload.split(b"data: ", 1)[1])
    assert body["node_id"] == "n1" and body["seq"] == 7 and body["channels"][0]["peak_dbfs"] == -6.0
