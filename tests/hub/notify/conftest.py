"""Real loopback receivers for the sender's tests: started once per module, emptied around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify_receivers import Receivers


@pytest.fixture(scope="module")
def receivers_running() -> Iterator[Receivers]:
    with Receivers() as r:
        yield r


@pytest.fixture
def r(receivers_running: Receivers) -> Iterator[Receivers]:
    receivers_running.clear()
    yield receivers_running
    receivers_running.clear()
