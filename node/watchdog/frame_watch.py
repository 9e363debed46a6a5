"""The watchdog's detectors over the meter stream, device conditions and disk hours-left, turned into health events.

`update(frame)` runs on the metering thread for every frame the node meters: a few comparisons
per channel and detector on values the meter engine already measured, no numpy and no second
pass over the audio; it allocates only when an event changes. The policy is swapped whole by
`set_policy` (from the loop) and read once per frame. Device conditions come from the capture
supervisor's thread, disk readings from the heartbeat: each kind is only touched from one thread.
"""

from __future__ import annotations

from typing import Any

from hark_fleet.node.watchdog.detectors import ChannelWatch, Hysteresis
from hark_fleet.node.watchdog.events import EventBook, WatchEvent, worst
from hark_fleet.node.watchdog.policy import baseline_for, policy_for
from hark_fleet.protocol.messages import MeterChannel, MeterFrame, Severity
from hark_fleet.protocol.watchdog import EVENT_KINDS, NodeWatchdog, PolicyConfig

CHANNEL_DETECTORS = ("silence", "clipping", "flatline", "dc_offset", "noise_floor")
DISK_CLEAR_FACTOR = 1.1  # an open hours-left event resolves once 10 % above its warning level
FORMAT_HOLD_S = 0.5  # a format seen this long counts (not a frame caught between a channel map and its engine)
DISK_KIND = EVENT_KINDS["disk_hours_left"]
FORMAT_KIND = EVENT_KINDS["format_change"]


def channel_key(channel: MeterChannel) -> str:
    return channel.name or str(channel.index)


class FrameWatch:
    """Every detector of one node; each method returns the events that changed (usually none)."""

    def __init__(self, watchdog: NodeWatchdog) -> None:
        self.watchdog = watchdog
        self.channels: dict[str, ChannelWatch] = {}
        self.book = EventBook()
        self._format_seen: tuple[int | None, int] | None = None  # what the node saw first (no baseline to compare with)
        self._format = Hysteresis()
        self._actives: dict[str, list[str]] = {d: [] for d in CHANNEL_DETECTORS}

    def set_policy(self, watchdog: NodeWatchdog) -> None:
        self.watchdog = watchdog

    def reset_format(self) -> None:
        """The channel map changed: what the next frame shows is the node's format from now on."""
        self._format_seen = None

    # -- the meter stream (metering thread) --------------------------------------------------

    def update(self, frame: MeterFrame) -> list[WatchEvent]:
        watchdog = self.watchdog
        dt = frame.interval_ms / 1000.0
        actives = self._actives
        for names in actives.values():
            names.clear()
        for channel in frame.channels:
            key = channel.name or str(channel.index)
            watch = self.channels.get(key)
            if watch is None:
                watch = self.channels[key] = ChannelWatch()
            detectors = policy_for(watchdog, key).detectors
            peak, rms, dc = channel.peak_dbfs, channel.rms_dbfs, channel.dc
            if watch.step_silence(peak, dt, detectors.silence):
                actives["silence"].append(key)
            if watch.step_clipping(channel.clip, dt, detectors.clipping):
                actives["clipping"].append(key)
            if watch.step_flatline(peak, rms, dc, dt, detectors.flatline):
                actives["flatline"].append(key)
            if watch.step_dc(dc, dt, detectors.dc_offset):
                actives["dc_offset"].append(key)
            if detectors.noise_floor.enabled or watch.window is not None:
                if watch.step_noise_floor(rms, dt, detectors.noise_floor, baseline_for(watchdog, key)):
                    actives["noise_floor"].append(key)
        events: list[WatchEvent] = []
        for detector, names in actives.items():
            kind = EVENT_KINDS[detector]
            channels = tuple(names)
            severity = worst([getattr(policy_for(watchdog, n).detectors, detector).severity for n in names]) if names else None
            if self.book.changed(kind, channels, severity):
                events.append(self._channel_event(detector, channels, severity, frame))
        format_event = self._format_change(frame, dt)
        if format_event is not None:
            events.append(format_event)
        return events

    def _channel_event(
        self, detector: str, channels: tuple[str, ...], severity: Severity | None, frame: MeterFrame
    ) -> WatchEvent:
        watchdog = self.watchdog
        kind = EVENT_KINDS[detector]
        if channels:
            policy = policy_for(watchdog, channels[0])
        else:
            policy = self.book.policy_of(kind) or watchdog.node
        by_key = {channel_key(c): c for c in frame.channels}
        values = {name: self._values(detector, name, by_key[name]) for name in channels if name in by_key}
        details = {"values": values, "message": _message(detector, channels)}
        return self.book.report(kind, detector, channels, severity, policy, details)

    def _values(self, detector: str, name: str, channel: MeterChannel) -> dict[str, Any]:
        if detector == "silence":
            return {"peak_dbfs": channel.peak_dbfs}
        if detector == "clipping":
            return {"clipped_samples": channel.clip}
        if detector == "flatline":
            zeros = channel.peak_dbfs is None
            return {"peak_dbfs": channel.peak_dbfs, "rms_dbfs": channel.rms_dbfs, "dc": channel.dc, "zeros": zeros}
        if detector == "dc_offset":
            return {"dc": channel.dc}
        watch = self.channels[name]
        baseline = baseline_for(self.watchdog, name)
        floor = watch.window.floor() if watch.window is not None and watch.window.values else None
        return {
            "floor_dbfs": None if floor is None else round(floor, 2),
            "baseline_dbfs": baseline.noise_floor_dbfs if baseline is not None else None,
            "shift_db": None if watch.shift_db is None else round(watch.shift_db, 2),
        }

    def _format_change(self, frame: MeterFrame, dt: float) -> WatchEvent | None:
        policy = self.watchdog.node
        settings = policy.detectors.format_change
        seen = (frame.sample_rate, len(frame.channels))
        if self._format_seen is None:
            self._format_seen = seen
        baseline = policy.baseline
        expected_rate, expected_count = self._format_seen
        origin = "start"
        if baseline is not None and (baseline.sample_rate is not None or baseline.channel_count is not None):
            expected_rate = baseline.sample_rate if baseline.sample_rate is not None else expected_rate
            expected_count = baseline.channel_count if baseline.channel_count is not None else expected_count
            origin = "calibration"
        differs = seen != (expected_rate, expected_count)
        if settings.enabled:
            active = self._format.step(differs, dt, FORMAT_HOLD_S)
        else:
            self._format.reset()
            active = False
        severity = settings.severity if active else None
        if not self.book.changed(FORMAT_KIND, (), severity):
            return None
        details = {
            "expected": {"sample_rate": expected_rate, "channel_count": expected_count, "from": origin},
            "seen": {"sample_rate": seen[0], "channel_count": seen[1]},
            "message": f"the audio format is {seen[0]} Hz, {seen[1]} channels; {origin} had {expected_rate} Hz, {expected_count}",
        }
        return self.book.report(FORMAT_KIND, "format_change", (), severity, policy, details)

    # -- device conditions (capture supervisor's thread) -------------------------------------

    def device(self, kind: str, state: str, details: dict[str, Any]) -> WatchEvent | None:
        """A capture condition (`audio.device_lost`, `audio.no_device`) with the policy's severity; None when it is off."""
        policy = self.watchdog.node
        settings = policy.detectors.device_loss
        if state == "open" and not settings.enabled:
            return None
        severity: Severity | None = settings.severity if state == "open" else None
        if not self.book.changed(kind, (), severity):
            return None
        reported = self.book.policy_of(kind) if severity is None else None
        return self.book.report(kind, "device_loss", (), severity, reported or policy, dict(details))

    # -- disk hours-left (the heartbeat, on the loop) ----------------------------------------

    def disk(self, hours_left: float | None, bytes_per_s: float | None, free_bytes: int | None) -> WatchEvent | None:
        """Hours of recording left at the current rate (None: not recording, nothing to judge)."""
        policy: PolicyConfig = self.watchdog.node
        settings = policy.detectors.disk_hours_left
        current = self.book.open.get(DISK_KIND)
        severity: Severity | None = None
        if settings.enabled and hours_left is not None:
            if hours_left < settings.critical_hours:
                severity = "critical"
            elif hours_left < settings.warning_hours or (
                current is not None and hours_left < settings.warning_hours * DISK_CLEAR_FACTOR
            ):
                severity = "warning"
        if not self.book.changed(DISK_KIND, (), severity):
            return None
        details = {
            "values": {
                "hours_left": None if hours_left is None else round(hours_left, 2),
                "recording_bytes_per_s": bytes_per_s,
                "free_bytes": free_bytes,
            },
            "message": "recording stopped" if hours_left is None else f"{hours_left:.1f} h of recording left on the data disk",
        }
        return self.book.report(DISK_KIND, "disk_hours_left", (), severity, policy, details)


def _message(detector: str, channels: tuple[str, ...]) -> str:
    where = ", ".join(channels)
    if not channels:
        return f"{detector.replace('_', ' ')} cleared"
    return {
        "silence": f"silence on {where}",
        "clipping": f"clipping on {where}",
        "flatline": f"flat signal (digital zeros or a stuck value) on {where}",
        "dc_offset": f"DC offset on {where}",
        "noise_floor": f"noise floor moved from its calibrated level on {where}",
    }[detector]
