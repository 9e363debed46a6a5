"""Diagnostics bundles: what a technician or developer needs to see why a box misbehaves, secrets removed."""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.metrics import read_system
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.version import __version__

RECENT_LOG_LINES = 300
KEEP_BUNDLES = 10
SECRET_WORDS = ("credential", "password", "secret", "token", "pin", "key")


class RecentLog(logging.Handler):
    """The last lines the agent logged, kept in memory for diagnostics."""

    def __init__(self, capacity: int = RECENT_LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def without_secrets(value: Any) -> Any:
    """`value` with every field whose name suggests a secret replaced by `***`."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else without_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_secrets(v) for v in value]
    return value


def collect(data_dir: Path, agent_info: dict[str, Any], recent_log: list[str]) -> dict[str, Any]:
    """One bundle: agent and host facts, system readings, the agent's own view (secrets removed), recent log."""
    system = read_system(data_dir, None)
    return {
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent": {"version": __version__, "pid": os.getpid(), "python": sys.version.split()[0]},
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine()},
        "system": msgspec.to_builtins(system),
        "node": without_secrets(agent_info),
        "log": recent_log,
    }


def save_bundle(directory: Path, name: str, bundle: dict[str, Any]) -> Path:
    """Write the bundle (owner-only) and keep the newest KEEP_BUNDLES."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    write_atomic(path, json.dumps(bundle, indent=1, default=str), mode=0o600)
    old = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)[:-KEEP_BUNDLES]
    for stale in old:
        stale.unlink(missing_ok=True)
    return path


def summary(bundle: dict[str, Any], path: Path, limit: int) -> str:
    """The bundle as JSON text for the job's output, trimming the oldest log lines to stay under `limit`."""
    trimmed = dict(bundle, saved_to=str(path))
    lines = list(bundle.get("log", []))
    text = json.dumps(trimmed, indent=1, default=str)
    while len(text) > limit and lines:
        lines = lines[len(lines) // 4 + 1 :]
        trimmed["log"] = lines
        text = json.dumps(trimmed, indent=1, default=str)
    return text[:limit]
