"""The node's lifecycle runner: each job once (across restarts too), under its timeout, reported in order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hark_fleet.node.lifecycle import ActionResult, LifecycleRunner
from hark_fleet.node.privileged import PrivilegedCommandError, PrivilegedCommands
from hark_fleet.protocol.messages import LifecycleCommand, LifecycleReport


class Reports:
    def __init__(self) -> None:
        self.sent: list[LifecycleReport] = []

    async def __call__(self, job_id: str, build: Any) -> None:
        self.sent.append(msgspec.json.decode(build(f"m-{len(self.sent)}"), type=LifecycleReport))

    def states(self) -> list[tuple[str, str]]:
        return [(r.job_id, r.state) for r in self.sent]


def runner(tmp_path: Path, reports: Reports, actions: dict[str, Any], restarts: list[bool] | None = None) -> LifecycleRunner:
    return LifecycleRunner(tmp_path, actions, reports, lambda: (restarts if restarts is not None else []).append(True))


def command(job_id: str, action: str = "identify", timeout_s: float = 5, expires_at: str | None = None) -> LifecycleCommand:
    return LifecycleCommand(job_id=job_id, action=action, timeout_s=timeout_s, expires_at=expires_at)


def test_a_job_runs_once_even_when_delivered_again_and_after_a_restart(tmp_path: Path) -> None:
    runs: list[str] = []

    async def identify(cmd: LifecycleCommand) -> ActionResult:
        runs.append(cmd.job_id)
        return ActionResult(True, "blinked", 0)

    async def scenario() -> None:
        reports = Reports()
        first = runner(tmp_path, reports, {"identify": identify})
        await first.run_one(command("lcj_1"))
        first.submit(command("lcj_1"))  # the hub sent it again before hearing back
        assert first._queue.empty()
        again = runner(tmp_path, reports, {"identify": identify})  # a new agent reads the ledger
        again.submit(command("lcj_1"))
        assert again._queue.empty()
        assert reports.states() == [("lcj_1", "running"), ("lcj_1", "succeeded")]

    asyncio.run(scenario())
    assert runs == ["lcj_1"]
    assert json.loads((tmp_path / "lifecycle.json").read_text()) == {"lcj_1": "succeeded"}


def test_an_action_that_overruns_fails_with_timed_out(tmp_path: Path) -> None:
    async def hang(cmd: LifecycleCommand) -> ActionResult:
        await asyncio.sleep(60)
        return ActionResult(True, "never")

    reports = Reports()
    result = asyncio.run(runner(tmp_path, reports, {"identify": hang}).run_one(command("lcj_2", timeout_s=0.2)))
    assert not result.ok and result.error == "timed out after 0.2s"
    assert reports.states() == [("lcj_2", "running"), ("lcj_2", "failed")]


def test_an_action_that_raises_fails_its_job_not_the_agent(tmp_path: Path) -> None:
    async def broken(cmd: LifecycleCommand) -> ActionResult:
        raise RuntimeError("sensor bus")

    reports = Reports()
    result = asyncio.run(runner(tmp_path, reports, {"identify": broken}).run_one(command("lcj_3")))
    assert not result.ok and result.error == "RuntimeError: sensor bus"
    assert reports.sent[-1].state == "failed" and reports.sent[-1].error == "RuntimeError: sensor bus"


def test_unknown_and_expired_jobs_fail_without_running(tmp_path: Path) -> None:
    runs: list[str] = []

    async def identify(cmd: LifecycleCommand) -> ActionResult:
        runs.append(cmd.job_id)
        return ActionResult(True, "", 0)

    reports = Reports()
    lifecycle = runner(tmp_path, reports, {"identify": identify})
    asyncio.run(lifecycle.run_one(command("lcj_4", action="format-disk")))
    asyncio.run(lifecycle.run_one(command("lcj_5", expires_at="2020-01-01T00:00:00Z")))
    assert runs == []
    assert [(r.job_id, r.state, r.error) for r in reports.sent] == [
        ("lcj_4", "failed", "this node has no action 'format-disk'"),
        ("lcj_5", "failed", "the job reached the node after it expired"),
    ]


def test_restart_agent_is_reported_by_the_next_agent(tmp_path: Path) -> None:
    async def restart(cmd: LifecycleCommand) -> ActionResult:
        return ActionResult(True, "bye", restart_agent=True)

    reports = Reports()
    restarts: list[bool] = []
    asyncio.run(runner(tmp_path, reports, {"restart-agent": restart}, restarts).run_one(command("lcj_6", "restart-agent")))
    assert restarts == [True] and reports.states() == [("lcj_6", "running")]
    asyncio.run(runner(tmp_path, reports, {}).finish_restart(boot_count=7))
    assert reports.states()[-1] == ("lcj_6", "succeeded") and reports.sent[-1].output == "agent restarted (boot 7)"
    asyncio.run(runner(tmp_path, reports, {}).finish_restart(boot_count=8))
    assert len(reports.sent) == 2  # reported once


def test_privileged_commands_come_from_the_fixed_table_behind_the_runner(tmp_path: Path) -> None:
    commands = PrivilegedCommands(("/bin/echo", "as-root"))
    assert commands.argv("reboot") == ("/bin/echo", "as-root", "systemctl", "reboot")
    result = asyncio.run(commands.run("reboot", 5))
    assert result.exit_code == 0 and result.output == "as-root systemctl reboot\n"
    with pytest.raises(PrivilegedCommandError, match="not a privileged action"):
        commands.argv("rm -rf /")
