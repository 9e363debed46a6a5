"""The node's signal-chain watchdog as the agent runs it: policy, detectors, remediation ladders and calibration.

The agent makes one `Watchdog`, hands `frames` to the audio path (the detectors run on the
metering thread) and `on_event` as where their events go (on the loop): each becomes a health
report through the outbox and drives its detector's remediation ladder. The policy comes from
the hub's config (`apply`), is kept on disk for when the hub is away, and is in every heartbeat's
`applied`. `cmd/calibrate` goes to `calibrate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from hark_fleet.node.clock import utc_iso
from hark_fleet.node.lifecycle import ActionResult
from hark_fleet.node.topics import NodeTopics
from hark_fleet.node.watchdog.calibration import Calibrator
from hark_fleet.node.watchdog.disk import RecordingRate, hours_left
from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.frame_watch import FrameWatch
from hark_fleet.node.watchdog.policy import PolicyStore, applied_entry, parse_watchdog, with_builtin
from hark_fleet.node.watchdog.remediation import Remediator
from hark_fleet.node.watchdog.remediation_log import RemediationLog
from hark_fleet.protocol.messages import Disk, MeterFrame
from hark_fleet.protocol.watchdog import CalibrateCommand, ConfigApplied, NodeWatchdog

log = logging.getLogger(__name__)

Report = Callable[[str, str, str, dict[str, Any]], None]  # kind, open|resolved, severity, details
Enqueue = Callable[[str, Callable[[str], bytes]], Awaitable[object]]  # topic, build(msg_id) -> payload


class Watchdog:
    """One agent's watchdog; `run(stop)` is its worker (it ends ladders and calibrations when the agent stops)."""

    def __init__(
        self,
        data_dir: Path,
        default: NodeWatchdog,
        topics: NodeTopics,
        report: Report,
        enqueue: Enqueue,
        run_action: Callable[[str], Awaitable[ActionResult]],
        recording: Callable[[], Any],
        frame_listeners: list[Callable[[MeterFrame], None]],
        audio_state: Callable[[], str],
    ) -> None:
        self.topics = topics
        self.default = default
        self.store = PolicyStore(data_dir)
        stored = self.store.load()
        self.policy = with_builtin(stored, default) if stored is not None else default
        log.info("watchdog policy %s", _describe(self.policy) + (" (kept from the hub)" if stored else " (built-in default)"))
        self.frames = FrameWatch(self.policy)
        self.applied: dict[str, object] = {"watchdog": applied_entry(self.policy)}  # the heartbeat's `applied` (shared)
        self._report = report
        self._enqueue = enqueue
        self._last_confirmed: bytes | None = None
        self.remediator = Remediator(
            RemediationLog(data_dir), run_action, self._send_remediation, lambda: recording() is not None
        )
        self.calibrator = Calibrator(data_dir, frame_listeners, self._send_calibration, audio_state)
        self.rate = RecordingRate(recording)

    # -- events (on the loop) ------------------------------------------------------------

    def on_event(self, event: WatchEvent) -> None:
        self._report(event.kind, event.state, event.severity, event.details)
        self.remediator.on_event(event)

    def disk_reading(self, disk: Disk | None) -> tuple[float | None, float | None]:
        """For a heartbeat: (hours left, recording bytes per second) now, and the hours-left detector's event if it changed."""
        rate = self.rate.read()
        left = hours_left(disk.free_bytes if disk is not None else None, rate)
        event = self.frames.disk(left, rate, disk.free_bytes if disk is not None else None)
        if event is not None:
            self.on_event(event)
        return left, rate

    # -- policy from the hub ---------------------------------------------------------------

    async def apply(self, data: Any) -> None:
        """`data.watchdog` of a config fetch: run it from now on, keep it on disk, confirm it (None: nothing sent, keep ours)."""
        if data is None:
            return
        try:
            policy = parse_watchdog(data)
        except ValueError as err:
            log.error("watchdog policy from the hub refused: %s", err)
            node = data.get("node") if isinstance(data, dict) else None
            refused = node if isinstance(node, dict) else {}
            await self._confirm(refused.get("policy_id"), refused.get("version"), str(err))
            return
        encoded = msgspec.json.encode(policy)
        if encoded == self._last_confirmed:
            return  # the same policy again (every config fetch brings it): nothing changes
        running = with_builtin(policy, self.default)
        changed = running != self.policy
        self.policy = running
        self.frames.set_policy(running)
        self.applied["watchdog"] = applied_entry(running)
        if changed:
            log.info("watchdog policy %s applied", _describe(running))
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.store.save, policy)
            except OSError as err:
                log.error("watchdog policy not kept on disk: %s", err)
        self._last_confirmed = encoded
        await self._confirm(policy.node.policy_id, policy.node.version, None)

    async def _confirm(self, policy_id: Any, version: Any, error: str | None) -> None:
        def build(msg_id: str) -> bytes:
            applied = ConfigApplied(
                msg_id=msg_id,
                ts=utc_iso(),
                what="watchdog",
                ok=error is None,
                id=policy_id if isinstance(policy_id, str) else None,
                version=version if isinstance(version, int) and not isinstance(version, bool) else None,
                error=error,
            )
            return msgspec.json.encode(applied)

        await self._enqueue(self.topics.applied, build)

    # -- commands and the worker -------------------------------------------------------------

    def calibrate(self, command: CalibrateCommand) -> None:
        self.calibrator.submit(command)

    async def start(self, boot_count: int) -> None:
        """At the agent's start: report the restart steps the previous agent took."""
        await self.remediator.finish_restart(boot_count)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await self.remediator.stop()
            await self.calibrator.stop()

    async def _send_remediation(self, build: Callable[[str], bytes]) -> object:
        return await self._enqueue(self.topics.remediation, build)

    async def _send_calibration(self, calibration_id: str, build: Callable[[str], bytes]) -> object:
        return await self._enqueue(self.topics.calibration(calibration_id), build)


def _describe(policy: NodeWatchdog) -> str:
    node = policy.node
    name = "built-in" if node.policy_id is None else f"{node.policy_id} v{node.version}"
    extra = f", {len(policy.channels)} channel policies" if policy.channels else ""
    baseline = ", calibrated" if node.baseline is not None else ""
    return name + extra + baseline
