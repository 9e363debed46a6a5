"""Fixtures of the cluster tests: several hub instances' parts on one real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import create_database, drop_database


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the test, dropped afterwards."""
    url = create_database()
    yield url
    drop_database(url)
