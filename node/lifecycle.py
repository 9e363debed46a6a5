"""Lifecycle jobs on the node: run each allowlisted action once, with a timeout, and report through the outbox.

The hub sends a job again on every reconnect until it hears about it, so the node keeps a
ledger of the job ids it has taken (`lifecycle.json` in the data dir, written before the
action starts): a job is never run twice, even across a restart. Jobs run one at a time.
`restart-agent` is finished by the next agent: the ledger marks it `restarting`, and the
agent that starts next reports it succeeded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.messages import LifecycleCommand, LifecycleReport
from hark_fleet.protocol.watchdog import REMEDIATION_ACTIONS

log = logging.getLogger(__name__)

LEDGER_FILE = "lifecycle.json"
REMEDIATION_TIMEOUT_S = 120.0
LEDGER_KEEP = 500
RESTARTING = "restarting"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: `ok`, its output, and for `restart-agent` that the agent must now restart."""

    ok: bool
    output: str
    exit_code: int | None = None
    error: str | None = None
    restart_agent: bool = False


Action = Callable[[LifecycleCommand], Awaitable[ActionResult]]
Report = Callable[[str, Callable[[str], bytes]], Awaitable[object]]  # job id, build(msg_id) -> payload


class LifecycleLedger:
    """The job ids this node has taken, and their last state, in a small JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, str] = {}
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self.jobs = {str(k): str(v) for k, v in loaded.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            log.error("lifecycle ledger %s unreadable (%s): starting a new one", path, err)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs

    def set(self, job_id: str, state: str) -> None:
        self.jobs.pop(job_id, None)
        self.jobs[job_id] = state
        while len(self.jobs) > LEDGER_KEEP:
            self.jobs.pop(next(iter(self.jobs)))
        write_atomic(self.path, json.dumps(self.jobs))

    def restarting(self) -> list[str]:
        return [job_id for job_id, state in self.jobs.items() if state == RESTARTING]


def report_payload(msg_id: str, job_id: str, state: str, result: ActionResult | None = None) -> bytes:
    report = LifecycleReport(
        msg_id=msg_id,
        ts=utc_iso(),
        job_id=job_id,
        state=state,  # type: ignore[arg-type]
        exit_code=result.exit_code if result else None,
        output=result.output if result else "",
        error=result.error if result else None,
    )
    return msgspec.json.encode(report)


def _expired(command: LifecycleCommand, now: datetime) -> bool:
    if not command.expires_at:
        return False
    try:
        return datetime.fromisoformat(command.expires_at.replace("Z", "+00:00")) <= now
    except ValueError:
        return False


class LifecycleRunner:
    """Takes `cmd/lifecycle` commands, runs each once through its action, reports running and the result."""

    def __init__(self, data_dir: Path, actions: dict[str, Action], report: Report, on_restart: Callable[[], None]) -> None:
        self.ledger = LifecycleLedger(data_dir / LEDGER_FILE)
        self.actions = actions
        self._report = report
        self._on_restart = on_restart
        self._queue: asyncio.Queue[LifecycleCommand] = asyncio.Queue()
        self._one_at_a_time = asyncio.Lock()  # jobs from the hub and the watchdog's remediation steps

    def submit(self, command: LifecycleCommand) -> None:
        """Called on the loop for every delivery; repeats of a job already taken are dropped here."""
        if command.job_id in self.ledger:
            log.info("lifecycle job %s (%s) delivered again: already taken", command.job_id, command.action)
            return
        self._queue.put_nowait(command)

    async def report(self, job_id: str, state: str, result: ActionResult | None = None) -> None:
        await self._report(job_id, lambda msg_id: report_payload(msg_id, job_id, state, result))

    async def finish_restart(self, boot_count: int) -> None:
        """Report the `restart-agent` jobs the previous agent left as restarting: this start completes them."""
        for job_id in self.ledger.restarting():
            await self.report(job_id, "succeeded", ActionResult(True, f"agent restarted (boot {boot_count})", 0))
            self.ledger.set(job_id, "succeeded")
            log.info("lifecycle job %s: agent restart completed", job_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Run queued jobs one at a time until `stop` is set."""
        while not stop.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait((getter, stopper), return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                return
            await self.run_one(getter.result())

    async def run_remediation(self, action: str, timeout_s: float = REMEDIATION_TIMEOUT_S) -> ActionResult:
        """A watchdog remediation step: an allowlisted action, one at a time with jobs; the watchdog reports it.

        `restart-agent` restarts the agent once it returns: the watchdog has recorded the step first.
        """
        run = self.actions.get(action) if action in REMEDIATION_ACTIONS else None
        if run is None:
            return ActionResult(False, "", error=f"{action!r} is not a remediation this node runs")
        command = LifecycleCommand(job_id=f"watchdog-{action}", action=action, timeout_s=timeout_s)
        async with self._one_at_a_time:
            log.warning("watchdog remediation: %s", action)
            result = await self._run_action(run, command)
        if result.restart_agent and result.ok:
            log.warning("watchdog remediation: restarting the agent")
            self._on_restart()
        return result

    async def run_one(self, command: LifecycleCommand) -> ActionResult:
        """Run one job (never beside another job or a remediation step)."""
        async with self._one_at_a_time:
            return await self._run_one(command)

    async def _run_one(self, command: LifecycleCommand) -> ActionResult:
        """Ledger first, then `running`, the action under its timeout, then the result."""
        if command.job_id in self.ledger:
            return ActionResult(False, "", error="already taken")
        action = self.actions.get(command.action)
        self.ledger.set(command.job_id, "running")
        if action is None:
            result = ActionResult(False, "", error=f"this node has no action {command.action!r}")
        elif _expired(command, datetime.now().astimezone()):
            result = ActionResult(False, "", error="the job reached the node after it expired")
        else:
            log.warning("lifecycle job %s: %s (timeout %gs)", command.job_id, command.action, command.timeout_s)
            await self.report(command.job_id, "running")
            result = await self._run_action(action, command)
        if result.restart_agent and result.ok:
            self.ledger.set(command.job_id, RESTARTING)
            log.warning("lifecycle job %s: restarting the agent", command.job_id)
            self._on_restart()
            return result
        state = "succeeded" if result.ok else "failed"
        await self.report(command.job_id, state, result)
        self.ledger.set(command.job_id, state)
        log.info("lifecycle job %s: %s %s%s", command.job_id, command.action, state, f" ({result.error})" if result.error else "")
        return result

    async def _run_action(self, action: Action, command: LifecycleCommand) -> ActionResult:
        try:
            return await asyncio.wait_for(action(command), command.timeout_s)
        except TimeoutError:
            return ActionResult(False, "", error=f"timed out after {command.timeout_s:g}s")
        except NodeError as err:
            return ActionResult(False, "", error=str(err))
        except Exception as err:  # noqa: BLE001 - an action's bug fails its job, never the agent
            log.exception("lifecycle action %s failed", command.action)
            return ActionResult(False, "", error=f"{type(err).__name__}: {err}")
