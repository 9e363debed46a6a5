"""Names and defaults of the recorder."""

from __future__ import annotations

MANIFEST_FILE = "manifest.json"
LEDGER_FILE = "ledger.json"
WORKING_SUFFIX = ".rec.wav"  # the WAV being captured; renamed or transcoded at finalize
RESERVE_FILE = "reserve"  # preallocated, deleted on a full disk so the ledger and manifest can still be written
RESERVE_BYTES = 256 * 1024

# Manifest states
RECORDING = "recording"
FINALIZED = "finalized"
UPLOADED = "uploaded"
FAILED = "failed"
STATES = (RECORDING, FINALIZED, UPLOADED, FAILED)

# Why a recording stopped (the ledger's stop_reason)
STOP_DURATION = "duration"  # the requested duration (or the profile's maximum) was reached
STOP_REQUESTED = "stopped"  # stop() was called (hub stop, job cancelled, agent shutdown)
STOP_DISK_LOW = "disk_low"  # the cache policy's hard floor: the agent stopped it before the disk filled
STOP_DISK_FULL = "disk_full"  # a write failed for lack of space
STOP_ERROR = "error"
STOP_INTERRUPTED = "interrupted"  # the node died mid-capture; found and finalized by recovery

# Gap kinds
GAP_OVERRUN = "overrun"  # the recorder fell more than the ring behind
GAP_STALL = "stall"  # no audio arrived for a while (device lost or stalled); length estimated from the clock
GAP_INTERRUPTION = "interruption"  # the node died; from the last frame on disk to the restart

FORMATS = ("wav", "flac")
BIT_DEPTHS = (16, 24, 32)
FLAC_BIT_DEPTHS = (16, 24)  # libsndfile writes FLAC at 8/16/24 bit only
FLAC_MAX_CHANNELS = 8

FLUSH_INTERVAL_S = 1.0  # header sizes rewritten and data synced at least this often
POLL_S = 0.02  # how often the recording thread looks for new frames when the ring is empty
MAX_READ_S = 1.0  # at most this much audio converted and written per step
STALL_S = 1.0  # no new frames for longer than this: a stall gap is recorded when they come back
CLIP_LEVEL = 0.999
TRANSCODE_BLOCK_FRAMES = 65_536

# Cache policy defaults (the node's config: {"min_free_pct", "keep_after_upload_s", "max_bytes"})
DEFAULT_MIN_FREE_PCT = 10.0
DEFAULT_KEEP_AFTER_UPLOAD_S = 7 * 24 * 3600.0
HARD_FLOOR_PCT = 1.0  # running recordings stop below min(this share of the disk, HARD_FLOOR_BYTES) free
HARD_FLOOR_BYTES = 200 * 1024 * 1024
