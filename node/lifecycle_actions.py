"""What each allowlisted lifecycle action does on this node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hark_fleet.node import diagnostics
from hark_fleet.node.identify import Identify
from hark_fleet.node.lifecycle import Action, ActionResult
from hark_fleet.node.privileged import PrivilegedCommands
from hark_fleet.protocol.messages import LifecycleCommand

MAX_OUTPUT_CHARS = 60_000


class NodeActions:
    """The action table handed to the LifecycleRunner; system actions go through the privileged table only."""

    def __init__(
        self,
        data_dir: Path,
        privileged: PrivilegedCommands,
        restart_audio: Callable[[], Awaitable[str]],
        refresh_clock: Callable[[], Awaitable[str]],
        agent_info: Callable[[], dict[str, Any]],
        recent_log: diagnostics.RecentLog,
        identify: Identify,
    ) -> None:
        self.data_dir = data_dir
        self.privileged = privileged
        self._restart_audio = restart_audio
        self._refresh_clock = refresh_clock
        self._agent_info = agent_info
        self._recent_log = recent_log
        self._identify = identify

    def table(self) -> dict[str, Action]:
        return {
            "restart-agent": self.restart_agent,
            "restart-audio": self.restart_audio,
            "reboot": self.reboot,
            "sync-time": self.sync_time,
            "collect-diagnostics": self.collect_diagnostics,
            "identify": self.identify,
        }

    async def restart_agent(self, command: LifecycleCommand) -> ActionResult:
        return ActionResult(True, "the agent stops cleanly and starts again", restart_agent=True)

    async def restart_audio(self, command: LifecycleCommand) -> ActionResult:
        return ActionResult(True, await self._restart_audio(), 0)

    async def reboot(self, command: LifecycleCommand) -> ActionResult:
        result = await self.privileged.run("reboot", command.timeout_s)
        text = f"$ {' '.join(result.argv)}\n{result.output}".rstrip()
        if result.exit_code != 0:
            return ActionResult(False, text, result.exit_code, f"reboot command exited with {result.exit_code}")
        return ActionResult(True, text + "\nreboot requested", 0)

    async def sync_time(self, command: LifecycleCommand) -> ActionResult:
        result = await self.privileged.run("sync-time", command.timeout_s)
        text = f"$ {' '.join(result.argv)}\n{result.output}".rstrip()
        if result.exit_code != 0:
            return ActionResult(False, text, result.exit_code, f"time sync command exited with {result.exit_code}")
        return ActionResult(True, f"{text}\n{await self._refresh_clock()}", 0)

    async def collect_diagnostics(self, command: LifecycleCommand) -> ActionResult:
        info = self._agent_info()
        lines = list(self._recent_log.lines)

        def build() -> str:
            bundle = diagnostics.collect(self.data_dir, info, lines)
            path = diagnostics.save_bundle(self.data_dir / "diagnostics", command.job_id, bundle)
            return diagnostics.summary(bundle, path, MAX_OUTPUT_CHARS)

        return ActionResult(True, await asyncio.get_running_loop().run_in_executor(None, build), 0)

    async def identify(self, command: LifecycleCommand) -> ActionResult:
        return ActionResult(True, await self._identify.run(), 0)
