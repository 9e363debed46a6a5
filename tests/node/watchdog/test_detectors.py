"""Each detector on hand-made frames: opens after its hold, resolves after its clear time, never flaps, per-channel policies."""

from __future__ import annotations

from hark_fleet.node.watchdog.events import WatchEvent
from hark_fleet.node.watchdog.frame_watch import FrameWatch
from hark_fleet.node.watchdog.policy import default_watchdog
from hark_fleet.protocol.messages import MeterChannel
from hark_fleet.protocol.watchdog import (
    Baseline,
    ChannelBaseline,
    ClippingDetector,
    DcOffsetDetector,
    Detectors,
    DeviceLossDetector,
    DiskHoursLeftDetector,
    FlatlineDetector,
    NodeWatchdog,
    NoiseFloorDetector,
    PolicyConfig,
    SilenceDetector,
)

from tests.node.watchdog.frames import channel, frame


def feed(watch: FrameWatch, seconds: float, *channels: MeterChannel) -> list[tuple[float, WatchEvent]]:
    """`seconds` of 100 ms frames of `channels`; each event with the audio time (s) of the frame that raised it."""
    seen: list[tuple[float, WatchEvent]] = []
    for i in range(round(seconds * 10)):
        seen.extend(((i + 1) / 10, e) for e in watch.update(frame(*channels)))
    return seen


def feed_frames(watch: FrameWatch, seconds: float, made: object) -> list[tuple[float, WatchEvent]]:
    """`seconds` of one hand-made 100 ms frame, again and again."""
    seen: list[tuple[float, WatchEvent]] = []
    for i in range(round(seconds * 10)):
        seen.extend(((i + 1) / 10, e) for e in watch.update(made))  # type: ignore[arg-type]
    return seen


def states(events: list[tuple[float, WatchEvent]]) -> list[tuple[float, str, str, tuple[str, ...]]]:
    return [(round(t, 1), e.kind, e.state, e.channels) for t, e in events]


def policy(**detectors: object) -> NodeWatchdog:
    return NodeWatchdog(node=PolicyConfig(policy_id="wdp_1", version=2, detectors=Detectors(**detectors)))  # type: ignore[arg-type]


def test_silence_opens_after_its_hold_and_resolves_a_second_after_the_level_returns() -> None:
    watch = FrameWatch(policy(silence=SilenceDetector(threshold_dbfs=-60, hold_s=2.0), flatline=FlatlineDetector(enabled=False)))
    assert feed(watch, 3, channel("M")) == []
    quiet = feed(watch, 2.5, channel("M", peak=-70, rms=-75))
    assert states(quiet) == [(2.0, "audio.silence", "open", ("M",))]
    event = quiet[0][1]
    assert event.severity == "warning" and event.details["values"] == {"M": {"peak_dbfs": -70}}
    assert event.details["thresholds"] == {"threshold_dbfs": -60, "hold_s": 2.0}
    assert (event.details["policy_id"], event.details["policy_version"], event.details["detector"]) == ("wdp_1", 2, "silence")
    assert states(feed(watch, 1.5, channel("M"))) == [(1.0, "audio.silence", "resolved", ("M",))]


def test_a_level_flickering_around_the_threshold_does_not_flap() -> None:
    watch = FrameWatch(policy(silence=SilenceDetector(threshold_dbfs=-60, hold_s=1.0), flatline=FlatlineDetector(enabled=False)))
    assert states(feed(watch, 1.0, channel("M", peak=-70))) == [(1.0, "audio.silence", "open", ("M",))]
    flicker = []
    for _ in range(10):  # one loud frame in every three: never a full second above the threshold
        flicker += feed(watch, 0.1, channel("M", peak=-59)) + feed(watch, 0.2, channel("M", peak=-70))
    assert flicker == []


def test_clipping_opens_on_the_first_frame_with_enough_clipped_samples_and_clears_after_clear_s() -> None:
    watch = FrameWatch(policy(clipping=ClippingDetector(min_samples=3, clear_s=2.0)))
    assert feed(watch, 1, channel("M", clip=2)) == []  # under min_samples
    assert states(feed(watch, 0.1, channel("M", clip=5))) == [(0.1, "audio.clipping", "open", ("M",))]
    assert feed(watch, 1.5, channel("M")) + feed(watch, 0.1, channel("M", clip=9)) + feed(watch, 1.9, channel("M")) == []
    assert states(feed(watch, 0.5, channel("M"))) == [(0.1, "audio.clipping", "resolved", ("M",))]


def test_flatline_sees_exact_zeros_and_a_stuck_value_but_not_a_signal() -> None:
    watch = FrameWatch(policy(flatline=FlatlineDetector(hold_s=1.0), silence=SilenceDetector(enabled=False)))
    assert feed(watch, 2, channel("M", peak=-12.04, rms=-15.05, dc=0.0)) == []  # a sine
    assert feed(watch, 2, channel("M", peak=-12.04, rms=-12.04, dc=0.0)) == []  # a square wave: no DC
    zeros = feed(watch, 1, channel("M", peak=None, rms=None, dc=0.0))
    assert states(zeros) == [(1.0, "audio.flatline", "open", ("M",))] and zeros[0][1].severity == "critical"
    assert zeros[0][1].details["values"]["M"]["zeros"] is True
    assert states(feed(watch, 1, channel("M"))) == [(1.0, "audio.flatline", "resolved", ("M",))]
    stuck = feed(watch, 1.5, channel("M", peak=-12.04, rms=-12.04, dc=-0.25))  # one code, -0.25 all the time
    assert states(stuck) == [(1.0, "audio.flatline", "open", ("M",))] and stuck[0][1].details["values"]["M"]["zeros"] is False


def test_dc_offset_opens_beyond_its_limit_and_resolves_only_well_inside_it() -> None:
    watch = FrameWatch(policy(dc_offset=DcOffsetDetector(limit=0.05, hold_s=1.0)))
    assert feed(watch, 2, channel("M", dc=0.049)) == []
    assert states(feed(watch, 1, channel("M", dc=0.08))) == [(1.0, "audio.dc_offset", "open", ("M",))]
    assert feed(watch, 3, channel("M", dc=0.045)) == []  # back under the limit, not under 80 % of it: still open
    assert states(feed(watch, 1, channel("M", dc=0.01))) == [(1.0, "audio.dc_offset", "resolved", ("M",))]


def calibrated(floor: float, **detectors: object) -> NodeWatchdog:
    baseline = Baseline(measured_at="2026-12-06T09:00:00Z", duration_s=60, frames=600, channels={"M": ChannelBaseline(floor)})
    nf = NoiseFloorDetector(shift_db=10, window_s=2.0, hold_s=1.0)
    return NodeWatchdog(
        node=PolicyConfig(policy_id="wdp_1", version=4, detectors=Detectors(noise_floor=nf, **detectors), baseline=baseline)
    )  # type: ignore[arg-type]


def test_noise_floor_opens_when_the_low_percentile_moves_shift_db_from_the_baseline() -> None:
    watch = FrameWatch(calibrated(-50.0))
    assert feed(watch, 5, channel("M", rms=-48.0)) == []  # 2 dB off: fine
    dropped = feed(watch, 3, channel("M", peak=-60, rms=-70.0))  # a mic that lost phantom power: 20 dB quieter, not silent
    # the 10th percentile of a 2 s window follows within 0.2 s; then the hold of 1 s
    assert states(dropped) == [(1.2, "audio.noise_floor", "open", ("M",))]
    values = dropped[0][1].details["values"]["M"]
    assert values == {"floor_dbfs": -70.0, "baseline_dbfs": -50.0, "shift_db": -20.0}
    # back to normal: the floor (3rd lowest of 20) is back within shift_db minus the 2 dB margin after 1.8 s, then 1 s
    assert states(feed(watch, 4, channel("M", rms=-50.0))) == [(2.7, "audio.noise_floor", "resolved", ("M",))]


def test_noise_floor_needs_a_baseline_and_a_full_window() -> None:
    no_baseline = FrameWatch(policy(noise_floor=NoiseFloorDetector(shift_db=10, window_s=2.0, hold_s=1.0)))
    assert feed(no_baseline, 5, channel("M", rms=-90.0)) == []
    watch = FrameWatch(calibrated(-50.0))
    assert feed(watch, 1.9, channel("M", rms=-90.0)) == []  # the window (2 s) is not full yet


def test_a_channel_policy_overrides_the_nodes_for_that_channel_only() -> None:
    node = PolicyConfig(policy_id="wdp_node", version=1, detectors=Detectors(silence=SilenceDetector(hold_s=5.0)))
    quick = PolicyConfig(
        policy_id="wdp_room", version=7, detectors=Detectors(silence=SilenceDetector(hold_s=1.0, severity="critical"))
    )
    watch = FrameWatch(NodeWatchdog(node=node, channels={"room": quick}))
    events = feed(watch, 6, channel("room", peak=-80), channel("stage", peak=-80))
    assert states(events) == [(1.0, "audio.silence", "open", ("room",)), (5.0, "audio.silence", "open", ("room", "stage"))]
    first = events[0][1]
    assert first.severity == "critical" and first.policy_id == "wdp_room" and first.details["thresholds"]["hold_s"] == 1.0
    assert events[1][1].severity == "critical"  # the worst of the channels' severities


def test_a_new_policy_applies_from_the_next_frame_and_a_disabled_detector_resolves() -> None:
    watch = FrameWatch(policy(silence=SilenceDetector(hold_s=1.0)))
    assert states(feed(watch, 1, channel("M", peak=-80))) == [(1.0, "audio.silence", "open", ("M",))]
    watch.set_policy(policy(silence=SilenceDetector(enabled=False)))
    assert states(feed(watch, 0.1, channel("M", peak=-80))) == [(0.1, "audio.silence", "resolved", ("M",))]


def test_format_change_against_the_calibration_or_else_what_the_node_saw_first() -> None:
    watch = FrameWatch(default_watchdog())
    assert feed(watch, 1, channel("L"), channel("R")) == []
    changed = [(t, e.kind, e.state) for t, e in feed_frames(watch, 1, frame(channel("L"), channel("R"), rate=44100))]
    assert changed == [(0.5, "audio.format_changed", "open")]
    assert [e.state for _, e in feed_frames(watch, 1, frame(channel("L"), rate=44100))] == []  # one channel now: still open
    watch.reset_format()  # a new channel map: what comes next is the node's format
    assert [e.state for _, e in feed_frames(watch, 2, frame(channel("L"), rate=44100))] == ["resolved"]
    assert [e.state for _, e in feed_frames(watch, 1, frame(channel("L"), channel("R"), rate=44100))] == ["open"]
    baseline = Baseline(measured_at="2026-12-06T09:00:00Z", duration_s=60, frames=600, sample_rate=44100, channel_count=2)
    watch.set_policy(NodeWatchdog(node=PolicyConfig(policy_id="wdp_1", version=1, baseline=baseline)))
    events = []
    for _ in range(15):
        events += watch.update(frame(channel("L"), channel("R"), rate=44100))
    assert [(e.kind, e.state) for e in events] == [("audio.format_changed", "resolved")]  # what calibration saw


def test_device_loss_takes_the_policys_severity_and_can_be_turned_off() -> None:
    watch = FrameWatch(policy(device_loss=DeviceLossDetector(severity="warning")))
    event = watch.device("audio.device_lost", "open", {"message": "the stream ended"})
    assert event is not None and (event.kind, event.severity, event.detector) == ("audio.device_lost", "warning", "device_loss")
    assert event.details["message"] == "the stream ended" and event.details["policy_id"] == "wdp_1"
    assert watch.device("audio.device_lost", "open", {}) is None  # already open
    resolved = watch.device("audio.device_lost", "resolved", {})
    assert resolved is not None and resolved.state == "resolved"
    off = FrameWatch(policy(device_loss=DeviceLossDetector(enabled=False)))
    assert off.device("audio.no_device", "open", {}) is None


def test_disk_hours_left_warns_then_goes_critical_and_clears_above_the_warning_with_a_margin() -> None:
    watch = FrameWatch(policy(disk_hours_left=DiskHoursLeftDetector(warning_hours=24, critical_hours=2)))
    assert watch.disk(None, None, 10**9) is None  # not recording
    assert watch.disk(30.0, 100_000.0, 10**10) is None
    warning = watch.disk(20.0, 100_000.0, 10**10)
    assert warning is not None and (warning.kind, warning.state, warning.severity) == ("disk.hours_left", "open", "warning")
    assert warning.details["values"] == {"hours_left": 20.0, "recording_bytes_per_s": 100_000.0, "free_bytes": 10**10}
    critical = watch.disk(1.5, 100_000.0, 10**9)
    assert critical is not None and critical.severity == "critical"
    assert watch.disk(25.0, 100_000.0, 10**10) is not None  # back to a warning: within 10 % of the warning level
    assert watch.disk(25.5, 100_000.0, 10**10) is None
    cleared = watch.disk(27.0, 100_000.0, 10**10)
    assert cleared is not None and cleared.state == "resolved"
