"""Fixtures of the hardware tests: serial devices on pty pairs that can be unplugged and plugged back."""

from __future__ import annotations

import os
import pty
import select
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest


class PtyDevice:
    """A fake serial device: the test holds the pty master, the driver opens `link` (a symlink to the slave).

    `unplug` closes the pair and removes the link, as when a USB adapter is pulled out;
    `plug` opens a new pair behind the same link, as when it comes back (with another pts number).
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self._pending = b""
        self.plug()

    @property
    def port(self) -> str:
        return str(self.link)

    def plug(self) -> None:
        assert self.master is None, "already plugged in"
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo or line editing before the driver opens it
        self.master, self.slave = master, slave
        self._pending = b""
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(slave))

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def write(self, data: bytes | str) -> None:
        """Bytes from the device to the driver."""
        assert self.master is not None
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def read_line(self, timeout: float = 2.0) -> str:
        """The next line the driver sent to the device; AssertionError after `timeout`."""
        assert self.master is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the driver within {timeout}s (have {self._pending!r})")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self._pending += os.read(self.master, 1024)
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def read_lines_until(self, wanted: str, timeout: float = 2.0) -> list[str]:
        """Lines the driver sent, up to and including `wanted`."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.01, deadline - time.monotonic()))
            lines.append(line)
            if line == wanted:
                return lines

    def close(self) -> None:
        if self.master is not None:
            self.unplug()


@pytest.fixture
def pty_device(tmp_path: Path) -> Iterator[PtyDevice]:
    device = PtyDevice(tmp_path / "ttyFAKE0")
    yield device
    device.close()


@pytest.fixture(autouse=True)
def _no_threads_left(no_thread_leak: None) -> None:
    """Every hardware test must stop the threads its drivers started."""
