"""After a broker restart, 200 nodes spread their reconnects over the backoff window."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.transport_mqtt import BrokerAddress, MqttTransport

from tests.harness import Mosquitto

NODES = 200
OUTAGE_S = 15.0


def test_200_nodes_reconnect_spread_over_the_backoff_window(tmp_path: Path, capsys: object) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", extra_config="max_connections -1\n")
    broker.start()

    async def scenario() -> list[float]:
        connected: dict[int, float] = {}
        ever: set[int] = set()
        restarted_at = 0.0

        def on_connection(index: int, up: bool) -> None:
            if up:
                ever.add(index)
                if restarted_at:
                    connected.setdefault(index, time.monotonic() - restarted_at)

        transports = [
            MqttTransport(
                NodeTopics(f"spread-{i:03d}"),
                "x",
                f"boot-{i}",
                "test",
                lambda topic, payload: None,
                lambda up, i=i: on_connection(i, up),
            )
            for i in range(NODES)
        ]
        address = BrokerAddress(broker.host, broker.port)
        for transport in transports:
            transport.start(address)
        try:
            deadline = time.monotonic() + 60
            while len(ever) < NODES:
                assert time.monotonic() < deadline, f"only {len(ever)} of {NODES} connected"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(OUTAGE_S)
            restarted_at = time.monotonic()  # before the broker is back: count every reconnect after it
            await asyncio.to_thread(broker.start)
            deadline = time.monotonic() + 90
            while len(connected) < NODES:
                assert time.monotonic() < deadline, f"only {len(connected)} of {NODES} reconnected"
                await asyncio.sleep(0.1)
        finally:
            await asyncio.gather(*(t.stop() for t in transports))
        return sorted(connected.values())

    try:
        delays = asyncio.run(scenario())
    finally:
        broker.stop()
    per_second = collections.Counter(int(d) for d in delays)
    busiest = max(per_second.values())
    print(
        f"\n{NODES} nodes reconnected over {delays[-1]:.1f} s after a {OUTAGE_S:.0f} s outage; "
        f"busiest second {busiest} ({busiest / NODES:.0%}); per second: {dict(sorted(per_second.items()))}"
    )
    assert busiest <= NODES / 5, f"{busiest} nodes reconnected within one second"
    assert delays[-1] <= 40, "reconnects must not drag on past the backoff cap"
