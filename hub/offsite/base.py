"""What every upload provider is (issue 20): its spec, its one error type, its test report and its result.

A provider copies one recording file to one place (an S3 bucket, an SFTP server, a directory) and
proves the copy is whole before saying so. Every method blocks: the runner calls them on a thread.
Nothing here ever puts a secret into a message, a log line or a repr.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

KINDS = ("s3", "sftp", "local")
STEPS = ("config", "reach", "authenticate", "write", "read", "verify", "delete", "complete")
TEST_OBJECT_PREFIX = ".hark-test-"


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as the runner needs it: kind-specific config plus its unsealed secrets."""

    id: str
    kind: str
    config: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)
    rate_limit_bps: int | None = None
    max_concurrency: int = 2


class ProviderError(Exception):
    """A provider step failed; `step` says which, `retryable` whether trying later may help."""

    def __init__(self, step: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.retryable = retryable


@dataclass
class TestStep:
    """One step of a provider test: did it work, what it said, how long it took."""

    __test__ = False  # not a pytest class

    step: str
    ok: bool
    message: str
    ms: int

    def to_api(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "message": self.message, "ms": self.ms}


@dataclass
class TestReport:
    """The steps a provider test ran, in order; `failed_step` is the first that failed (the test stops there)."""

    __test__ = False

    ok: bool
    steps: list[TestStep]
    failed_step: str | None

    def to_api(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed_step": self.failed_step, "steps": [s.to_api() for s in self.steps]}


@dataclass
class UploadResult:
    """A verified copy: where it is, its SHA-256 (== the recording's), how it was verified, its size."""

    remote_key: str
    sha256: str
    verified_by: str
    bytes: int


class Provider(Protocol):
    """An upload destination. Every method blocks; one instance is used by one thread at a time."""

    def test(self) -> TestReport: ...

    def upload(
        self,
        *,
        key: str,
        size: int,
        sha256: str,
        open_at: Callable[[int], BinaryIO],
        resume: dict[str, Any],
        on_progress: Callable[[int, dict[str, Any]], None],
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> UploadResult: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


class TestRun:
    """Builds a TestReport step by step: `with run.step("reach"): ...`; a ProviderError ends the run."""

    __test__ = False

    def __init__(self) -> None:
        self.steps: list[TestStep] = []
        self.failed: str | None = None

    @contextmanager
    def step(self, name: str, ok_message: str = "ok") -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except ProviderError as err:
            self.steps.append(TestStep(err.step or name, False, err.message, _ms(started)))
            self.failed = err.step or name
            raise _Stop from err
        self.steps.append(TestStep(name, True, ok_message, _ms(started)))

    def report(self) -> TestReport:
        return TestReport(ok=self.failed is None, steps=self.steps, failed_step=self.failed)


class _Stop(Exception):
    """A test step failed: the remaining steps are not run."""


def run_test(body: Callable[[TestRun], None]) -> TestReport:
    """Run `body` with a TestRun and return its report, whichever step failed."""
    run = TestRun()
    try:
        body(run)
    except _Stop:
        pass
    return run.report()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def cancelled_error() -> ProviderError:
    """The error an upload raises when the caller cancelled it (retryable: the item goes back to the queue)."""
    return ProviderError("write", "cancelled", retryable=True)


def key_segments(key: str) -> list[str]:
    """A key's path segments; ProviderError("config") for a key that is absolute or could climb out (`..`)."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ProviderError("config", f"key {key!r} is not a relative path")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ProviderError("config", f"key {key!r} has an empty, '.' or '..' segment")
    return parts
