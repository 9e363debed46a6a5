"""The node's crash-safe recorder: a WAV that stays valid as it grows, an integrity ledger, recovery and the cache.

How the agent uses it::

    cache = CacheDirectory(data_dir / "recordings")
    for result in recover_cache(cache.root):         # at start, before claiming jobs (blocking: an executor)
        ...                                          # finalized: upload result.path; failed: report it
    decision = cache.apply(CachePolicy.from_config(config["cache"]))
    if decision.accept_jobs:
        profile = RecordingProfile.from_dict(claim["recording"]["profile"])
        recorder = Recorder(rid, cache.path_for(rid), rate, channels, profile, job_id=jid,
                            duration_s=claim["recording"]["requested_duration_s"],
                            clock_offset_ms=offset, time_quality=quality)
        recorder.start(audio_path.ring)              # reader opened now, pre-roll included; own thread
                                                     # (start_at=epoch s: opened at the ring frame of that instant)
        recorder.progress()                          # frames, seconds, bytes: for job heartbeats
        recorder.stop()                              # hub stop / cancel; stop("disk_low") when the policy says so
        recorder.done.wait()                         # then recorder.result: state, path, sha256, ledger
        cache.mark_uploaded(rid)                     # once the hub confirmed the upload

Threads: `start` runs the recording in its own thread; `stop`, `progress` and `done` are safe from
any thread; recovery, finalizing and the cache touch the disk and block (run them in an executor).
"""

from hark_fleet.node.recorder.cache import CacheDecision, CacheDirectory, CachedRecording, CachePolicy, DiskSpace, plan_cache
from hark_fleet.node.recorder.errors import (
    CachePolicyError,
    CorruptRecording,
    DiskFull,
    RecorderError,
    TranscodeFailed,
    UnsupportedProfile,
    WriteFailed,
)
from hark_fleet.node.recorder.finalize import RecordingResult
from hark_fleet.node.recorder.ledger import Gap, Ledger
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.node.recorder.profile import RecordingProfile
from hark_fleet.node.recorder.recorder import Progress, Recorder
from hark_fleet.node.recorder.recovery import recover_cache, recover_recording

__all__ = [
    "CacheDecision",
    "CacheDirectory",
    "CachePolicy",
    "CachePolicyError",
    "CachedRecording",
    "CorruptRecording",
    "DiskFull",
    "DiskSpace",
    "Gap",
    "Ledger",
    "Manifest",
    "Progress",
    "Recorder",
    "RecorderError",
    "RecordingProfile",
    "RecordingResult",
    "TranscodeFailed",
    "UnsupportedProfile",
    "WriteFailed",
    "plan_cache",
    "recover_cache",
    "recover_recording",
]
