"""`hark-node`: the node agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from hark_fleet.node.agent import NodeRunner, prepare_state
from hark_fleet.node.config import NodeConfig
from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.errors import ConfigError
from hark_fleet.protocol.logs import setup_logging
from hark_fleet.protocol.version import __version__

log = logging.getLogger("hark_fleet.node")

EXIT_CONFIG = 2


async def serve(runner: NodeRunner) -> None:
    """Run the node until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        log.info("%s received", name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    await runner.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hark-node", description="The hark node agent (configured by HARK_* variables).")
    parser.add_argument("--version", action="version", version=f"hark-node {__version__}")
    parser.parse_args(argv)
    try:
        config = NodeConfig.from_env()
    except ConfigError as err:
        print(f"hark-node: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    try:
        store = prepare_state(config)
        runner = NodeRunner(config, store)
    except NodeError as err:
        log.error("cannot start: %s", err)
        return EXIT_CONFIG
    try:
        asyncio.run(serve(runner))
    except NodeError as err:
        log.error("stopped: %s", err)
        return 1
    if runner.restart_requested:
        restart_in_place()
    return 0


def restart_in_place() -> None:
    """Replace this process with a fresh agent (same pid, so a supervisor sees no exit)."""
    log.info("restarting the agent in place")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "hark_fleet.node", *sys.argv[1:]])
