"""Fixtures: real hubs on SQLite and PostgreSQL, real brokers, and a check that nothing is left running."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee
import pytest
from hark_fleet.hub.db.database import open_database
from hark_fleet.hub.db.models import database_proxy

from tests.harness import (
    HubProcess,
    Mosquitto,
    NotifySocket,
    create_database,
    drop_database,
    hub_on,
    leftover_children,
    terminate,
)
from tests.offsite_servers import moto_s3, offsite_dir, s3_bucket, sshd, sshd_sftp_only  # noqa: F401 - fixtures (issue 20)

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session, on a free port (tests that restart it use their own)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto this test may stop and start."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for SQLite in the data dir, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A running `hark-hub` with the embedded broker, once on SQLite and once on PostgreSQL."""
    with hub_on(request.param, tmp_path_factory.mktemp(f"hub-{request.param}")) as process:
        yield process


@contextmanager
def hub_database(hub: HubProcess) -> Iterator[peewee.Database]:
    """The hub's own database, opened from the test process with the models bound to it."""
    db = open_database(hub.database_url, hub.data_dir)
    previous = database_proxy.obj
    database_proxy.initialize(db)
    try:
        with db.connection_context():
            yield db
    finally:
        if isinstance(db, peewee.SqliteDatabase):
            db.close()
        else:
            db.close_all()
        database_proxy.initialize(previous)


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail when a test leaves a thread running."""
    before = set(threading.enumerate())
    yield
    deadline_threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in deadline_threads:
        thread.join(timeout=5)
    leaked = [t.name for t in deadline_threads if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    left = leftover_children()
    for proc in left:
        terminate(proc)
    assert not left, f"processes left running: {[p.args for p in left]}"


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    """A socket bound where NOTIFY_SOCKET will point: what systemd would receive from a service."""
    directory = tempfile.mkdtemp(prefix="hark-", dir="/tmp")  # unix socket paths must stay under 108 bytes
    receiver = NotifySocket(os.path.join(directory, "notify"))
    yield receiver
    receiver.close()
    os.unlink(receiver.name)
    os.rmdir(directory)
