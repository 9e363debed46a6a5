"""A recording file for provider tests, and the callbacks an upload takes, counting what they see."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

MIB = 1024 * 1024


def make_file(path: Path, size: int) -> str:
    """`size` random bytes at `path`; returns their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


@dataclass
class Upload:
    """The arguments of one `Provider.upload` call, recording progress and throttled bytes."""

    path: Path
    size: int
    sha256: str
    key: str = "site/node/rec.wav"
    resume: dict[str, Any] = field(default_factory=dict)
    progress: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    throttled: int = 0
    cancel_after_bytes: int | None = None  # cancelled() turns true once progress reports this much

    def open_at(self, offset: int) -> BinaryIO:
        source = open(self.path, "rb")  # noqa: SIM115 - the provider closes it
        source.seek(offset)
        return source

    def on_progress(self, sent: int, resume: dict[str, Any]) -> None:
        self.progress.append((sent, resume))
        self.resume = resume

    def throttle(self, n: int) -> None:
        self.throttled += n

    def cancelled(self) -> bool:
        return self.cancel_after_bytes is not None and bool(self.progress) and self.progress[-1][0] >= self.cancel_after_bytes

    def kwargs(self, **override: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "open_at": self.open_at,
            "resume": self.resume,
            "on_progress": self.on_progress,
            "throttle": self.throttle,
            "cancelled": self.cancelled,
        }
        return args | override
