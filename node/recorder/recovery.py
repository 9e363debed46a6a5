"""Recovery at start: every recording the node died in the middle of is repaired, marked interrupted and finalized.

A manifest still `recording` means the process or the machine died mid-capture. Its working WAV
is cut to whole frames and its header rewritten from the file size; the audio after the last ledger
point is checksummed from the file as extra segments (`recovered`); the interruption becomes a gap
from the last frame on disk to the restart; then it is finalized like any other recording.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from hark_fleet.node.clock import parse_utc, utc_iso
from hark_fleet.node.recorder.const import (
    FINALIZED,
    GAP_INTERRUPTION,
    MANIFEST_FILE,
    RECORDING,
    RESERVE_FILE,
    STOP_INTERRUPTED,
    UPLOADED,
)
from hark_fleet.node.recorder.errors import CorruptRecording
from hark_fleet.node.recorder.finalize import RecordingResult, finalize, mark_failed, release_reserve, result_of
from hark_fleet.node.recorder.ledger import Gap, Ledger
from hark_fleet.node.recorder.manifest import Manifest
from hark_fleet.node.recorder.wav import WavLayout, repair

log = logging.getLogger(__name__)


def recover_cache(root: Path, now: float | None = None) -> list[RecordingResult]:
    """Bring every recording under `root` to rest; the finalized and failed ones (uploaded ones are left out)."""
    results: list[RecordingResult] = []
    if not root.is_dir():
        return results
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (directory / MANIFEST_FILE).exists():
            _remove_if_abandoned(directory)
            continue
        try:
            result = recover_recording(directory, now)
        except CorruptRecording as err:
            log.error("cannot recover %s: %s", directory.name, err)
            continue
        if result is not None:
            results.append(result)
    return results


def _remove_if_abandoned(directory: Path) -> None:
    """A directory holding nothing but the space reserve: the node died before the manifest was written."""
    if {p.name for p in directory.iterdir()} <= {RESERVE_FILE}:
        log.info("removing %s: the recording never started", directory.name)
        shutil.rmtree(directory)


def recover_recording(directory: Path, now: float | None = None) -> RecordingResult | None:
    """Recover one recording directory; None when it is already uploaded. CorruptRecording when its manifest is unreadable."""
    manifest = Manifest.load(directory)
    if manifest.state == UPLOADED:
        return None
    ledger = _load_ledger(directory)
    if manifest.state == RECORDING:
        log.warning("recording %s was interrupted: recovering it", manifest.recording_id)
        ledger = _recover_interrupted(directory, manifest, ledger, time.time() if now is None else now)
    elif manifest.state == FINALIZED:
        release_reserve(directory)
        working = directory / manifest.working_file
        if working.exists() and (directory / manifest.final_file).exists():
            working.unlink()  # died after the FLAC was recorded in the manifest, before the WAV was removed
    return result_of(directory, manifest, ledger)


def _load_ledger(directory: Path) -> Ledger | None:
    try:
        return Ledger.load(directory)
    except (CorruptRecording, TypeError) as err:
        log.warning("%s: no usable ledger (%s)", directory.name, err)
        return None


def _recover_interrupted(directory: Path, manifest: Manifest, ledger: Ledger | None, now: float) -> Ledger | None:
    working = directory / manifest.working_file
    if not working.exists():
        if (directory / manifest.final_file).exists() and ledger is not None:
            finalize(directory, manifest, ledger)  # died between the final file and the manifest: finish the job
        else:
            mark_failed(directory, manifest, ledger, "the node stopped before any audio was written")
        return ledger
    try:
        layout = repair(working)
    except (CorruptRecording, OSError) as err:
        mark_failed(directory, manifest, ledger, f"the working file cannot be repaired: {err}")
        return ledger
    last_write = working.stat().st_mtime
    if ledger is None:
        ledger = _ledger_from(manifest, layout)
    frames = layout.data_bytes // layout.block_align
    _checksum_tail(working, layout, ledger, frames)
    if ledger.updated_at is not None:  # estimated from the last ledger point: the frames after it came in real time
        last_frame_at = parse_utc(ledger.updated_at) + (frames - ledger.frames_written) / layout.rate
    else:
        last_frame_at = last_write
    wall_s = max(0.0, now - last_frame_at)
    lost = int(round(wall_s * layout.rate))
    if ledger.target_frames is not None:
        lost = max(0, min(lost, ledger.preroll_frames + ledger.target_frames - frames))
    ledger.gaps.append(Gap(GAP_INTERRUPTION, frames, lost, round(wall_s, 3), utc_iso(last_frame_at), utc_iso(now)))
    ledger.frames_written = frames
    ledger.interrupted = True
    ledger.stop_reason = STOP_INTERRUPTED
    ledger.ended_at = utc_iso(last_frame_at)
    ledger.notes.append(
        "recovered after an interruption: monotonic_span_s, frames_expected and clipped_samples are as of the last ledger point"
    )
    manifest.interrupted = True
    if frames == 0:
        mark_failed(directory, manifest, ledger, "interrupted before any audio was written", remove_working=True)
    else:
        finalize(directory, manifest, ledger)
    return ledger


def _ledger_from(manifest: Manifest, layout: WavLayout) -> Ledger:
    """A ledger rebuilt from the manifest and the file when the node died before writing the first one."""
    segment_s = float(manifest.profile.get("segment_s") or 10.0)
    ledger = Ledger(
        recording_id=manifest.recording_id,
        sample_rate=layout.rate,
        channels=layout.channels,
        bit_depth=layout.bit_depth,
        format=manifest.format,
        segment_frames=max(1, int(round(segment_s * layout.rate))),
        clipped_samples=[0] * layout.channels,
    )
    ledger.notes.append("the ledger was lost: rebuilt from the manifest and the file")
    return ledger


def _checksum_tail(working: Path, layout: WavLayout, ledger: Ledger, frames: int) -> None:
    """Checksum, from the file, the frames written after the last ledger point, as segments marked `recovered`."""
    done = sum(int(segment["frames"]) for segment in ledger.segments)
    if done > frames:  # the file is shorter than the ledger says (a power cut before data reached the disk)
        ledger.notes.append(f"the file holds {frames} frames, the ledger had checksummed {done}")
        kept = []
        for segment in ledger.segments:
            if segment["start_frame"] + segment["frames"] <= frames:
                kept.append(segment)
        ledger.segments = kept
        done = sum(int(segment["frames"]) for segment in kept)
    fd = os.open(working, os.O_RDONLY)
    try:
        while done < frames:
            count = min(ledger.segment_frames, frames - done)
            digest = hashlib.sha256()
            offset = layout.data_offset + done * layout.block_align
            remaining = count * layout.block_align
            while remaining:
                chunk = os.pread(fd, min(remaining, 1 << 20), offset)
                if not chunk:
                    raise CorruptRecording(f"{working.name} ended early while checksumming")
                digest.update(chunk)
                offset += len(chunk)
                remaining -= len(chunk)
            segment = {"index": len(ledger.segments), "start_frame": done, "frames": count, "sha256": digest.hexdigest()}
            ledger.segments.append({**segment, "recovered": True})
            done += count
    finally:
        os.close(fd)
