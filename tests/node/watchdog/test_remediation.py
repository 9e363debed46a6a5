"""The remediation ladder with a clock the test controls: order, waits, limits across restarts, cool-down, recordings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
from hark_fleet.node.lifecycle import ActionResult, LifecycleRunner
from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.remediation import Remediator
from hark_fleet.node.watchdog.remediation_log import RemediationLog
from hark_fleet.node.worker import wait_any
from hark_fleet.protocol.messages import LifecycleCommand
from hark_fleet.protocol.watchdog import Remediation, RemediationReport, RemediationStep

T0 = 1_800_000_000.0


class Clock:
    """Wall time that moves only when the ladder waits; a wait past `horizon` blocks until its events are set
    (with `spin`, it returns after a real millisecond without moving the time, so the ladder looks again)."""

    def __init__(self, horizon: float = T0 + 10_000, spin: bool = False) -> None:
        self.now = T0
        self.horizon = horizon
        self.spin = spin

    def __call__(self) -> float:
        return self.now

    async def wait(self, seconds: float, events: tuple[asyncio.Event, ...]) -> None:
        if any(e.is_set() for e in events):
            return
        if self.now + seconds > self.horizon:
            await wait_any(0.001 if self.spin else None, *events)
            return
        self.now += seconds
        await asyncio.sleep(0)


class Ladder:
    """A Remediator with recorded actions and reports."""

    def __init__(self, data_dir: Path, clock: Clock, recording: Callable[[], bool] = lambda: False) -> None:
        self.clock = clock
        self.actions: list[tuple[str, float]] = []
        self.reports: list[RemediationReport] = []
        self.results: dict[str, ActionResult] = {}
        self.remediator = Remediator(RemediationLog(data_dir), self.run, self.send, recording, clock, clock.wait)

    async def run(self, action: str) -> ActionResult:
        self.actions.append((action, self.clock.now - T0))
        return self.results.get(action, ActionResult(True, f"{action} done", 0))

    async def send(self, build: Callable[[str], bytes]) -> None:
        self.reports.append(msgspec.json.decode(build("m1"), type=RemediationReport))

    def steps(self) -> list[tuple[int, str, str, str | None]]:
        return [(r.step, r.action, r.outcome, r.reason) for r in self.reports]


def event(remediation: Remediation, state: str = "open") -> WatchEvent:
    return WatchEvent(
        "audio.flatline",
        state,
        "critical",
        "flatline",
        {},
        ("M",),
        remediation,
        "wdp_1",
        3,  # type: ignore[arg-type]
    )


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def ladder(*steps: tuple[str, float], **limits: object) -> Remediation:
    return Remediation(steps=[RemediationStep(action=a, wait_s=w) for a, w in steps], **limits)  # type: ignore[arg-type]


def test_steps_run_in_order_with_their_waits_then_the_cool_down(tmp_path: Path) -> None:
    async def scenario() -> Ladder:
        box = Ladder(tmp_path, Clock(horizon=T0 + 500))
        policy = ladder(("restart-audio", 30), ("restart-agent", 60), ("reboot", 120), max_per_hour=10, cooldown_s=600)
        box.remediator.on_event(event(policy))
        await until(lambda: box.steps()[-1:] == [(0, "restart-audio", "skipped", "cool-down")], "the cool-down")
        await box.remediator.stop()
        return box

    box = asyncio.run(scenario())
    assert box.actions == [("restart-audio", 0), ("restart-agent", 30), ("reboot", 90)]
    assert box.steps() == [
        (0, "restart-audio", "started", None),
        (0, "restart-audio", "succeeded", None),
        (1, "restart-agent", "started", None),
        (1, "restart-agent", "succeeded", None),
        (2, "reboot", "started", None),
        (2, "reboot", "succeeded", None),
        (0, "restart-audio", "skipped", "cool-down"),  # the ladder ended at 210 s: 600 s before it may start again
    ]
    first = box.reports[0]
    assert (first.event_kind, first.detector, first.channels, first.policy_id, first.policy_version) == (
        "audio.flatline",
        "flatline",
        ["M"],
        "wdp_1",
        3,
    )
    assert box.reports[1].output == "restart-audio done"


def test_the_rate_limit_stops_the_third_attempt_within_the_hour_and_counts_survive_a_restart(tmp_path: Path) -> None:
    policy = ladder(("restart-audio", 60), max_per_hour=2, cooldown_s=0)

    async def first_agent() -> Ladder:
        box = Ladder(tmp_path, Clock(horizon=T0 + 1000))
        box.remediator.on_event(event(policy))
        await until(lambda: any(r.outcome == "skipped" for r in box.reports), "a step put off")
        await box.remediator.stop()
        return box

    box = asyncio.run(first_agent())
    assert box.actions == [("restart-audio", 0), ("restart-audio", 60)]
    assert box.steps()[-1] == (0, "restart-audio", "skipped", "rate limit: 2 per hour reached")

    async def next_agent() -> Ladder:  # the agent restarted 5 minutes later; the condition is still there
        clock = Clock(horizon=T0 + 3000)
        clock.now = T0 + 300
        again = Ladder(tmp_path, clock)
        again.remediator.on_event(event(policy))
        await until(lambda: len(again.reports) > 0, "a report")
        await again.remediator.stop()
        return again

    again = asyncio.run(next_agent())
    assert again.actions == [] and again.steps() == [(0, "restart-audio", "skipped", "rate limit: 2 per hour reached")]

    async def an_hour_later() -> Ladder:  # the oldest attempt leaves the hour: one more step may run
        clock = Clock(horizon=T0 + 3700)
        clock.now = T0 + 3650
        later = Ladder(tmp_path, clock)
        later.remediator.on_event(event(policy))
        await until(lambda: len(later.actions) == 1, "the step")
        await later.remediator.stop()
        return later

    assert asyncio.run(an_hour_later()).actions == [("restart-audio", 3650)]


def test_a_day_limit_holds_too(tmp_path: Path) -> None:
    async def scenario() -> Ladder:
        box = Ladder(tmp_path, Clock(horizon=T0 + 40_000))
        box.remediator.on_event(event(ladder(("restart-audio", 600), max_per_hour=60, max_per_day=3, cooldown_s=0)))
        await until(lambda: any(r.outcome == "skipped" for r in box.reports), "a step put off")
        await box.remediator.stop()
        return box

    box = asyncio.run(scenario())
    assert [t for _, t in box.actions] == [0, 600, 1200]
    assert box.steps()[-1][3] == "rate limit: 3 per day reached"


def test_a_condition_that_clears_ends_the_ladder_and_a_reopened_one_waits_out_the_cool_down(tmp_path: Path) -> None:
    policy = ladder(("restart-audio", 30), ("reboot", 30), cooldown_s=300)

    async def scenario() -> Ladder:
        box = Ladder(tmp_path, Clock(horizon=T0 + 10))  # the first step's wait (30 s) blocks: the condition clears meanwhile
        box.remediator.on_event(event(policy))
        await until(lambda: len(box.reports) == 2, "the first step")
        box.remediator.on_event(event(policy, "resolved"))
        box.clock.horizon = T0 + 1000
        await asyncio.sleep(0.01)
        box.clock.now = T0 + 100  # it comes back 100 s later
        box.remediator.on_event(event(policy))
        await until(lambda: len(box.actions) == 2, "the step after the cool-down")
        await box.remediator.stop()
        return box

    box = asyncio.run(scenario())
    assert box.actions == [("restart-audio", 0), ("restart-audio", 300)]  # the ladder ended at 0 s: cool-down until 300 s
    assert box.steps()[2] == (0, "restart-audio", "skipped", "cool-down")


def test_a_recording_in_progress_defers_the_step_unless_the_policy_allows_it(tmp_path: Path) -> None:
    recording = [True]

    async def deferred() -> Ladder:
        box = Ladder(tmp_path / "a", Clock(horizon=T0 + 60, spin=True), lambda: recording[0])
        box.remediator.on_event(event(ladder(("restart-audio", 30))))
        await until(lambda: len(box.reports) == 1, "the step put off")
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert box.actions == [] and len(box.reports) == 1  # said once, looked at again every few seconds
        recording[0] = False
        await until(lambda: len(box.actions) == 1, "the step once the recording ended")
        await box.remediator.stop()
        return box

    box = asyncio.run(deferred())
    assert box.steps()[:2] == [(0, "restart-audio", "skipped", "recording in progress"), (0, "restart-audio", "started", None)]
    assert 0 < box.actions[0][1] <= 60

    recording[0] = True

    async def allowed() -> Ladder:
        box = Ladder(tmp_path / "b", Clock(horizon=T0 + 10), lambda: recording[0])
        box.remediator.on_event(event(ladder(("restart-audio", 30), during_recording=True)))
        await until(lambda: len(box.actions) == 1, "the step")
        await box.remediator.stop()
        return box

    assert asyncio.run(allowed()).actions == [("restart-audio", 0)]


def test_restart_agent_is_recorded_first_and_the_next_agent_reports_it_and_goes_on(tmp_path: Path) -> None:
    policy = ladder(("restart-agent", 60), ("reboot", 60), max_per_hour=5)

    async def first_agent() -> Ladder:
        box = Ladder(tmp_path, Clock(horizon=T0 + 1000))
        box.results["restart-agent"] = ActionResult(True, "the agent stops cleanly and starts again", restart_agent=True)
        box.remediator.on_event(event(policy))
        await until(lambda: len(box.actions) == 1, "the restart")
        await asyncio.sleep(0.01)
        await box.remediator.stop()
        return box

    box = asyncio.run(first_agent())
    assert box.steps() == [(0, "restart-agent", "started", None)]  # the outcome is the next agent's to say

    async def next_agent() -> Ladder:
        clock = Clock(horizon=T0 + 1000)
        clock.now = T0 + 20
        again = Ladder(tmp_path, clock)
        await again.remediator.finish_restart(8)
        again.remediator.on_event(event(policy))  # the condition is still there once the detectors see it again
        await until(lambda: len(again.actions) > 0, "the next rung")
        await again.remediator.stop()
        return again

    again = asyncio.run(next_agent())
    assert again.reports[0].outcome == "succeeded" and again.reports[0].output == "agent restarted (boot 8)"
    assert again.reports[0].policy_id == "wdp_1" and again.reports[0].channels == ["M"]
    assert again.actions[0] == ("reboot", 60)  # the next rung, after the restart step's wait


def test_the_lifecycle_runner_runs_only_remediation_actions_and_restarts_the_agent_after(tmp_path: Path) -> None:
    restarted: list[bool] = []

    async def restart_agent(command: LifecycleCommand) -> ActionResult:
        return ActionResult(True, "bye", restart_agent=True)

    async def diagnostics(command: LifecycleCommand) -> ActionResult:
        return ActionResult(True, "bundle")

    async def report(job_id: str, build: Callable[[str], bytes]) -> None:
        raise AssertionError("remediation steps are not lifecycle jobs: the watchdog reports them")

    async def scenario() -> tuple[ActionResult, ActionResult]:
        runner = LifecycleRunner(
            tmp_path, {"restart-agent": restart_agent, "collect-diagnostics": diagnostics}, report, lambda: restarted.append(True)
        )
        return await runner.run_remediation("collect-diagnostics"), await runner.run_remediation("restart-agent")

    refused, restart = asyncio.run(scenario())
    assert not refused.ok and "not a remediation" in (refused.error or "")
    assert restart.ok and restart.restart_agent and restarted == [True]
    assert not (tmp_path / "lifecycle.json").exists()  # no job ledger entry
