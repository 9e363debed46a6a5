"""The waveform cache beside a recording is bounded: a reader asking for every bucket count cannot fill the disk."""

from __future__ import annotations

from hark_fleet.hub.services.recordings_library import WAVEFORM_CACHE_KEEP

from tests.harness import HubProcess
from tests.hub.api.test_recording_upload import completed_recording, stored_path

RECORDINGS = "/api/v1/recordings"


def test_only_the_latest_few_waveform_sizes_are_cached_per_recording(hub: HubProcess) -> None:
    take, _ = completed_recording(hub)
    path = stored_path(hub, take)
    with hub.admin() as admin:
        for buckets in range(10, 10 + 3 * WAVEFORM_CACHE_KEEP):
            answer = admin.get(f"{RECORDINGS}/{take.recording_id}/waveform", params={"buckets": buckets})
            assert answer.status_code == 200 and answer.json()["data"]["buckets"] == buckets
    cached = sorted(p.name for p in path.parent.glob(f"{path.name}.waveform-*"))
    assert len(cached) == WAVEFORM_CACHE_KEEP, cached
    assert f"{path.name}.waveform-{10 + 3 * WAVEFORM_CACHE_KEEP - 1}.json" in cached  # the newest stays
