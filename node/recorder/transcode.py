"""WAV to FLAC at finalize, streamed in blocks (never the whole file in memory), lossless at 16 and 24 bit."""

from __future__ import annotations

import os
from pathlib import Path

import soundfile as sf
from hark_fleet.node.recorder.const import TRANSCODE_BLOCK_FRAMES
from hark_fleet.node.recorder.errors import TranscodeFailed
from hark_fleet.node.recorder.files import fsync_dir

SUBTYPES = {16: "PCM_16", 24: "PCM_24"}


def transcode_to_flac(wav: Path, flac: Path, bit_depth: int, block_frames: int = TRANSCODE_BLOCK_FRAMES) -> int:
    """Write `flac` from `wav` (through a temp file, synced, then renamed); the frames written. TranscodeFailed on error."""
    if bit_depth not in SUBTYPES:
        raise TranscodeFailed(f"FLAC cannot hold {bit_depth}-bit samples here")
    temp = flac.with_name(f".{flac.name}.part")
    dtype = "int16" if bit_depth == 16 else "int32"  # 24-bit as left-justified int32: libsndfile shifts it back exactly
    frames = 0
    try:
        with sf.SoundFile(wav) as source:
            expected = source.frames
            with sf.SoundFile(temp, "w", source.samplerate, source.channels, SUBTYPES[bit_depth], format="FLAC") as target:
                for block in source.blocks(block_frames, dtype=dtype, always_2d=True):
                    target.write(block)
                    frames += block.shape[0]
        if frames != expected:
            raise TranscodeFailed(f"transcoded {frames} of {expected} frames")
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, flac)
        fsync_dir(flac.parent)
    except TranscodeFailed:
        temp.unlink(missing_ok=True)
        raise
    except (RuntimeError, OSError, AssertionError, ValueError) as err:  # soundfile errors are RuntimeErrors
        temp.unlink(missing_ok=True)
        raise TranscodeFailed(f"{wav.name} -> {flac.name}: {err}") from err
    return frames
