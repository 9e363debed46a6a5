"""Peewee models. The schema itself is made by the numbered files in `migrations/`."""

from __future__ import annotations

import json
from typing import Any

import peewee
from hark_fleet.hub.clock import utcnow

database_proxy = peewee.DatabaseProxy()


class JSONField(peewee.TextField):
    """JSON stored as text, portable between SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class User(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    username = peewee.CharField(unique=True, max_length=150)
    password_hash = peewee.TextField()
    roles = JSONField(default=list)
    sites = JSONField(null=True)  # None: every site
    disabled = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    password_changed_at = peewee.DateTimeField(null=True)
    oidc_subject = peewee.CharField(max_length=300, null=True)
    display_name = peewee.CharField(max_length=200, null=True)


class Group(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(unique=True, max_length=150)
    description = peewee.TextField(default="")
    roles = JSONField(default=list)
    sites = JSONField(null=True)  # None: every site
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class UserGroup(BaseModel):
    user_id = peewee.CharField(max_length=40, index=True)
    group_id = peewee.CharField(max_length=40, index=True)

    class Meta:
        table_name = "user_group"
        primary_key = False


class Role(BaseModel):
    """A custom role; the built-in ones live in `hub.auth.permissions`."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(unique=True, max_length=100)
    description = peewee.TextField(default="")
    permissions = JSONField(default=list)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=150)
    kind = peewee.CharField(max_length=16)  # user | service
    user_id = peewee.CharField(max_length=40, null=True, index=True)
    scopes = JSONField(default=list)
    sites = JSONField(null=True)
    key_prefix = peewee.CharField(max_length=24)
    secret_hash = peewee.CharField(unique=True, max_length=64)
    previous_hash = peewee.CharField(max_length=64, null=True, index=True)
    created_by = peewee.CharField(max_length=40, null=True)  # the user at the root of the chain of creators
    parent_key_id = peewee.CharField(max_length=40, null=True, index=True)  # the key that made this one
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)
    last_used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "api_key"


class LoginThrottle(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=300)
    failures = peewee.IntegerField(default=0)
    window_start = peewee.DateTimeField()
    locked_until = peewee.DateTimeField(null=True)
    lockouts = peewee.IntegerField(default=0)

    class Meta:
        table_name = "login_throttle"


class Setting(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=100)
    value = JSONField()
    updated_at = peewee.DateTimeField(default=utcnow)


class OidcLogin(BaseModel):
    """A login started at the identity provider, waiting for its callback (used once)."""

    state = peewee.CharField(primary_key=True, max_length=100)
    nonce = peewee.CharField(max_length=100)
    code_verifier = peewee.CharField(max_length=200)
    return_to = peewee.CharField(max_length=500)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "oidc_login"


class AuditEvent(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    at = peewee.DateTimeField(index=True)
    actor_type = peewee.CharField(max_length=16)
    actor_id = peewee.CharField(max_length=40, null=True, index=True)
    actor_name = peewee.CharField(max_length=200, null=True)
    permission = peewee.CharField(max_length=64, null=True)
    action = peewee.CharField(max_length=100, index=True)
    target_type = peewee.CharField(max_length=40, null=True)
    target_id = peewee.CharField(max_length=200, null=True, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)  # the target's site; None: hub-wide or unknown
    before = JSONField(null=True)
    after = JSONField(null=True)
    outcome = peewee.CharField(max_length=16, index=True)
    reason = peewee.TextField(null=True)
    source_ip = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "audit_event"


class AuthSession(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    user = peewee.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    token_hash = peewee.CharField(unique=True, max_length=64)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)
    source_ip = peewee.CharField(max_length=64, null=True)
    user_agent = peewee.CharField(max_length=256, null=True)
    via = peewee.CharField(max_length=16, default="password")  # password | oidc

    class Meta:
        table_name = "auth_session"


class Node(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=200)
    site = peewee.CharField(max_length=100, null=True, index=True)
    tags = JSONField(default=list)
    status = peewee.CharField(max_length=16, default="pending", index=True)
    hardware_id = peewee.CharField(max_length=200, null=True, unique=True)
    version = peewee.CharField(max_length=64, null=True)
    hardware = JSONField(default=dict)
    interfaces = JSONField(default=list)
    capacity = JSONField(default=dict)
    metrics = JSONField(default=dict)
    time_quality = peewee.CharField(max_length=16, null=True)
    last_seen_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    credential_hash = peewee.CharField(max_length=64, null=True, index=True)
    previous_credential_hash = peewee.CharField(max_length=64, null=True, index=True)
    previous_valid_until = peewee.DateTimeField(null=True)
    last_heartbeat_at = peewee.DateTimeField(null=True)
    heartbeat_interval_s = peewee.FloatField(default=10.0)  # what the hub asks the node to use (cmd/config)
    reported_heartbeat_interval_s = peewee.FloatField(null=True)  # what the node says it uses, in its heartbeats
    clock_offset_ms = peewee.FloatField(null=True)
    connected_at = peewee.DateTimeField(null=True)
    settings = JSONField(default=dict)


class NodeStatusChange(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, index=True)
    at = peewee.DateTimeField()
    from_status = peewee.CharField(max_length=16, null=True)
    to_status = peewee.CharField(max_length=16)
    reason = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "node_status_change"


class ReceivedMessage(BaseModel):
    """An outbox message the hub has applied (so a replay is not applied twice)."""

    node_id = peewee.CharField(max_length=40)
    msg_id = peewee.CharField(max_length=100)
    received_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "received_message"
        primary_key = False
        indexes = ((("node_id", "msg_id"), True),)


class HealthEvent(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, null=True, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    kind = peewee.CharField(max_length=100, index=True)
    severity = peewee.CharField(max_length=16)
    state = peewee.CharField(max_length=16, index=True)  # open | acknowledged | suppressed | resolved
    first_seen = peewee.DateTimeField()
    last_seen = peewee.DateTimeField()
    count = peewee.IntegerField(default=1)
    details = JSONField(default=dict)
    acknowledged_by = peewee.CharField(max_length=200, null=True)
    acknowledged_at = peewee.DateTimeField(null=True)
    suppressed_until = peewee.DateTimeField(null=True)
    resolved_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "health_event"
        indexes = ((("kind", "state"), False),)  # made by migration 0019


class LifecycleJob(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    action = peewee.CharField(max_length=40)
    state = peewee.CharField(max_length=16, index=True)  # queued | sent | running | succeeded | failed | expired
    created_at = peewee.DateTimeField()
    created_by = JSONField(default=dict)  # {type, id, name}
    expires_at = peewee.DateTimeField()
    timeout_s = peewee.FloatField()
    sent_at = peewee.DateTimeField(null=True)
    deliveries = peewee.IntegerField(default=0)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    exit_code = peewee.IntegerField(null=True)
    output = peewee.TextField(default="")
    error = peewee.TextField(null=True)

    class Meta:
        table_name = "lifecycle_job"


class ChannelMapTemplate(BaseModel):
    """Physical inputs mapped to named logical channels, grouped into programmes."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    description = peewee.TextField(default="")
    channels = JSONField(default=list)  # [{input, name, calibration_db, role}]
    programmes = JSONField(default=list)  # [{name, channels: [channel names]}]
    channel_count = peewee.IntegerField(default=0, index=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow, index=True)
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "channel_map_template"


class ChannelMapAssignment(BaseModel):
    """Which template a node runs (None: none), and the one before, for rollback."""

    node_id = peewee.CharField(primary_key=True, max_length=40)
    template_id = peewee.CharField(max_length=40, null=True, index=True)
    previous_template_id = peewee.CharField(max_length=40, null=True, index=True)
    assigned_at = peewee.DateTimeField(default=utcnow)
    assigned_by = JSONField(default=dict)  # {type, id, name}

    class Meta:
        table_name = "channel_map_assignment"


class RecordingProfile(BaseModel):
    """How a node records: format, rate, depth, channels (or a channel map), segments, pre-roll, longest take."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    description = peewee.TextField(default="")
    builtin = peewee.BooleanField(default=False)  # the built-in `default` (WAV, 48 kHz, 24 bit, the source's channels)
    format = peewee.CharField(max_length=8)  # wav | flac
    sample_rate = peewee.IntegerField()
    bit_depth = peewee.IntegerField()  # 16 | 24 | 32
    channels = peewee.IntegerField(null=True)  # None: the source's channels (or the channel map's)
    channel_map_template_id = peewee.CharField(max_length=40, null=True)
    segment_s = peewee.FloatField()  # the node fsyncs and checksums at each segment boundary
    preroll_s = peewee.FloatField()
    max_duration_s = peewee.FloatField()
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow, index=True)
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "recording_profile"


class Recording(BaseModel):
    """One take in the library. Status: queued, recording, uploading, completed, interrupted, failed, cancelled."""

    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    name = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=16, index=True)
    profile_id = peewee.CharField(max_length=40, null=True)
    profile = JSONField(default=dict)  # the profile as it was when the recording was made
    format = peewee.CharField(max_length=8)
    sample_rate = peewee.IntegerField()
    bit_depth = peewee.IntegerField()
    channels = peewee.IntegerField(null=True)
    requested_duration_s = peewee.FloatField(null=True)  # None: until stopped (or the profile's maximum)
    started_at = peewee.DateTimeField(null=True, index=True)  # UTC from the node's clock
    ended_at = peewee.DateTimeField(null=True)
    duration_s = peewee.FloatField(null=True)  # captured length, pre-roll excluded
    size_bytes = peewee.IntegerField(null=True)
    sha256 = peewee.CharField(max_length=64, null=True)  # of the stored file
    storage_key = peewee.CharField(max_length=300, null=True)
    metadata = JSONField(default=dict)
    integrity = JSONField(default=dict)  # the node's capture-integrity ledger
    interrupted = peewee.BooleanField(default=False)  # the node crashed or lost power mid-capture
    time_quality = peewee.CharField(max_length=16, null=True)
    clock_offset_ms = peewee.FloatField(null=True)
    error = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    created_by = JSONField(default=dict)  # {type, id, name}
    created_by_id = peewee.CharField(max_length=40, null=True, index=True)  # the user (or service key) who started it
    updated_at = peewee.DateTimeField(default=utcnow)
    schedule_id = peewee.CharField(max_length=40, null=True, index=True)  # made by a schedule's occurrence
    occurrence_id = peewee.CharField(max_length=40, null=True, index=True)
    scheduled_start_at = peewee.DateTimeField(null=True)  # the planned instant (UTC)
    late_s = peewee.FloatField(null=True)  # started this long after the plan (the node was off or away at the start)
    # Never deleted while true (issue 20). The database fills false (no Python default: older schemas insert without it).
    legal_hold = peewee.BooleanField(index=True, constraints=[peewee.SQL("DEFAULT FALSE")])
    legal_hold_reason = peewee.TextField(null=True)
    legal_hold_at = peewee.DateTimeField(null=True)
    legal_hold_by = JSONField(null=True)  # {type, id, name}
    # Copies (issue 20): the hub's own copy deleted by retention, and what the node said of its cache copy.
    hub_evicted_at = peewee.DateTimeField(null=True)
    hub_evicted_reason = peewee.TextField(null=True)
    node_cache = peewee.CharField(max_length=12, null=True)  # present | evicted | None (not reported)
    node_cache_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "recording"


class RecordingJob(BaseModel):
    """The node's work for one recording. State: queued, claimed, recording, uploading, completed, failed, cancelled."""

    id = peewee.CharField(primary_key=True, max_length=40)
    recording_id = peewee.CharField(max_length=40, index=True)
    node_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    state = peewee.CharField(max_length=16, index=True)
    lease_epoch = peewee.IntegerField(default=0)  # bumped on every claim; calls with an older one get 409 stale_lease
    stop_requested = peewee.BooleanField(default=False)
    capture_started = peewee.BooleanField(default=False)  # once true the job is never recorded again
    claimed_at = peewee.DateTimeField(null=True)
    last_heartbeat_at = peewee.DateTimeField(null=True)
    progress = JSONField(default=dict)
    attempts = peewee.IntegerField(default=0)
    error = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)
    # A scheduled job (issue 19): the node holds it ahead of time and starts it on its own clock at `start_at`.
    schedule_id = peewee.CharField(max_length=40, null=True, index=True)
    occurrence_id = peewee.CharField(max_length=40, null=True, index=True)
    start_at = peewee.DateTimeField(null=True, index=True)  # UTC; None: an ad-hoc job, started when claimed
    end_at = peewee.DateTimeField(null=True)
    revision = peewee.IntegerField(default=0)  # bumped when an edit of its schedule changes the job before it starts

    class Meta:
        table_name = "recording_job"
        indexes = ((("occurrence_id", "node_id"), True),)  # one job per node per occurrence: dispatch is idempotent


class CommissioningReport(BaseModel):
    """A commissioning report a node produced for a technician (levels, channel map, time sync, hub, upload)."""

    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    passed = peewee.CharField(max_length=8)  # "true" | "false"
    report = JSONField(default=dict)

    class Meta:
        table_name = "commissioning_report"


class MeterMinute(BaseModel):
    """A node's meter levels over one minute: per channel peak and RMS (max, energy mean), and loudness."""

    node_id = peewee.CharField(max_length=40)
    minute = peewee.BigIntegerField(index=True)  # Unix time (s, UTC) the minute starts at
    frames = peewee.IntegerField()  # meter frames folded into the row
    channels = peewee.TextField()  # JSON [[peak_max, peak_mean, rms_max, rms_mean], ...] in dBFS, null when silent
    momentary_lufs_max = peewee.FloatField(null=True)
    short_term_lufs_max = peewee.FloatField(null=True)
    integrated_lufs = peewee.FloatField(null=True)  # the minute's last reading

    class Meta:
        table_name = "meter_minute"
        primary_key = peewee.CompositeKey("node_id", "minute")


class MetricMinute(BaseModel):
    """A node's heartbeat metrics over one minute: means, maxima (and disk free's minimum) of its heartbeats."""

    node_id = peewee.CharField(max_length=40)
    minute = peewee.BigIntegerField(index=True)  # Unix time (s, UTC) the minute starts at
    samples = peewee.IntegerField()  # heartbeats folded into the row
    cpu_pct_mean = peewee.FloatField(null=True)
    cpu_pct_max = peewee.FloatField(null=True)
    memory_used_pct_mean = peewee.FloatField(null=True)
    memory_used_pct_max = peewee.FloatField(null=True)
    disk_used_pct_mean = peewee.FloatField(null=True)
    disk_used_pct_max = peewee.FloatField(null=True)
    disk_free_bytes_min = peewee.FloatField(null=True)
    temperature_c_mean = peewee.FloatField(null=True)
    temperature_c_max = peewee.FloatField(null=True)
    outbox_depth_mean = peewee.FloatField(null=True)
    outbox_depth_max = peewee.FloatField(null=True)
    clock_offset_ms_mean = peewee.FloatField(null=True)
    clock_offset_ms_max_abs = peewee.FloatField(null=True)
    load_1m_mean = peewee.FloatField(null=True)
    load_1m_max = peewee.FloatField(null=True)

    class Meta:
        table_name = "metric_minute"
        primary_key = peewee.CompositeKey("node_id", "minute")


# -- sites --


class Site(BaseModel):
    """A place nodes stand: its id is the slug nodes and grants name; time zone and location for schedules."""

    id = peewee.CharField(primary_key=True, max_length=100)
    name = peewee.CharField(max_length=200, index=True)
    time_zone = peewee.CharField(max_length=64, default="UTC", index=True)
    latitude = peewee.FloatField(null=True)
    longitude = peewee.FloatField(null=True)
    elevation_m = peewee.FloatField(null=True)
    visibility = peewee.CharField(max_length=16, default="public", index=True)  # public | approved | admin_only
    notes = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)
    version = peewee.IntegerField(default=1)


class SiteApprovedUser(BaseModel):
    """A user approved to see a site whose visibility is `approved`."""

    site_id = peewee.CharField(max_length=100, index=True)
    user_id = peewee.CharField(max_length=40, index=True)
    approved_at = peewee.DateTimeField(default=utcnow)
    approved_by = JSONField(default=dict)  # {type, id, name}

    class Meta:
        table_name = "site_approved_user"
        primary_key = peewee.CompositeKey("site_id", "user_id")


# -- watchdog policies --


class WatchdogPolicy(BaseModel):
    """Signal-chain watchdog settings (protocol `Detectors`) assigned to sites, nodes or a node's channels, with baselines."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    description = peewee.TextField(default="")
    builtin = peewee.BooleanField(default=False)  # the built-in `default`: every node no other policy reaches
    detectors = JSONField(default=dict)  # hark_fleet.protocol.watchdog.Detectors
    assignments = JSONField(default=list)  # [{"site"} | {"node_id"} | {"node_id", "channel"}]
    baselines = JSONField(default=dict)  # {node_id: Baseline}
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow, index=True)
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "watchdog_policy"


class WatchdogCalibration(BaseModel):
    """One `calibrate` request: the node measures its channels for `duration_s` and the baseline lands in the policy."""

    id = peewee.CharField(primary_key=True, max_length=40)
    policy_id = peewee.CharField(max_length=40, index=True)
    node_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    duration_s = peewee.FloatField()
    state = peewee.CharField(max_length=16, index=True)  # requested | running | completed | failed
    requested_at = peewee.DateTimeField(index=True)
    sent_at = peewee.DateTimeField(null=True)
    completed_at = peewee.DateTimeField(null=True)
    requested_by = JSONField(default=dict)  # {type, id, name}
    baseline = JSONField(null=True)
    error = peewee.TextField(null=True)

    class Meta:
        table_name = "watchdog_calibration"


class WatchdogApplied(BaseModel):
    """The watchdog policy a node last said it runs (its `applied` report or heartbeat)."""

    node_id = peewee.CharField(primary_key=True, max_length=40)
    policy_id = peewee.CharField(max_length=40, null=True)  # None: the node's own built-in default
    version = peewee.IntegerField(null=True)
    ok = peewee.BooleanField(default=True)
    error = peewee.TextField(null=True)
    at = peewee.DateTimeField()

    class Meta:
        table_name = "watchdog_applied"


class HealthEventStep(BaseModel):
    """A step on a health event's timeline that its own row does not hold: a remediation rung, a calibration."""

    id = peewee.CharField(primary_key=True, max_length=40)
    event_id = peewee.CharField(max_length=40, index=True)
    node_id = peewee.CharField(max_length=40, null=True, index=True)
    at = peewee.DateTimeField(index=True)
    type = peewee.CharField(max_length=32)  # remediation | calibration
    detector = peewee.CharField(max_length=40, null=True)
    step = peewee.IntegerField(null=True)
    action = peewee.CharField(max_length=40, null=True)
    outcome = peewee.CharField(max_length=16, null=True)  # started | succeeded | failed | skipped
    reason = peewee.TextField(null=True)
    output = peewee.TextField(default="")

    class Meta:
        table_name = "health_event_step"


# -- channel-map plans --


class ChannelMapPlan(BaseModel):
    """A staged change of channel-map template (None: unassign) across many nodes, applied with each node's confirmation."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100)
    description = peewee.TextField(default="")
    template_id = peewee.CharField(max_length=40, null=True, index=True)
    target = JSONField(default=dict)  # {sites: [], tags: [], node_ids: []}
    state = peewee.CharField(max_length=20, default="staged", index=True)
    timeout_s = peewee.FloatField(default=120.0)  # how long each node has to confirm
    site = peewee.CharField(max_length=100, null=True, index=True)  # the one site all its nodes are in (scope), else None
    created_by = JSONField(default=dict)  # {type, id, name}
    created_by_id = peewee.CharField(max_length=40, null=True, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)
    applied_at = peewee.DateTimeField(null=True)
    rollback_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "channel_map_plan"


class ChannelMapPlanNode(BaseModel):
    """One node of a plan: the template it ran before and gets after, and whether it confirmed in time."""

    plan_id = peewee.CharField(max_length=40, index=True)
    node_id = peewee.CharField(max_length=40, index=True)
    node_name = peewee.CharField(max_length=200, default="")
    site = peewee.CharField(max_length=100, null=True)
    before_template_id = peewee.CharField(max_length=40, null=True)
    after_template_id = peewee.CharField(max_length=40, null=True)
    state = peewee.CharField(max_length=16, default="pending", index=True)  # pending sent confirmed failed timed_out rolled_back
    error = peewee.TextField(null=True)
    sent_at = peewee.DateTimeField(null=True)
    confirmed_at = peewee.DateTimeField(null=True)
    rolled_back_at = peewee.DateTimeField(null=True)  # its before template was given back
    rollback_confirmed_at = peewee.DateTimeField(null=True)  # ... and the node confirmed running it

    class Meta:
        table_name = "channel_map_plan_node"
        primary_key = peewee.CompositeKey("plan_id", "node_id")


# -- schedules --


class Schedule(BaseModel):
    """Recordings on a timetable: a recurrence (or a solar anchor) in an IANA zone, for a node list or a selector."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100)
    description = peewee.TextField(default="")
    enabled = peewee.BooleanField(default=True, index=True)
    target = JSONField(default=dict)  # {"node_ids": [...]} or {"selector": {"site": str|None, "tags": [...]}}
    site = peewee.CharField(max_length=100, null=True, index=True)  # the one site all its targets are in (scope), else None
    time_zone = peewee.CharField(max_length=64)
    start_local = peewee.CharField(max_length=19)  # local wall time "YYYY-MM-DDTHH:MM:SS" (DTSTART)
    duration_s = peewee.IntegerField()
    rrule = peewee.TextField(null=True)  # RFC 5545 RRULE body, e.g. "FREQ=WEEKLY;BYDAY=MO,TU"
    exdates = JSONField(default=list)  # local wall times excluded
    valid_from = peewee.DateTimeField(null=True)  # UTC
    valid_until = peewee.DateTimeField(null=True)
    solar = JSONField(null=True)  # {"event", "offset_minutes"}; coordinates from the site (or node)
    profile_id = peewee.CharField(max_length=40)
    channel_map_id = peewee.CharField(max_length=40, null=True)
    metadata = JSONField(default=dict)  # copied onto each recording
    tags = JSONField(default=list)
    on_conflict = peewee.CharField(max_length=8, default="reject")  # reject | skip | allow
    version = peewee.IntegerField(default=1)
    created_by = JSONField(default=dict)
    created_by_id = peewee.CharField(max_length=40, null=True, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "schedule"


class ScheduleOccurrence(BaseModel):
    """One occurrence that was dispatched, skipped or run now; unique per schedule and start instant."""

    id = peewee.CharField(primary_key=True, max_length=40)
    schedule_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    start_at = peewee.DateTimeField(index=True)  # UTC
    end_at = peewee.DateTimeField()
    local_start = peewee.CharField(max_length=40)  # ISO with offset, in the schedule's zone
    # planned skipped dispatched recording completed missed failed withdrawn
    state = peewee.CharField(max_length=16, index=True)
    reason = peewee.TextField(null=True)
    run_now = peewee.BooleanField(default=False)
    skipped_by = JSONField(null=True)  # {type, id, name}
    dispatched_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "schedule_occurrence"
        indexes = ((("schedule_id", "start_at"), True),)  # exactly once per schedule + occurrence time


class UploadProvider(BaseModel):
    """Where recordings go off-site: an S3-compatible bucket, an SFTP server or a mounted directory (issue 20).

    `config` holds what may be shown; `sealed_secrets` holds the write-only secrets sealed with the hub's
    secret key (`hub.secret_box`), and `secret_names` which of them are set (shown as set, never the value).
    """

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    kind = peewee.CharField(max_length=8, index=True)  # s3 | sftp | local
    enabled = peewee.BooleanField(default=True, index=True)
    description = peewee.TextField(default="")
    config = JSONField(default=dict)  # kind-specific, no secrets
    sealed_secrets = peewee.TextField(null=True)  # secret_box.seal(json of {name: value})
    secret_names = JSONField(default=list)  # which secrets are set
    rate_limit_bps = peewee.BigIntegerField(null=True)  # bytes/s across this provider's uploads; None: unlimited
    max_concurrency = peewee.IntegerField(default=2)
    last_test = JSONField(null=True)  # {"ok", "step", "message", "at"}
    version = peewee.IntegerField(default=1)
    created_by = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "upload_provider"


class UploadPolicy(BaseModel):
    """Which recordings go to which providers, under which key, when and by which route."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    enabled = peewee.BooleanField(default=True, index=True)
    description = peewee.TextField(default="")
    criteria = JSONField(default=dict)  # {"sites", "node_ids", "profile_ids", "tags", "statuses"}; empty list = any
    provider_ids = JSONField(default=list)
    key_template = peewee.CharField(max_length=500)
    key_time_zone = peewee.CharField(max_length=8, default="utc")  # utc | site
    when = peewee.CharField(max_length=12, default="completed")  # completed | window
    window_start = peewee.CharField(max_length=5, null=True)  # "HH:MM" in the site's zone
    window_end = peewee.CharField(max_length=5, null=True)
    bandwidth_cap_bps = peewee.BigIntegerField(null=True)
    route = peewee.CharField(max_length=8, default="via_hub")  # via_hub | direct
    priority = peewee.IntegerField(default=0)
    version = peewee.IntegerField(default=1)
    created_by = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "upload_policy"


class UploadItem(BaseModel):
    """One recording to one provider: pending -> queued -> uploading -> synced | failed (the upload queue)."""

    id = peewee.CharField(primary_key=True, max_length=40)
    recording_id = peewee.CharField(max_length=40, index=True)
    provider_id = peewee.CharField(max_length=40, index=True)
    policy_id = peewee.CharField(max_length=40, null=True, index=True)  # None: queued by hand
    site = peewee.CharField(max_length=100, null=True, index=True)
    node_id = peewee.CharField(max_length=40, index=True)
    route = peewee.CharField(max_length=8, default="via_hub")  # via_hub | direct
    state = peewee.CharField(max_length=12, index=True)  # pending queued uploading synced failed
    state_reason = peewee.TextField(null=True)  # why pending (outside the window, not on the hub yet, ...)
    attempts = peewee.IntegerField(default=0)
    bytes_total = peewee.BigIntegerField(null=True)
    bytes_sent = peewee.BigIntegerField(default=0)
    last_error = peewee.TextField(null=True)
    remote_key = peewee.CharField(max_length=1024, null=True)
    checksum_sha256 = peewee.CharField(max_length=64, null=True)  # verified at the provider
    verified_by = peewee.CharField(max_length=40, null=True)  # how: s3-checksum | read-back | remote-hash | ...
    next_attempt_at = peewee.DateTimeField(null=True, index=True)
    lease_epoch = peewee.IntegerField(default=0)  # bumped at each claim: a stale worker's writes are refused
    resume = JSONField(default=dict)  # the provider's resumable state (multipart upload id, parts done)
    started_at = peewee.DateTimeField(null=True)
    synced_at = peewee.DateTimeField(null=True, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "upload_item"
        indexes = ((("recording_id", "provider_id"), True),)  # one item per recording and provider


class RetentionPolicy(BaseModel):
    """How long each place keeps recordings, what must be confirmed first, and the free space to hold."""

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    enabled = peewee.BooleanField(default=True, index=True)
    description = peewee.TextField(default="")
    sites = JSONField(default=list)
    profile_ids = JSONField(default=list)
    tags = JSONField(default=list)
    keep_on_hub_days = peewee.FloatField(null=True)  # None: forever
    keep_on_node_until_hub_has_it = peewee.BooleanField(default=True)
    required_providers = JSONField(default=list)
    min_free_bytes_hub = peewee.BigIntegerField(default=0)
    min_free_bytes_node = peewee.BigIntegerField(default=0)
    priority = peewee.IntegerField(default=0)
    version = peewee.IntegerField(default=1)
    created_by = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "retention_policy"


class RetentionRun(BaseModel):
    """One retention pass at the hub: what it deleted and held, and any shortfall of free space."""

    id = peewee.CharField(primary_key=True, max_length=40)
    trigger = peewee.CharField(max_length=12)  # schedule | manual | emergency
    started_at = peewee.DateTimeField(default=utcnow, index=True)
    finished_at = peewee.DateTimeField(null=True)
    deleted = peewee.IntegerField(default=0)
    freed_bytes = peewee.BigIntegerField(default=0)
    held = peewee.IntegerField(default=0)
    shortfall_bytes = peewee.BigIntegerField(default=0)
    details = JSONField(default=dict)  # {"deleted": [[id, reason]...], "errors": [...]} (capped)
    actor = JSONField(default=dict)

    class Meta:
        table_name = "retention_run"


class NotificationChannel(BaseModel):
    """Where notifications go: a webhook, a chat (Slack, Discord, Teams, Google Chat, Matrix, Telegram), email or ntfy (issue 21).

    `config` holds what may be shown; `sealed_secrets` the write-only secrets (webhook URLs with tokens in them,
    access tokens, the SMTP password, the webhook signing secret) sealed with the hub's secret box, bound to
    `notification_channel:<id>`; `secret_names` which are set. `site` None: hub-wide (unlimited callers only).
    `subscription`: {"events", "health_kinds", "sites", "min_severity", "quiet_hours"} (see hub.notify.subscriptions).
    """

    id = peewee.CharField(primary_key=True, max_length=40)
    name = peewee.CharField(max_length=100, unique=True)
    kind = peewee.CharField(max_length=12, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    enabled = peewee.BooleanField(default=True, index=True)
    description = peewee.TextField(default="")
    config = JSONField(default=dict)
    sealed_secrets = peewee.TextField(null=True)
    secret_names = JSONField(default=list)
    subscription = JSONField(default=dict)
    last_test = JSONField(null=True)  # {"ok", "status_code", "latency_ms", "message", "at"}
    last_delivery_at = peewee.DateTimeField(null=True)
    version = peewee.IntegerField(default=1)
    created_by = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notification_channel"


class NotificationNotice(BaseModel):
    """One fleet event worth telling, taken in from the event bus: the durable intake before routing to channels."""

    id = peewee.CharField(primary_key=True, max_length=40)
    event_type = peewee.CharField(max_length=100, index=True)  # health.opened, node.offline, ...
    key = peewee.CharField(max_length=200, index=True)  # the condition: "health:hev_1", "node:nod_1"
    site = peewee.CharField(max_length=100, null=True, index=True)
    severity = peewee.CharField(max_length=10)  # info | warning | critical
    opened = peewee.BooleanField(default=True)  # False: a resolution
    health_kind = peewee.CharField(max_length=100, null=True)  # a health event's kind (audio.silence...)
    at = peewee.DateTimeField(index=True)  # when the condition began (openings) or ended (resolutions)
    summary = peewee.TextField()
    data = JSONField(default=dict)  # {"node_id", "node_name", "channel", "url", "since", ...}
    routed = peewee.BooleanField(default=False, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "notification_notice"


class Notification(BaseModel):
    """One message to one channel (the outbox): queued -> sending -> delivered | retrying -> ... | failed."""

    id = peewee.CharField(primary_key=True, max_length=40)
    channel_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    kind = peewee.CharField(max_length=100, index=True)  # the event kind
    severity = peewee.CharField(max_length=10, index=True)
    opened = peewee.BooleanField(default=True)
    thread_key = peewee.CharField(max_length=200, index=True)
    title = peewee.TextField()
    item_count = peewee.IntegerField(default=1)
    message = JSONField(default=dict)  # hub.notify.message.Message.to_dict()
    notice_ids = JSONField(default=list)
    state = peewee.CharField(max_length=10, index=True)  # queued sending retrying delivered failed
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(null=True, index=True)
    first_attempt_at = peewee.DateTimeField(null=True)
    delivered_at = peewee.DateTimeField(null=True)
    last_error = peewee.TextField(null=True)
    provider_ref = peewee.CharField(max_length=200, null=True)  # the provider's message id, for threading replies
    deferred_reason = peewee.CharField(max_length=100, null=True)  # e.g. "quiet hours until 07:00 Europe/London"
    lease_epoch = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notification"


class NotificationDelivery(BaseModel):
    """One attempt to send a notification (or a test) to a channel, with what the provider answered."""

    id = peewee.CharField(primary_key=True, max_length=40)
    channel_id = peewee.CharField(max_length=40, null=True, index=True)  # None: a test of an unsaved configuration
    notification_id = peewee.CharField(max_length=40, null=True, index=True)  # None: a test
    attempt = peewee.IntegerField(default=1)
    test = peewee.BooleanField(default=False)
    at = peewee.DateTimeField(default=utcnow, index=True)
    outcome = peewee.CharField(max_length=10, index=True)  # delivered | retry | failed
    latency_ms = peewee.FloatField(null=True)
    response_code = peewee.IntegerField(null=True)
    response_message = peewee.TextField(default="")  # secrets redacted, capped
    site = peewee.CharField(max_length=100, null=True, index=True)

    class Meta:
        table_name = "notification_delivery"


class NotificationGate(BaseModel):
    """A channel's storm-control state (hub.notify.storm.FlapGate.snapshot), kept across restarts."""

    channel_id = peewee.CharField(primary_key=True, max_length=40)
    state = JSONField(default=dict)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notification_gate"


class ListenSession(BaseModel):
    """One listener of a node's live audio (issue 23): `active -> disconnected -> terminated`.

    Sessions of one node asking for the same format share one node stream (`stream_id`): ten
    listeners cost the node one encoder. `bytes_sent` is what the hub wrote to this listener.
    """

    id = peewee.CharField(primary_key=True, max_length=40)
    node_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    user_id = peewee.CharField(max_length=40, null=True, index=True)  # the user (or the key's owner); None: a service key
    actor = JSONField(default=dict)  # {type, id, name} of who opened it
    client_address = peewee.CharField(max_length=64, null=True)
    user_agent = peewee.CharField(max_length=300, null=True)
    codec = peewee.CharField(max_length=8)  # opus | pcm16
    bitrate = peewee.IntegerField(null=True)  # opus only, bits per second
    sample_rate = peewee.IntegerField()
    channels = JSONField(default=list)  # logical channel indices (0-based) of the node's channel map
    programme = peewee.CharField(max_length=100, null=True)  # the mapped programme asked for, if any
    stream_id = peewee.CharField(max_length=40, index=True)  # the node stream it listens to
    hub_instance = peewee.CharField(max_length=80, null=True, index=True)  # the hub instance its listener is on (issue 24)
    state = peewee.CharField(max_length=16, index=True)  # active | disconnected | terminated
    started_at = peewee.DateTimeField(default=utcnow, index=True)
    connected_at = peewee.DateTimeField(null=True)  # the client's stream last opened
    disconnected_at = peewee.DateTimeField(null=True)  # the client's stream last went away
    ended_at = peewee.DateTimeField(null=True)
    # client_gone | disconnected | ended | node_offline | node_stopped | hub_stopped
    end_reason = peewee.CharField(max_length=32, null=True)
    ended_by = JSONField(null=True)  # {type, id, name} of who ended it, with `reason` when given
    bytes_sent = peewee.BigIntegerField(default=0)
    frames_sent = peewee.BigIntegerField(default=0)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "listen_session"


class ShareLink(BaseModel):
    """A link that plays (and may download) one recording without an account (issue 23).

    Only the SHA-256 of the token is kept (`token_sha256`); the token is shown once. The optional
    password is an argon2 hash. A link is usable while not revoked, not expired and not used up.
    """

    id = peewee.CharField(primary_key=True, max_length=40)
    recording_id = peewee.CharField(max_length=40, index=True)
    site = peewee.CharField(max_length=100, null=True, index=True)
    token_sha256 = peewee.CharField(max_length=64, unique=True)
    token_prefix = peewee.CharField(max_length=12)  # the token's first characters, to tell links apart
    label = peewee.CharField(max_length=200, default="")
    password_hash = peewee.TextField(null=True)
    expires_at = peewee.DateTimeField(index=True)
    max_uses = peewee.IntegerField(null=True)
    uses = peewee.IntegerField(default=0)
    allow_download = peewee.BooleanField(default=False)
    created_by = JSONField(default=dict)  # {type, id, name}
    created_by_id = peewee.CharField(max_length=40, null=True, index=True)
    created_at = peewee.DateTimeField(default=utcnow, index=True)
    revoked_at = peewee.DateTimeField(null=True)
    revoked_by = JSONField(null=True)
    last_used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "share_link"


class HubInstance(BaseModel):
    """A running (or stopped) hub process of this deployment (issue 24); `seen_at` is renewed every few seconds."""

    id = peewee.CharField(primary_key=True, max_length=80)
    host = peewee.CharField(max_length=255)
    pid = peewee.IntegerField()
    url = peewee.CharField(max_length=500, default="")
    version = peewee.CharField(max_length=40, default="")
    started_at = peewee.DateTimeField(default=utcnow)
    seen_at = peewee.DateTimeField(default=utcnow, index=True)
    stopped_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "hub_instance"


class HubLease(BaseModel):
    """Work that runs on one instance at a time (issue 24): who holds it, until when, and its fencing token.

    `fence` grows by one at every change of holder; work done under the lease checks it in its transaction.
    """

    name = peewee.CharField(primary_key=True, max_length=40)
    holder = peewee.CharField(max_length=80, null=True)
    fence = peewee.BigIntegerField(default=0)
    acquired_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "hub_lease"


class EventLog(BaseModel):
    """Fleet events of every hub instance, in commit order (issue 24, PostgreSQL): what SSE clients resume from."""

    id = peewee.BigAutoField()
    type = peewee.CharField(max_length=80)
    site = peewee.CharField(max_length=100, null=True)
    data = peewee.TextField()
    created_at = peewee.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "event_log"
