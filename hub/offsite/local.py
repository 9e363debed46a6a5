"""A directory as an upload provider (issue 20): a local disk or a mounted share (NFS, SMB).

A copy is written to `<key>.part` next to its final name, appended to in chunks (each batch fsynced
before it is reported, so `resume` never claims bytes the disk may not have), re-read and hashed
once whole, then renamed over the final name and the directory fsynced. A resumed upload appends to
the `.part` file from the offset last reported. Keys never leave the base directory: absolute keys,
`..` segments and paths that resolve outside it (a symlink) are refused.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from hark_fleet.hub.offsite.base import (
    TEST_OBJECT_PREFIX,
    ProviderError,
    ProviderSpec,
    TestReport,
    TestRun,
    UploadResult,
    cancelled_error,
    key_segments,
    run_test,
)

CHUNK = 1024 * 1024
SYNC_EVERY = 16 * CHUNK  # fsync and report progress every 16 MiB
PART_SUFFIX = ".part"
VERIFIED_BY = "read-back sha256"


class LocalProvider:
    """Copies into `config["path"]`, an absolute directory that must exist (a mount is not created)."""

    def __init__(self, spec: ProviderSpec) -> None:
        path = str(spec.config.get("path") or "")
        if not path or not os.path.isabs(path):
            raise ProviderError("config", "path must be an absolute directory")
        self.base = Path(path)

    # --- keys -----------------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        """The file a key names under the base directory; ProviderError("config") when it would leave it."""
        target = self.base.joinpath(*key_segments(key))
        base = self.base.resolve()
        if not target.resolve().is_relative_to(base):
            raise ProviderError("config", f"key {key!r} resolves outside the base directory")
        return target

    # --- provider ---------------------------------------------------------------------------------

    def test(self) -> TestReport:
        def body(run: TestRun) -> None:
            with run.step("reach", f"{self.base} is a directory"):
                self._check_base()
            with run.step("authenticate", "the directory is writable"):
                if not os.access(self.base, os.W_OK | os.X_OK):
                    raise ProviderError("authenticate", f"no permission to write in {self.base}")
            name = f"{TEST_OBJECT_PREFIX}{secrets.token_hex(6)}"
            payload = secrets.token_bytes(1024)
            target = self.base / name
            with run.step("write", f"wrote {name}"):
                try:
                    with open(target, "xb") as out:
                        out.write(payload)
                        out.flush()
                        os.fsync(out.fileno())
                except OSError as err:
                    raise ProviderError("write", _os_message(err, target)) from err
            with run.step("read", "read back the same bytes"):
                try:
                    back = target.read_bytes()
                except OSError as err:
                    raise ProviderError("read", _os_message(err, target)) from err
                if back != payload:
                    raise ProviderError("read", "the bytes read back differ from those written")
            with run.step("delete", f"deleted {name}"):
                try:
                    target.unlink()
                except OSError as err:
                    raise ProviderError("delete", _os_message(err, target)) from err

        return run_test(body)

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
    ) -> UploadResult:
        self._check_base()
        target = self.path_of(key)
        part = target.with_name(target.name + PART_SUFFIX)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            offset = self._resume_offset(part, resume, size)
            with open(part, "r+b" if offset else "wb") as out:
                out.truncate(offset)
                out.seek(offset)
                self._copy(out, open_at(offset), offset, size, on_progress, throttle, cancelled)
        except OSError as err:
            raise ProviderError("write", _os_message(err, part), retryable=_retryable(err)) from err
        digest = self._hash(part)
        if digest != sha256:
            part.unlink(missing_ok=True)
            raise ProviderError("verify", f"the copy's sha256 {digest} differs from the recording's {sha256}")
        try:
            os.replace(part, target)
            _fsync_dir(target.parent)
        except OSError as err:
            raise ProviderError("complete", _os_message(err, target), retryable=_retryable(err)) from err
        return UploadResult(remote_key=key, sha256=digest, verified_by=VERIFIED_BY, bytes=size)

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, key: str) -> None:
        target = self.path_of(key)
        try:
            target.unlink(missing_ok=True)
            target.with_name(target.name + PART_SUFFIX).unlink(missing_ok=True)
        except OSError as err:
            raise ProviderError("delete", _os_message(err, target), retryable=_retryable(err)) from err

    def close(self) -> None:
        pass

    # --- internals --------------------------------------------------------------------------------

    def _check_base(self) -> None:
        if not self.base.is_dir():
            raise ProviderError("reach", f"{self.base} is not a directory (is the share mounted?)", retryable=True)

    @staticmethod
    def _resume_offset(part: Path, resume: dict[str, Any], size: int) -> int:
        """Where to continue: the offset last reported, if the .part file still holds that much; else 0."""
        reported = resume.get("offset")
        if not isinstance(reported, int) or reported <= 0 or reported > size:
            return 0
        try:
            have = part.stat().st_size
        except FileNotFoundError:
            return 0
        return reported if have >= reported else 0

    @staticmethod
    def _copy(
        out: BinaryIO,
        source: BinaryIO,
        offset: int,
        size: int,
        on_progress: Callable[[int, dict[str, Any]], None],
        throttle: Callable[[int], None],
        cancelled: Callable[[], bool],
    ) -> None:
        done = offset
        unsynced = 0
        with source:
            while done < size:
                if cancelled():
                    raise cancelled_error()
                n = min(CHUNK, size - done)
                throttle(n)
                block = source.read(n)
                if not block:
                    raise ProviderError("read", f"the source ended at byte {done} of {size}", retryable=True)
                out.write(block)
                done += len(block)
                unsynced += len(block)
                if unsynced >= SYNC_EVERY or done >= size:
                    out.flush()
                    os.fsync(out.fileno())
                    unsynced = 0
                    on_progress(done, {"offset": done})

    @staticmethod
    def _hash(path: Path) -> str:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as copy:
                for block in iter(lambda: copy.read(CHUNK), b""):
                    digest.update(block)
        except OSError as err:
            raise ProviderError("verify", _os_message(err, path), retryable=True) from err
        return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_message(err: OSError, path: Path) -> str:
    return f"{err.strerror or err} ({path})"


def _retryable(err: OSError) -> bool:
    """Full disks, a share gone away, I/O errors may pass; permissions and bad names will not."""
    return err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.EINVAL)
