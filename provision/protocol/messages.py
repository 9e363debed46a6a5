"""The messages nodes and the hub exchange over MQTT: one frozen struct per topic kind.

Topics are `hark/v1/nodes/{node_id}/{kind}[/...]`.

node -> hub
  status      retained, QoS 1; the broker publishes the `offline` one as the node's last will
  heartbeat   QoS 1, through the node's outbox (carries `msg_id`)
  health      QoS 1, through the outbox: a health condition opened or cleared
  meters      QoS 0, never stored: the latest meter frame
  lifecycle/{job_id}  QoS 1, through the outbox: a lifecycle job started, succeeded or failed
  watchdog/...  applied   QoS 1, through the outbox: see `hark_fleet.protocol.watchdog`
hub -> node (`cmd/{kind}`, QoS 1)
  cmd/ack          the outbox messages the hub has stored; the node drops them from its outbox
  cmd/credentials  a new credential (rotation with delivery) for the holder of `replaces_sha256`;
                   the old one works until `valid_until_old`
  cmd/config       the node's settings changed: fetch `GET /api/v1/nodes/{id}/config` again
  cmd/lifecycle    run one allowlisted lifecycle action (sent again on reconnect until it reports)
  cmd/job          a recording job is ready to claim, or (`stop`) the running one must stop
  cmd/calibrate    measure the channels' baseline for the watchdog (`hark_fleet.protocol.watchdog`)

Every outbox message has a `msg_id` unique per node; the hub applies each id once and
acknowledges it, so a message replayed after an outage is never counted twice.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

TimeQuality = Literal["ntp", "gps", "rtc", "unsynced"]
MsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]  # unique per node; the hub applies each once
# When the node says a message was made: an ISO 8601 time with a zone (the OpenAPI's date-time). Anything else
# is refused, not stored: the hub orders a node's heartbeats by it, so a stored "9999" outranked every later one.
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")]
Severity = Literal["info", "warning", "critical"]


class Status(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    state: Literal["online", "offline"]
    ts: Timestamp
    agent_version: str | None = None
    boot_id: str | None = None


class AudioInterface(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    id: str
    name: str
    channels: int = 0
    rates: list[int] = []
    default: bool = False


class Memory(msgspec.Struct, frozen=True):
    used_pct: float
    total_bytes: int


class Disk(msgspec.Struct, frozen=True):
    path: str
    used_pct: float
    free_bytes: int


class Clock(msgspec.Struct, frozen=True):
    offset_ms: float | None
    quality: TimeQuality


class OutboxLevel(msgspec.Struct, frozen=True):
    depth: int
    capacity: int


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    msg_id: MsgId
    ts: Timestamp
    seq: int
    agent_version: str
    uptime_s: float
    cpu_pct: float | None = None
    memory: Memory | None = None
    disk: Disk | None = None
    temperature_c: float | None = None
    interfaces: list[AudioInterface] = []
    clock: Clock | None = None
    outbox: OutboxLevel | None = None
    audio: dict[str, object] | None = None  # capture state and counters (overflows, lost frames, opens)
    load: list[float] | None = None  # 1, 5 and 15 minute load averages
    power: dict[str, object] | None = None  # a Pi's throttling flags: `now` and `since_boot`
    # Seconds until the node's next heartbeat: the interval it really uses (the hub judges missed heartbeats by it).
    interval_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # Hours of recording the data disk still holds at the rate the node is recording now (None: not recording).
    disk_hours_left: Annotated[float, msgspec.Meta(ge=0)] | None = None
    recording_bytes_per_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # What the node runs now: {"watchdog": {"id", "version"}, "channel_map": {"id", "version"}} (ids None: the default).
    applied: dict[str, object] | None = None


class HealthReport(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    msg_id: MsgId
    ts: Timestamp
    kind: str  # e.g. outbox.high, audio.no_device, disk.low
    state: Literal["open", "resolved"]
    severity: Severity = "warning"
    details: dict[str, object] = {}


class Spl(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Calibrated sound level over the frame interval (a channel with a calibration offset only)."""

    laeq_db: float | None = None
    lamax_db: float | None = None
    la90_db: float | None = None


class MeterChannel(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    index: int
    peak_dbfs: float | None = None
    rms_dbfs: float | None = None
    name: str | None = None
    true_peak_dbtp: float | None = None
    clip: int = 0
    dc: float | None = None
    silent: bool = False
    spl: Spl | None = None


class Loudness(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """BS.1770-4 loudness of a set of channels (LUFS) and its loudness range (LU, EBU Tech 3342)."""

    momentary_lufs: float | None = None
    short_term_lufs: float | None = None
    integrated_lufs: float | None = None
    lra_lu: float | None = None


class Programme(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    name: str
    channels: list[int]
    momentary_lufs: float | None = None
    short_term_lufs: float | None = None
    integrated_lufs: float | None = None
    lra_lu: float | None = None


class MeterFrame(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Levels without ballistics over `interval_ms`: absent or silent values are null, never -inf."""

    ts: Timestamp
    seq: int
    interval_ms: int
    channels: Annotated[list[MeterChannel], msgspec.Meta(max_length=64)]
    sample_rate: int | None = None
    loudness: Loudness | None = None
    programmes: Annotated[list[Programme], msgspec.Meta(max_length=32)] = []


LIFECYCLE_ACTIONS: tuple[str, ...] = ("restart-agent", "restart-audio", "reboot", "sync-time", "collect-diagnostics", "identify")


class LifecycleReport(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A lifecycle job's progress on the node: `running`, then `succeeded` or `failed` with its output."""

    msg_id: MsgId
    ts: Timestamp
    job_id: str
    state: Literal["running", "succeeded", "failed"]
    exit_code: int | None = None
    output: str = ""
    error: str | None = None


class Ack(msgspec.Struct, frozen=True):
    ids: list[str]


class NewCredential(msgspec.Struct, frozen=True):
    """`cmd/credentials`: the node takes it only when `replaces_sha256` is the digest of the credential it holds."""

    credential: str
    valid_until_old: str | None = None  # when the credential it replaces stops working
    replaces_sha256: str | None = None  # hex SHA-256 of the credential it replaces (None: no identity, ignored)
    ca_pem: str | None = None  # with TLS on: the CA, a renewed client certificate and its key (as handed over at claim)


class ConfigChanged(msgspec.Struct, frozen=True):
    changed: list[str] = []


class JobReady(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`cmd/job`: a recording job is queued for the node (claim it now), or, with `stop`, the running one must stop."""

    job_id: str | None = None
    recording_id: str | None = None
    stop: bool = False
    scheduled: bool = False  # the node's scheduled jobs changed (new, updated or withdrawn): sync them now


class LifecycleCommand(msgspec.Struct, frozen=True):
    """Run `action` once (the node remembers job ids it has run), within `timeout_s`."""

    job_id: str
    action: str  # one of LIFECYCLE_ACTIONS; a node answers an action it does not know with a failed report
    timeout_s: float
    expires_at: str | None = None
