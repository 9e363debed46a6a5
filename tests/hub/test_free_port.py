"""free_port: ports for the servers the demo, the benches and the tests start, safe from outgoing connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hark_fleet.hub import processes
from hark_fleet.hub.processes import free_port


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_where_outgoing_connections_take_theirs() -> None:
    ports = [free_port() for _ in range(50)]
    assert all(processes.LOWEST_PORT <= p < ephemeral_low() for p in ports)
    assert len(set(ports)) == 50  # never the same port twice, bound yet or not
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy, *range(busy + 1, busy + 100)])  # the busy port is drawn first, twice
        monkeypatch.setattr(processes, "_span", lambda: (busy, busy + 100))
        monkeypatch.setattr(processes.random, "randrange", lambda low, high: next(picks))
        given = free_port()
        assert given != busy and busy < given < busy + 100


def test_xdist_workers_pick_from_slices_that_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    spans = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        spans.append(processes._span())
    assert spans[0][0] == processes.LOWEST_PORT and spans[2][1] <= ephemeral_low()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
