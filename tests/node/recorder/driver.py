"""The subprocess of the kill -9 test: records a supervised synthetic sine until it is killed.

`python -m tests.node.recorder.driver CACHE_DIR FORMAT` prints one JSON line with the ring frame the
file starts at, then every 50 ms a line with the frames the recorder has handed to the file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hark_fleet.audio.capture import CaptureSupervisor, ring_for_source
from hark_fleet.audio.source import parse_audio_source
from hark_fleet.node.recorder import Recorder, RecordingProfile

SOURCE = "synthetic:sine?freq=440&dbfs=-6&channels=2&rate=48000"
PREROLL_S = 0.25


def main(cache: Path, fmt: str) -> None:
    source = parse_audio_source(SOURCE)
    ring = ring_for_source(source, seconds=10)
    supervisor = CaptureSupervisor(source, ring, lambda condition: None)
    supervisor.start()
    while ring.frames_written < source.rate // 2:
        time.sleep(0.01)
    profile = RecordingProfile(format=fmt, sample_rate=source.rate, bit_depth=16, segment_s=1.0, preroll_s=PREROLL_S)
    recorder = Recorder("rec-1", cache / "rec-1", source.rate, source.channels, profile, job_id="job-1", time_quality="ntp")
    recorder.start(ring)
    print(json.dumps({"ring_start": recorder.ring_start, "preroll_frames": recorder.preroll_frames}), flush=True)
    while True:
        print(json.dumps({"frames": recorder.progress().frames}), flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
