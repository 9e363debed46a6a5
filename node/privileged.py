"""The only commands the node runs with the operating system's privileges: a fixed table, nothing else.

Each action that touches the system names its command here; the node never builds a
command line from what the hub sent. A configured runner prefix (`HARK_NODE_PRIVILEGED_RUNNER`,
e.g. `sudo -n`) goes in front; tests point it at a harmless recorder.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

from hark_fleet.node.errors import NodeError

# action -> the commands that do it, in order of preference (the first whose program exists runs)
PRIVILEGED_COMMANDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "reboot": (("systemctl", "reboot"),),
    "sync-time": (("chronyc", "-a", "makestep"), ("systemctl", "restart", "systemd-timesyncd")),
}
MAX_OUTPUT_BYTES = 64 * 1024


class PrivilegedCommandError(NodeError):
    """A privileged command could not be started or did not finish in time."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    output: str


def choose_command(action: str) -> tuple[str, ...]:
    """The table's command for `action`: the first whose program is installed, else the first listed."""
    candidates = PRIVILEGED_COMMANDS.get(action)
    if not candidates:
        raise PrivilegedCommandError(f"{action!r} is not a privileged action")
    return next((c for c in candidates if shutil.which(c[0])), candidates[0])


class PrivilegedCommands:
    """Runs the table's commands behind an optional runner prefix, with a timeout and captured output."""

    def __init__(self, runner: tuple[str, ...] = ()) -> None:
        self.runner = runner

    def argv(self, action: str) -> tuple[str, ...]:
        return (*self.runner, *choose_command(action))

    async def run(self, action: str, timeout_s: float) -> CommandResult:
        argv = self.argv(action)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as err:
            raise PrivilegedCommandError(f"cannot run {' '.join(argv)}: {err}") from err
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError as err:
            await _kill(process)
            raise PrivilegedCommandError(f"{' '.join(argv)} did not finish within {timeout_s:g}s") from err
        except asyncio.CancelledError:
            await _kill(process)
            raise
        text = output[-MAX_OUTPUT_BYTES:].decode("utf-8", "replace")
        return CommandResult(argv, process.returncode if process.returncode is not None else -1, text)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()
