"""The fleet events bus: each event encoded once for every subscriber, a subscriber whose socket does not take
them dropped once its outbox is full, and the others untouched."""

from __future__ import annotations

from hark_fleet.hub.auth.principal import ALL_SITES
from hark_fleet.hub.events import QUEUE, EventBus


def test_every_subscriber_gets_the_same_encoded_event() -> None:
    bus = EventBus()
    first, _, _ = bus.subscribe(ALL_SITES, None, None)
    second, _, _ = bus.subscribe(ALL_SITES, None, None)
    bus.publish("node.online", None, {"node_id": "n1"})
    assert first.outbox.frames[0] is second.outbox.frames[0]  # one encoding, shared
    assert first.outbox.frames[0].startswith(b"id: 1\nevent: node.online\ndata: ")


def test_a_subscriber_that_does_not_take_its_events_is_dropped_and_the_others_go_on() -> None:
    bus = EventBus()
    stalled, _, _ = bus.subscribe(ALL_SITES, None, None)
    reading, _, _ = bus.subscribe(ALL_SITES, None, None)
    for i in range(QUEUE + 1):
        bus.publish("node.online", None, {"node_id": f"n{i}"})
        reading.outbox.take()  # its socket takes every write
    assert stalled.dropped and stalled.outbox.frames == []
    assert not reading.dropped
    bus.publish("node.offline", None, {"node_id": "n1"})
    assert b"node.offline" in reading.outbox.take()


def test_on_sqlite_a_listener_of_every_instance_gets_what_a_local_one_gets_before_subscribers() -> None:
    bus = EventBus()
    sub, _, _ = bus.subscribe(ALL_SITES, None, None)
    seen: list[tuple[str, int, int]] = []
    bus.add_listener(lambda e: seen.append(("local", e.id, len(sub.outbox.frames))))
    bus.add_listener(lambda e: seen.append(("everywhere", e.id, len(sub.outbox.frames))), everywhere=True)
    event = bus.publish("node.online", None, {"node_id": "n1"})
    assert event is not None and seen == [("local", event.id, 0), ("everywhere", event.id, 0)]
    assert len(sub.outbox.frames) == 1
