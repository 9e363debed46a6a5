"""Crash-safe small files: JSON written atomically (temp, fsync, rename, directory fsync), and file digests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hark_fleet.node.recorder.errors import CorruptRecording
from hark_fleet.protocol.atomic_file import write_atomic

READ_BLOCK = 1024 * 1024


def fsync_dir(directory: Path) -> None:
    """Make renames and new files in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, body: dict[str, Any]) -> None:
    """Replace `path` with `body` so a crash leaves either the old or the new file, never a torn one."""
    write_atomic(path, json.dumps(body, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; CorruptRecording when it is missing, unreadable or not an object."""
    try:
        body = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise CorruptRecording(f"{path}: {err}") from err
    if not isinstance(body, dict):
        raise CorruptRecording(f"{path}: not a JSON object")
    return body


def sha256_file(path: Path) -> str:
    """Hex sha256 of a whole file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()
