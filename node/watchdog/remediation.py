"""The remediation ladder: while a detector's event stays open, its steps run in order through the lifecycle runner.

Each rung runs an allowlisted action (`restart-audio`, `restart-agent`, `reboot`), then waits
its `wait_s` for the condition to clear before the next. A rung does not start while a
recording is in progress (unless the policy allows it), past the hour's or the day's limit, or
during the cool-down after a ladder ended; it waits instead, and says why once (`skipped`).
Every step is reported as a `RemediationReport` on `watchdog/remediation`. `restart-agent`
is counted and remembered on disk before it runs; the agent that starts next reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.lifecycle import ActionResult
from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.remediation_log import Pending, RemediationLog
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.watchdog import RemediationReport, StepOutcome

log = logging.getLogger(__name__)

RECORDING_POLL_S = 5.0  # a step deferred by a recording looks again this often
MAX_OUTPUT_CHARS = 4000

RunAction = Callable[[str], Awaitable[ActionResult]]
Send = Callable[[Callable[[str], bytes]], Awaitable[object]]  # build(msg_id) -> payload, through the outbox
Wait = Callable[[float, tuple[asyncio.Event, ...]], Awaitable[object]]  # up to `seconds`, or until one event is set


async def real_wait(seconds: float, events: tuple[asyncio.Event, ...]) -> None:
    await wait_any(max(0.0, seconds), *events)


@dataclass(slots=True)
class _Open:
    """A detector's open event as last reported, and the signals its ladder waits on."""

    event: WatchEvent
    resolved: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Remediator:
    """Runs one ladder per detector while its event is open; `on_event` is called on the loop for every change."""

    def __init__(
        self,
        remediation_log: RemediationLog,
        run_action: RunAction,
        send: Send,
        recording: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        wait: Wait = real_wait,
    ) -> None:
        self.log = remediation_log
        self._run_action = run_action
        self._send = send
        self._recording = recording
        self._clock = clock
        self._wait = wait
        self._open: dict[str, _Open] = {}
        self._tasks: dict[str, tuple[asyncio.Task[None], _Open]] = {}

    def on_event(self, event: WatchEvent) -> None:
        detector = event.detector
        if event.state == "resolved":
            current = self._open.pop(detector, None)
            if current is not None:
                current.resolved.set()
            return
        current = self._open.get(detector)
        if current is None:
            current = self._open[detector] = _Open(event)
        else:
            current.event = event
            current.changed.set()
        running = self._tasks.get(detector)
        if running is not None and not running[0].done() and running[1] is current:
            return
        previous = running[0] if running is not None and not running[0].done() else None
        task = asyncio.create_task(self._ladder(detector, current, previous), name=f"remediation-{detector}")
        self._tasks[detector] = (task, current)

    async def finish_restart(self, boot_count: int) -> None:
        """Report the restart steps the previous agent took: this start completes them; their ladders go on."""
        for pending in self.log.take_pending(self._clock()):
            await self._report(
                pending.event_kind, pending.detector, pending.step, pending.action, "succeeded",
                output=f"agent restarted (boot {boot_count})", channels=pending.channels,
                policy=(pending.policy_id, pending.policy_version),
            )  # fmt: skip

    async def stop(self) -> None:
        tasks = [t for t, _ in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- one detector's ladder -------------------------------------------------------------

    async def _ladder(self, detector: str, state: _Open, previous: asyncio.Task[None] | None = None) -> None:
        if previous is not None:  # the ladder of an event that resolved is still finishing its step
            await asyncio.gather(previous, return_exceptions=True)
        step, not_before = self.log.resume_step(detector, self._clock())
        if not_before > self._clock():
            await self._wait(not_before - self._clock(), (state.resolved,))
        said: str | None = None  # the last reason a step was put off, said once
        while not state.resolved.is_set():
            event = state.event
            remediation = event.remediation
            state.changed.clear()
            if remediation is None or not remediation.steps:
                await wait_any(None, state.resolved, state.changed)  # a new policy may bring a ladder
                continue
            now = self._clock()
            if step >= len(remediation.steps):
                self.log.ladder_ended(detector, now)
                step, said = 0, None
                continue
            action = remediation.steps[step].action
            reason, retry_s = None, 0.0
            if step == 0 and self.log.cooldown_left(detector, remediation.cooldown_s, now) > 0:
                reason, retry_s = "cool-down", self.log.cooldown_left(detector, remediation.cooldown_s, now)
            elif not remediation.during_recording and self._recording():
                reason, retry_s = "recording in progress", RECORDING_POLL_S
            else:
                reason, retry_s = self.log.limited(detector, remediation.max_per_hour, remediation.max_per_day, now)
            if reason is not None:
                if reason != said:
                    said = reason
                    log.info("remediation %s step %d (%s) put off: %s", detector, step, action, reason)
                    await self._report(event.kind, detector, step, action, "skipped", reason=reason, event=event)
                await self._wait(retry_s, (state.resolved, state.changed))
                continue
            said = None
            wait_s = remediation.steps[step].wait_s
            pending = None
            if action == "restart-agent":
                pending = Pending(
                    detector, step, action, wait_s, now, event.kind, event.channels, event.policy_id, event.policy_version
                )
            self.log.started(detector, now, pending)
            log.warning("remediation %s step %d: %s (%s open on %s)", detector, step, action, event.kind, event.channels)
            await self._report(event.kind, detector, step, action, "started", event=event)
            result = await self._run_action(action)
            if result.restart_agent and result.ok:
                return  # the agent restarts now; the next one reports this step and goes on
            outcome: StepOutcome = "succeeded" if result.ok else "failed"
            await self._report(
                event.kind, detector, step, action, outcome, reason=result.error, output=result.output, event=event
            )
            await self._wait(wait_s, (state.resolved,))
            step += 1
        if step > 0:
            self.log.ladder_ended(detector, self._clock())

    async def _report(
        self,
        kind: str,
        detector: str,
        step: int,
        action: str,
        outcome: StepOutcome,
        reason: str | None = None,
        output: str = "",
        event: WatchEvent | None = None,
        channels: tuple[str, ...] = (),
        policy: tuple[str | None, int | None] = (None, None),
    ) -> None:
        if event is not None:
            channels, policy = event.channels, (event.policy_id, event.policy_version)

        def build(msg_id: str) -> bytes:
            report = RemediationReport(
                msg_id=msg_id,
                ts=utc_iso(),
                event_kind=kind,
                detector=detector,
                step=step,
                action=action,
                outcome=outcome,
                reason=reason,
                output=output[-MAX_OUTPUT_CHARS:],
                channels=list(channels),
                policy_id=policy[0],
                policy_version=policy[1],
            )
            return msgspec.json.encode(report)

        await self._send(build)
