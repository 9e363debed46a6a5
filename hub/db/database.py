"""Bind the database from `HARK_DATABASE_URL` and run queries off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import peewee
from hark_fleet.hub import const
from hark_fleet.hub.db.models import database_proxy
from hark_fleet.hub.errors import StartupError
from playhouse.db_url import parse as parse_db_url
from playhouse.migrations import Runner
from playhouse.pool import PooledPostgresqlDatabase

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("foreign_keys", 1),
    ("busy_timeout", 5000),
    ("cache_size", -16000),
)
POSTGRES_POOL_SIZE = 8
MIGRATE_LOCK = 0x68_61_72_6B_24_01  # PostgreSQL advisory lock held while migrating (issue 24: several hubs)


def open_database(url: str | None, data_dir: Path, pool_size: int = POSTGRES_POOL_SIZE) -> peewee.Database:
    """A peewee database for `url`; None means SQLite in WAL mode under `data_dir`."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return peewee.SqliteDatabase(str(data_dir / const.SQLITE_FILE), pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    params = parse_db_url(url, unquote_password=True, unquote_user=True)  # `p%40ss` in the URL is the password `p@ss`
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        path = params.pop("database")
        return peewee.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    database = params.pop("database")
    return PooledPostgresqlDatabase(database, max_connections=pool_size, stale_timeout=300, timeout=10, **params)


def describe(db: peewee.Database) -> str:
    """Where the data lives, without the password."""
    if isinstance(db, peewee.SqliteDatabase):
        return f"sqlite:{db.database}"
    params = db.connect_params
    return f"postgresql://{params.get('user', '')}@{params.get('host', 'localhost')}:{params.get('port', 5432)}/{db.database}"


def migrate(db: peewee.Database, target: str | None = None) -> list[str]:
    """Apply pending migrations in order (up to `target`); return the ones applied.

    On PostgreSQL under an advisory lock: hubs starting at once on one database migrate it one after the other
    (the later ones find nothing left to apply).
    """
    with db.connection_context():
        if not isinstance(db, peewee.PostgresqlDatabase):
            return Runner(db, directory=str(MIGRATIONS_DIR)).up(target)
        db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            return Runner(db, directory=str(MIGRATIONS_DIR)).up(target)
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def schema_status(db: peewee.Database) -> list[tuple[str, bool]]:
    """Each migration's name and whether it is applied."""
    with db.connection_context():
        return [(m.name, m.applied is not None) for m in Runner(db, directory=str(MIGRATIONS_DIR)).status()]


class HubDatabase:
    """The hub's database: one bound peewee database and the executor its queries run on.

    SQLite gets a single worker thread, so every write goes through one path;
    PostgreSQL gets a pool of workers and connections.
    """

    def __init__(self, db: peewee.Database, observe: Callable[[float], None] | None = None) -> None:
        self.db = db
        self.is_sqlite = isinstance(db, peewee.SqliteDatabase)
        workers = 1 if self.is_sqlite else getattr(db, "_max_connections", None) or POSTGRES_POOL_SIZE
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hark-db")
        self._observe = observe

    def bind(self) -> None:
        database_proxy.initialize(self.db)

    def start(self) -> list[str]:
        """Connect, upgrade the schema and bind the models; return the migrations applied."""
        try:
            applied = migrate(self.db)
        except peewee.DatabaseError as err:  # unreachable, refused, or not a database at all
            raise StartupError(f"cannot open the database ({describe(self.db)}): {err}") from err
        self.bind()
        return applied

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        started = time.perf_counter()
        try:
            if self.is_sqlite:
                self.db.connect(reuse_if_open=True)
                return fn(*args)
            with self.db.connection_context():
                return fn(*args)
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on a database worker thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def queue_depth(self) -> int:
        """Database calls waiting for a worker (for the hub's load figures)."""
        return self._executor._work_queue.qsize()

    async def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        await self.run(lambda: self.db.execute_sql("SELECT 1").fetchone())

    def close(self) -> None:
        """Finish queued queries, then close every connection."""
        if self.is_sqlite:
            # peewee keeps the SQLite connection per thread: close it on its own worker.
            self._executor.submit(lambda: self.db.is_closed() or self.db.close()).result()
        self._executor.shutdown(wait=True)
        if isinstance(self.db, PooledPostgresqlDatabase):
            self.db.close_all()
