"""PostgreSQL `LISTEN`: one connection of its own per hub, read on the event loop (issue 24).

The connection is not one of the pool's: it is made from `HARK_DATABASE_URL` as the pool's are, in autocommit,
and listens on every channel a part of the hub registered (`listen`) before `start`. The loop reads it when its
socket is readable (`loop.add_reader` + `conn.poll()` + `conn.notifies`), so a notification costs no thread and
no polling. Sending goes through the pool (`notify_sql`), usually in the transaction whose commit it announces.

A lost connection (the server restarted, the network cut) is made again with the shared backoff; what was
sent meanwhile is gone, so once listening again every `on_reconnect` callback runs: the events bus reads the
event log from where it was, the caches are cleared. Only on PostgreSQL; nothing of this runs on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2
import psycopg2.extensions
from hark_fleet.protocol.backoff import backoff_delay
from playhouse.db_url import parse as parse_db_url
from psycopg2 import sql

log = logging.getLogger(__name__)

PAYLOAD_MAX = 7999  # bytes: PostgreSQL refuses a NOTIFY payload of 8000 or more
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

Handler = Callable[[str], None]


def connect_params(url: str) -> dict[str, Any]:
    """libpq keywords for `url`, read as the pool reads it (`p%40ss` is the password `p@ss`)."""
    params = parse_db_url(url, unquote_password=True, unquote_user=True)
    params["dbname"] = params.pop("database")
    return {k: v for k, v in params.items() if v is not None}


class PgNotify:
    """One hub's `LISTEN` connection: notifications handed, on the loop, to the handler of their channel."""

    def __init__(self, url: str) -> None:
        self._params = {**connect_params(url), **KEEPALIVE, "application_name": "hark-hub listen"}
        self._handlers: dict[str, Handler] = {}
        self._reconnected: list[Callable[[], Awaitable[None] | None]] = []
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.connections = 0  # made so far (the first, then every reconnection)

    def listen(self, channel: str, handler: Handler) -> None:
        """Hand every notification on `channel` (its payload) to `handler`, on the loop; register before `start`."""
        if channel in self._handlers:
            raise ValueError(f"channel {channel} already has a handler")
        self._handlers[channel] = handler

    def on_reconnect(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Call `callback` each time listening starts again after a lost connection (what was sent meanwhile is lost)."""
        self._reconnected.append(callback)

    async def start(self) -> None:
        """Connect and listen (retrying in the background if the server does not answer now)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._lost = asyncio.Event()
        try:
            await self._connect()
        except psycopg2.Error as err:
            log.warning("cannot listen for other hubs' notifications yet (%s); retrying", err)
            self._lost.set()
        self._task = asyncio.create_task(self._keep_connected(), name="pg-notify")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._drop()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests end it to prove the reconnection)."""
        return self._conn.get_backend_pid() if self._conn is not None else None

    async def _connect(self) -> None:
        assert self._loop is not None
        conn = await self._loop.run_in_executor(None, self._open)
        self._conn = conn
        self._loop.add_reader(conn.fileno(), self._readable)
        self.connections += 1
        self.connected.set()
        self._readable()  # anything that came with the LISTEN's answer

    def _open(self) -> Any:
        conn = psycopg2.connect(**self._params)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                for channel in self._handlers:
                    cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.poll()
        except psycopg2.Error as err:
            if not self._stopping:
                log.warning("lost the connection listening for other hubs' notifications: %s", str(err).strip())
            self._drop()
            if self._lost is not None:
                self._lost.set()
            return
        notifies = conn.notifies
        while notifies:
            notice = notifies.pop(0)
            handler = self._handlers.get(notice.channel)
            if handler is None:
                continue
            try:
                handler(notice.payload)
            except Exception:
                log.exception("handling a notification on %s failed", notice.channel)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        if conn is None:
            return
        if self._loop is not None:
            try:
                self._loop.remove_reader(conn.fileno())
            except (ValueError, OSError, psycopg2.Error):
                pass
        try:
            conn.close()
        except psycopg2.Error:
            pass

    async def _keep_connected(self) -> None:
        assert self._lost is not None
        while True:
            await self._lost.wait()
            self._lost.clear()  # set again if the new connection is lost too
            attempt = 0
            while True:
                await asyncio.sleep(backoff_delay(attempt, RECONNECT_BASE_S, RECONNECT_CAP_S))
                try:
                    await self._connect()
                    break
                except psycopg2.Error as err:
                    attempt += 1
                    log.warning("listening for other hubs' notifications again failed (%s); retrying", str(err).strip())
            log.info("listening for other hubs' notifications again; catching up")
            for callback in self._reconnected:
                try:
                    result = callback()
                    if result is not None:
                        await result
                except Exception:
                    log.exception("catching up after a reconnection failed")


def notify_sql(db: Any, channel: str, payload: str) -> None:
    """`NOTIFY channel, payload` on a pool connection (a database worker), sent when its transaction commits."""
    db.execute_sql("SELECT pg_notify(%s, %s)", (channel, payload))
