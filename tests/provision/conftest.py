"""Fixtures of the provisioning tests: real mDNS on loopback."""

from __future__ import annotations

import pytest

from tests.harness import enable_loopback_multicast


@pytest.fixture(autouse=True)
def loopback_multicast() -> None:
    enable_loopback_multicast()
