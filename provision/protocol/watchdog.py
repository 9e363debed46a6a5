"""Signal-chain watchdog: the policy a node runs, and what it reports back.

The hub keeps watchdog policies (settings) assigned to a site, a node or one of a node's
channels; for each node it resolves the most specific one and hands the node a `NodeWatchdog`
in `GET /api/v1/nodes/{id}/config` (`data.watchdog`). The node evaluates every detector on
its meter frames (no second pass over the audio) and runs the remediation ladder itself, so
a policy keeps working while the hub is away.

node -> hub (through the outbox, QoS 1)
  watchdog/remediation  a remediation step started, succeeded, failed or was skipped
  watchdog/calibration  a calibration's result: the channels' baseline, or why it failed
  applied               the node applied (or refused) a channel map or watchdog policy
hub -> node
  cmd/calibrate         measure every channel for `duration_s` and report a baseline
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from hark_fleet.protocol.messages import MsgId, Severity, Timestamp

DETECTORS: tuple[str, ...] = (
    "silence",
    "clipping",
    "flatline",
    "dc_offset",
    "noise_floor",
    "device_loss",
    "format_change",
    "disk_hours_left",
)
# The health event kind each detector opens (one open event per node and kind; `details.channels` says where).
EVENT_KINDS: dict[str, str] = {
    "silence": "audio.silence",
    "clipping": "audio.clipping",
    "flatline": "audio.flatline",
    "dc_offset": "audio.dc_offset",
    "noise_floor": "audio.noise_floor",
    "device_loss": "audio.device_lost",
    "format_change": "audio.format_changed",
    "disk_hours_left": "disk.hours_left",
}
REMEDIATION_ACTIONS: tuple[str, ...] = ("restart-audio", "restart-agent", "reboot")
StepOutcome = Literal["started", "succeeded", "failed", "skipped"]

Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
Hold = Annotated[float, msgspec.Meta(ge=0.1, le=86_400)]
Dbfs = Annotated[float, msgspec.Meta(ge=-150, le=0)]


class RemediationStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One rung: run `action`, then wait `wait_s` for the condition to clear before the next rung."""

    action: Literal["restart-audio", "restart-agent", "reboot"]
    wait_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 60.0


class Remediation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ladder a detector climbs while its condition stays open.

    At most `max_per_hour` / `max_per_day` steps run (counted per node and detector, across
    restarts); after the ladder ends, `cooldown_s` passes before it may start again. Steps wait
    while a recording is in progress unless `during_recording` is true.
    """

    steps: Annotated[list[RemediationStep], msgspec.Meta(max_length=10)] = []
    max_per_hour: Annotated[int, msgspec.Meta(ge=0, le=60)] = 2
    max_per_day: Annotated[int, msgspec.Meta(ge=0, le=500)] = 6
    cooldown_s: Seconds = 600.0
    during_recording: bool = False


class Detector(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What every detector has: on or off, the severity it opens with, and its remediation."""

    enabled: bool = True
    severity: Severity = "warning"
    remediation: Remediation | None = None


class SilenceDetector(Detector, frozen=True, forbid_unknown_fields=True):
    threshold_dbfs: Dbfs = -60.0  # no sample reaches this level ...
    hold_s: Hold = 10.0  # ... for this long


class ClippingDetector(Detector, frozen=True, forbid_unknown_fields=True):
    min_samples: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1  # clipped samples in one frame that count
    clear_s: Hold = 10.0  # resolves after this long without a clipped frame


class FlatlineDetector(Detector, frozen=True, forbid_unknown_fields=True):
    """Exact digital zeros, or one sample value repeated (a stuck converter), for `hold_s`."""

    severity: Severity = "critical"
    hold_s: Hold = 2.0


class DcOffsetDetector(Detector, frozen=True, forbid_unknown_fields=True):
    limit: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05  # |mean| as a fraction of full scale
    hold_s: Hold = 5.0


class NoiseFloorDetector(Detector, frozen=True, forbid_unknown_fields=True):
    """The channel's floor (a low percentile of its RMS over `window_s`) moved `shift_db` from the calibrated one."""

    shift_db: Annotated[float, msgspec.Meta(ge=1, le=100)] = 10.0
    window_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    hold_s: Hold = 5.0


class DeviceLossDetector(Detector, frozen=True, forbid_unknown_fields=True):
    severity: Severity = "critical"


class FormatChangeDetector(Detector, frozen=True, forbid_unknown_fields=True):
    """The device's sample rate or channel count is not what it was at calibration (or at start)."""


class DiskHoursLeftDetector(Detector, frozen=True, forbid_unknown_fields=True):
    """Hours of recording the node's disk holds at its current recording rate."""

    warning_hours: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 24.0
    critical_hours: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 2.0


class Detectors(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    silence: SilenceDetector = SilenceDetector()
    clipping: ClippingDetector = ClippingDetector()
    flatline: FlatlineDetector = FlatlineDetector()
    dc_offset: DcOffsetDetector = DcOffsetDetector()
    noise_floor: NoiseFloorDetector = NoiseFloorDetector()
    device_loss: DeviceLossDetector = DeviceLossDetector()
    format_change: FormatChangeDetector = FormatChangeDetector()
    disk_hours_left: DiskHoursLeftDetector = DiskHoursLeftDetector()


class ChannelBaseline(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One channel's levels over a calibration (dBFS; None where the channel was digitally silent)."""

    noise_floor_dbfs: float | None = None  # 10th percentile of the frames' RMS
    rms_median_dbfs: float | None = None
    rms_p90_dbfs: float | None = None
    peak_max_dbfs: float | None = None
    dc_mean: float | None = None


class Baseline(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What a node measured when calibrated: per channel (keyed by channel name, or index as text), and the format."""

    measured_at: Timestamp
    duration_s: float
    frames: int
    sample_rate: int | None = None
    channel_count: int | None = None
    channels: dict[str, ChannelBaseline] = {}


class PolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A resolved policy as a node runs it; `policy_id` None is the built-in default."""

    policy_id: str | None = None
    version: int = 0
    detectors: Detectors = Detectors()
    baseline: Baseline | None = None


class NodeWatchdog(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`data.watchdog` of the node's config: the node's policy, and per-channel ones (by channel name) where assigned."""

    node: PolicyConfig = PolicyConfig()
    channels: dict[str, PolicyConfig] = {}


class CalibrateCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`cmd/calibrate`: measure every channel for `duration_s`, then report a `CalibrationResult`."""

    calibration_id: str
    duration_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0


class CalibrationResult(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`watchdog/calibration/{calibration_id}` through the outbox: the baseline, or the error that stopped it."""

    msg_id: MsgId
    ts: Timestamp
    calibration_id: str
    baseline: Baseline | None = None
    error: str | None = None


class RemediationReport(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`watchdog/remediation` through the outbox: one step of a ladder, for the open event of `event_kind`."""

    msg_id: MsgId
    ts: Timestamp
    event_kind: str  # e.g. audio.flatline
    detector: str  # one of DETECTORS
    step: int  # 0-based rung of the ladder
    action: str  # one of REMEDIATION_ACTIONS
    outcome: StepOutcome
    reason: str | None = None  # why skipped (rate limit, recording in progress, cool-down) or failed
    output: str = ""
    channels: list[str] = []
    policy_id: str | None = None
    policy_version: int | None = None


class ConfigApplied(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`applied` through the outbox: the node now runs (or refused) a channel map or a watchdog policy."""

    msg_id: MsgId
    ts: Timestamp
    what: Literal["channel_map", "watchdog"]
    ok: bool
    id: str | None = None  # template id / policy id (None: none / the built-in default)
    version: int | None = None
    error: str | None = None


DEFAULT_POLICY = PolicyConfig()
