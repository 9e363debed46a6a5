"""`hark-hub`: run the hub, or the demo (hub plus simulated nodes)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from hark_fleet.hub import const
from hark_fleet.hub.config import HubConfig
from hark_fleet.hub.data_dir_lock import DataDirLock, SqliteOwner
from hark_fleet.hub.db import maintenance
from hark_fleet.hub.db.integrity import check_database
from hark_fleet.hub.disk_watch import make_room_to_start
from hark_fleet.hub.errors import StartupError
from hark_fleet.protocol.errors import ConfigError
from hark_fleet.protocol.logs import setup_logging
from hark_fleet.protocol.version import __version__

log = logging.getLogger("hark_fleet.hub")


async def serve(config: HubConfig) -> None:
    """Run one hub until SIGTERM or SIGINT, then stop it gracefully."""
    from hark_fleet.hub.server import Hub

    hub = Hub(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await hub.start()
    except BaseException:
        await hub.stop()
        raise
    # What starting made (modules, routes, the schema, caches) lives as long as the process: out of the collector's
    # reach, a full collection walks only what the running hub allocates (they stalled the loop 90-120 ms, longer
    # than a coalesced meter tick, with 1,000 SSE clients). Collected first, so no garbage is kept for good.
    gc.collect()
    gc.freeze()
    await stop.wait()
    log.info("stopping (signal received)")
    await hub.stop()


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One log line for a client session the embedded broker (amqtt) lost mid-way; the rest as asyncio does."""
    error = context.get("exception")
    frames = traceback.extract_tb(error.__traceback__) if error is not None else []
    if any("/amqtt/" in frame.filename for frame in frames):
        log.warning("embedded broker: a client session ended abruptly (%s: %s)", type(error).__name__, error)
        return
    loop.default_exception_handler(context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark-hub", description="Run the hark hub (configured by HARK_* variables).")
    parser.add_argument("--version", action="version", version=f"hark-hub {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the hub (the default)")
    sub.add_parser("demo", help="run a hub on embedded defaults in the foreground, Ctrl-C stops it")
    sub.add_parser("backup", help="copy the database to FILE (safe while the hub runs)").add_argument("file", type=Path)
    sub.add_parser("restore", help="put a backup in place of the database (the hub stopped)").add_argument("file", type=Path)
    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    reset = db.add_parser("reset", help="move a damaged database aside and start with an empty one (the hub stopped)")
    reset.add_argument("--move-aside", action="store_true", help="keep the old database beside the new one (required)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from hark_fleet.hub.demo import run_demo

        return run_demo()
    try:
        config = HubConfig.from_env()
    except ConfigError as err:
        print(f"hark-hub: configuration error: {err}", file=sys.stderr)
        return 2
    if args.command == "backup":
        return maintenance.backup(config, args.file)
    if args.command == "restore":
        return maintenance.restore(config, args.file)
    if args.command == "db":
        return maintenance.reset(config, args.move_aside)
    setup_logging(config.log_level)
    lock = DataDirLock(config.data_dir)
    owner = sqlite_owner(config)
    try:
        if not lock.take(exclusive=False):
            raise StartupError(f"a restore or reset is running on {config.data_dir}; start the hub once it is done")
        if owner is not None:
            running = owner.take()
            if running is not None:
                raise StartupError(
                    f"another hub (pid {running}) is running on the SQLite database {owner.database}; "
                    "SQLite serves one hub process. To run more than one hub, use PostgreSQL: "
                    "HARK_DATABASE_URL=postgresql://user@host/db (README: Running more than one hub)"
                )
        make_room_to_start(config.database_url, config.data_dir)
        check_database(config.database_url, config.data_dir)
        asyncio.run(serve(config))
    except StartupError as err:
        log.error("cannot start: %s", err)
        return 1
    finally:
        if owner is not None:
            owner.release()
        lock.release()
    return 0


def sqlite_owner(config: HubConfig) -> SqliteOwner | None:
    """The lock that keeps a second hub off this hub's SQLite database (None on PostgreSQL)."""
    url = config.database_url
    if config.on_postgres:
        return None
    if not url:
        return SqliteOwner((config.data_dir / const.SQLITE_FILE).resolve())
    path = url.split(":///", 1)[1] if ":///" in url else ""  # sqlite:///relative or sqlite:////absolute
    if path in ("", ":memory:"):
        return None
    return SqliteOwner(Path(path).resolve())
