"""Per-channel detectors on meter frames: pure state machines with hysteresis, cheap enough for the metering thread.

Each detector looks at one channel's values of one frame (peak, RMS, DC, clip count: what the
meter engine already measured) and the frame's length in audio time, so a test drives it with
hand-made frames and no clock. A condition opens once it held for the detector's hold time and
resolves only after it stayed away for `CLEAR_S` (clipping: its `clear_s`); levels compared with
a limit also need to come back past a margin, so a value hovering at the limit does not flap.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

from hark_fleet.protocol.watchdog import (
    ChannelBaseline,
    ClippingDetector,
    DcOffsetDetector,
    FlatlineDetector,
    NoiseFloorDetector,
    SilenceDetector,
)

CLEAR_S = 1.0  # a condition resolves after this long without it
FLOOR_DBFS = -150.0  # a digitally silent frame (RMS reported as None) counts as this level for the noise floor
DC_CLEAR_FRACTION = 0.8  # an open DC offset resolves under 80 % of its limit
NOISE_FLOOR_MARGIN_DB = 2.0  # an open noise-floor shift resolves this far inside `shift_db` (at most a quarter of it)
FLOOR_PERCENTILE = 0.10
STUCK_TOLERANCE_DB = 0.02  # peak, RMS and |DC| of a constant block agree to the frame's rounding
EPSILON_S = 1e-6


def percentile(ordered: list[float], q: float) -> float:
    """The `q` quantile of an ascending list (nearest rank): what calibration and the noise-floor detector both use."""
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


@dataclass(slots=True)
class Hysteresis:
    """Opens after the condition held `hold` seconds, resolves after it was absent `clear` seconds."""

    active: bool = False
    held_s: float = 0.0
    absent_s: float = 0.0

    def step(self, condition: bool, dt: float, hold: float, clear: float = CLEAR_S) -> bool:
        if condition:
            self.absent_s = 0.0
            self.held_s += dt
            if not self.active and self.held_s + EPSILON_S >= hold:
                self.active = True
        else:
            self.held_s = 0.0
            if self.active:
                self.absent_s += dt
                if self.absent_s + EPSILON_S >= clear:
                    self.active = False
                    self.absent_s = 0.0
        return self.active

    def reset(self) -> None:
        self.active, self.held_s, self.absent_s = False, 0.0, 0.0


def silent(peak: float | None, policy: SilenceDetector) -> bool:
    """No sample of the frame reached the threshold (None: digital silence)."""
    return peak is None or peak < policy.threshold_dbfs


def clipped(clip: int, policy: ClippingDetector) -> bool:
    return clip >= policy.min_samples


def flat(peak: float | None, rms: float | None, dc: float | None) -> bool:
    """Exact zeros (no level at all), or one sample value all frame long: |DC| = peak = RMS, and not zero."""
    if peak is None:
        return True
    if rms is None or dc is None or dc == 0.0 or abs(peak - rms) > STUCK_TOLERANCE_DB:
        return False
    # |dc| in dB equals the peak for a constant block; compare in the linear domain to skip a log
    level = 10.0 ** (peak / 20.0)
    return abs(abs(dc) - level) <= level * (10.0 ** (STUCK_TOLERANCE_DB / 20.0) - 1.0) + 1e-6


def dc_beyond(dc: float | None, policy: DcOffsetDetector, active: bool) -> bool:
    if dc is None:
        return False
    return abs(dc) > (policy.limit * DC_CLEAR_FRACTION if active else policy.limit)


@dataclass(slots=True)
class FloorWindow:
    """The channel's frame RMS over the last `size` frames, kept sorted too, for a low percentile every frame."""

    size: int
    values: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def add(self, rms: float | None) -> None:
        value = FLOOR_DBFS if rms is None else rms
        if len(self.values) >= self.size:
            old = self.values.popleft()
            del self.ordered[bisect_left(self.ordered, old)]
        self.values.append(value)
        insort(self.ordered, value)

    @property
    def full(self) -> bool:
        return len(self.values) >= self.size

    def floor(self) -> float:
        return percentile(self.ordered, FLOOR_PERCENTILE)


def floor_shift(window: FloorWindow, baseline: ChannelBaseline | None) -> float | None:
    """How far the channel's floor moved from its calibrated one (dB; None until the window is full or without a baseline)."""
    if baseline is None or baseline.noise_floor_dbfs is None or not window.full:
        return None
    return window.floor() - baseline.noise_floor_dbfs


def shifted(shift: float | None, policy: NoiseFloorDetector, active: bool) -> bool:
    if shift is None:
        return False
    limit = policy.shift_db - min(NOISE_FLOOR_MARGIN_DB, policy.shift_db / 4.0) if active else policy.shift_db
    return abs(shift) >= limit


@dataclass(slots=True)
class ChannelWatch:
    """One channel's detector states across frames."""

    silence: Hysteresis = field(default_factory=Hysteresis)
    clipping: Hysteresis = field(default_factory=Hysteresis)
    flatline: Hysteresis = field(default_factory=Hysteresis)
    dc_offset: Hysteresis = field(default_factory=Hysteresis)
    noise_floor: Hysteresis = field(default_factory=Hysteresis)
    window: FloorWindow | None = None
    shift_db: float | None = None  # the latest noise-floor shift, for the event's details

    def floor_window(self, window_s: float, dt: float) -> FloorWindow:
        """The RMS window for `window_s` of frames `dt` long (made again when the policy or the frame length changes)."""
        size = max(1, round(window_s / dt))
        if self.window is None or self.window.size != size:
            self.window = FloorWindow(size)
        return self.window

    def step_silence(self, peak: float | None, dt: float, policy: SilenceDetector) -> bool:
        if not policy.enabled:
            self.silence.reset()
            return False
        return self.silence.step(silent(peak, policy), dt, policy.hold_s)

    def step_clipping(self, clip: int, dt: float, policy: ClippingDetector) -> bool:
        if not policy.enabled:
            self.clipping.reset()
            return False
        return self.clipping.step(clipped(clip, policy), dt, dt, policy.clear_s)  # one clipped frame opens it

    def step_flatline(self, peak: float | None, rms: float | None, dc: float | None, dt: float, policy: FlatlineDetector) -> bool:
        if not policy.enabled:
            self.flatline.reset()
            return False
        return self.flatline.step(flat(peak, rms, dc), dt, policy.hold_s)

    def step_dc(self, dc: float | None, dt: float, policy: DcOffsetDetector) -> bool:
        if not policy.enabled:
            self.dc_offset.reset()
            return False
        return self.dc_offset.step(dc_beyond(dc, policy, self.dc_offset.active), dt, policy.hold_s)

    def step_noise_floor(
        self, rms: float | None, dt: float, policy: NoiseFloorDetector, baseline: ChannelBaseline | None
    ) -> bool:
        if not policy.enabled or baseline is None or baseline.noise_floor_dbfs is None:
            self.noise_floor.reset()
            self.window = None
            self.shift_db = None
            return False
        window = self.floor_window(policy.window_s, dt)
        window.add(rms)
        self.shift_db = floor_shift(window, baseline)
        return self.noise_floor.step(shifted(self.shift_db, policy, self.noise_floor.active), dt, policy.hold_s)
