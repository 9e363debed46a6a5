"""Live meters at the hub: the latest frame, the per-second history and the SSE stream, scoped by site."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx

from tests.harness import HubProcess, wait_for

PASSWORD = "meters-test-password-1"


def enroll(hub: HubProcess, site: str) -> tuple[str, str]:
    hub.ensure_site(site)  # a node's site must exist
    with hub.admin() as admin:
        response = admin.post("/api/v1/nodes/enroll", json={"name": f"m-{uuid.uuid4().hex[:6]}", "site": site})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["node"]["id"], data["credential"]


def frame(seq: int, peak: float = -6.0, rms: float = -9.01, **extra: Any) -> dict[str, Any]:
    return {
        "ts": "2026-12-01T12:00:00.000Z",
        "seq": seq,
        "interval_ms": 100,
        "sample_rate": 48000,
        "channels": [
            {
                "index": 0,
                "name": "L",
                "peak_dbfs": peak,
                "rms_dbfs": rms,
                "true_peak_dbtp": peak + 0.2,
                "clip": 0,
                "dc": 0.0,
                "silent": False,
                "spl": {"laeq_db": 61.2, "lamax_db": 70.4, "la90_db": 48.0},
            },
            {"index": 1, "name": "R", "peak_dbfs": None, "rms_dbfs": None, "silent": True},
        ],
        "loudness": {"momentary_lufs": -20.1, "short_term_lufs": -21.0, "integrated_lufs": -22.3, "lra_lu": 4.1},
        "programmes": [{"name": "main", "channels": [0, 1], "momentary_lufs": -20.1}],
        **extra,
    }


def post_frame(hub: HubProcess, node_id: str, credential: str, body: Any) -> httpx.Response:
    with hub.client(credential) as node:
        return node.post(f"/api/v1/nodes/{node_id}/meter-frame", json=body)


def test_the_latest_frame_keeps_every_meter_field(hub: HubProcess) -> None:
    node_id, credential = enroll(hub, "north")
    assert post_frame(hub, node_id, credential, frame(1)).status_code == 204
    with hub.admin() as admin:
        latest = admin.get(f"/api/v1/nodes/{node_id}/meters").json()["data"]
    left, right = latest["channels"]
    assert left["true_peak_dbtp"] == -5.8 and left["spl"] == {"laeq_db": 61.2, "lamax_db": 70.4, "la90_db": 48.0}
    assert right["peak_dbfs"] is None and right["silent"] is True and right["spl"] is None
    assert latest["loudness"]["integrated_lufs"] == -22.3 and latest["programmes"][0]["channels"] == [0, 1]


def test_bad_frames_are_400_and_keep_the_last_good_one(hub: HubProcess) -> None:
    node_id, credential = enroll(hub, "north")
    assert post_frame(hub, node_id, credential, frame(1)).status_code == 204
    too_many = frame(2, channels=[{"index": i} for i in range(65)])
    for bad in (too_many, frame(3, channels="loud"), {**frame(4), "seq": "x"}, frame(5, loudness={"momentary_lufs": "high"})):
        response = post_frame(hub, node_id, credential, bad)
        assert response.status_code == 400, response.text
    with hub.admin() as admin:
        assert admin.get(f"/api/v1/nodes/{node_id}/meters").json()["data"]["seq"] == 1


def test_history_keeps_one_point_per_second_with_the_peak_and_the_mean_power(hub: HubProcess) -> None:
    node_id, credential = enroll(hub, "north")
    # two frames in one second: peak -6 and -12, RMS -10 and -20 dBFS -> mean power -12.6 dBFS
    start = time.time()
    time.sleep(1.0 - (start % 1.0) + 0.05)
    assert post_frame(hub, node_id, credential, frame(1, peak=-6.0, rms=-10.0)).status_code == 204
    assert post_frame(hub, node_id, credential, frame(2, peak=-12.0, rms=-20.0)).status_code == 204
    time.sleep(1.0)
    assert post_frame(hub, node_id, credential, frame(3, peak=-30.0, rms=-33.0)).status_code == 204
    with hub.admin() as admin:
        history = admin.get(f"/api/v1/nodes/{node_id}/meters/history", params={"range": "5m"}).json()["data"]
        assert admin.get(f"/api/v1/nodes/{node_id}/meters/history", params={"range": "2d"}).status_code == 400
    first = history["points"][0]["channels"][0]
    assert history["interval_s"] == 1 and first["peak_dbfs"] == -6.0 and first["rms_dbfs"] == -12.6, history


class Stream:
    """An SSE client in a thread, collecting `event: meter` payloads."""

    def __init__(self, hub: HubProcess, token: str, params: list[tuple[str, str]]) -> None:
        self.frames: list[dict[str, Any]] = []
        self.ticks: list[dict[str, Any]] = []  # `event: meters` of a coalesced stream
        self.status: int | None = None
        self._client = httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self._thread = threading.Thread(target=self._read, args=(params,), daemon=True)
        self._thread.start()

    def _read(self, params: list[tuple[str, str]]) -> None:
        try:
            with self._client.stream("GET", "/api/v1/meter-events", params=params) as response:
                self.status = response.status_code
                event = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "meter":
                        self.frames.append(json.loads(line[6:]))
                    elif line.startswith("data: ") and event == "meters":
                        self.ticks.append(json.loads(line[6:]))
        except (httpx.HTTPError, RuntimeError):
            pass

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


def user_token(hub: HubProcess, sites: list[str] | None) -> str:
    username = f"m-{uuid.uuid4().hex[:8]}"
    body = {"username": username, "password": PASSWORD, "roles": ["viewer"], "sites": sites}
    for site in sites or []:
        hub.ensure_site(site)  # a grant's site must exist
    with hub.admin() as admin:
        assert admin.post("/api/v1/auth/users", json=body).status_code == 201
    return hub.login(username, PASSWORD)


def test_the_stream_carries_each_frame_with_its_node_to_those_who_may_see_it(hub: HubProcess) -> None:
    north, north_credential = enroll(hub, "north")
    south, south_credential = enroll(hub, "south")
    everyone = Stream(hub, hub.login(), [])
    one_node = Stream(hub, hub.login(), [("node_id", south)])
    north_only = Stream(hub, user_token(hub, ["north"]), [])
    try:
        wait_for(lambda: None not in (everyone.status, one_node.status, north_only.status), 10, "the streams to open")
        time.sleep(0.3)  # the subscriptions are registered once the headers are out
        for seq in range(1, 4):
            assert post_frame(hub, north, north_credential, frame(seq)).status_code == 204
            assert post_frame(hub, south, south_credential, frame(seq)).status_code == 204
        wait_for(lambda: len([f for f in everyone.frames if f["node_id"] in (north, south)]) >= 6, 10, "every frame")
        wait_for(lambda: len(one_node.frames) >= 3 and len(north_only.frames) >= 3, 10, "the filtered frames")
        time.sleep(0.3)
    finally:
        for stream in (everyone, one_node, north_only):
            stream.close()
    assert {f["node_id"] for f in one_node.frames} == {south}
    assert {f["node_id"] for f in north_only.frames} == {north}
    assert [f["seq"] for f in one_node.frames] == [1, 2, 3]
    assert one_node.frames[0]["channels"][0]["true_peak_dbtp"] == -5.8


def test_a_stream_for_a_node_outside_the_callers_sites_is_404(hub: HubProcess) -> None:
    south, _ = enroll(hub, "south")
    with hub.client(user_token(hub, ["north"])) as client:
        assert client.get("/api/v1/meter-events", params={"node_id": south}).status_code == 404
        assert client.get(f"/api/v1/nodes/{south}/meters/history").status_code == 404


def test_a_stream_with_a_max_rate_carries_at_most_that_many_frames_per_second_of_each_node(hub: HubProcess) -> None:
    node_id, credential = enroll(hub, "north")
    with hub.admin() as admin:
        for bad in ("0", "11", "2.5", "fast"):
            refused = admin.get("/api/v1/meter-events", params={"max_rate": bad})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "invalid_request" and set(error["fields"]) == {"max_rate"}, error
    token = hub.login()
    every = Stream(hub, token, [("node_id", node_id)])
    thinned = Stream(hub, token, [("node_id", node_id), ("max_rate", "2")])
    try:
        wait_for(lambda: None not in (every.status, thinned.status), 10, "the streams to open")
        time.sleep(0.3)  # the subscriptions are registered once the headers are out
        with hub.client(credential) as node:
            started = time.monotonic()
            for seq in range(1, 31):  # 3 s at 10 Hz
                time.sleep(max(0.0, started + seq / 10 - time.monotonic()))
                assert node.post(f"/api/v1/nodes/{node_id}/meter-frame", json=frame(seq)).status_code == 204
        wait_for(lambda: len(every.frames) >= 30, 10, "every frame on the stream without a limit")
        time.sleep(0.3)
    finally:
        every.close()
        thinned.close()
    seqs = [f["seq"] for f in thinned.frames]
    assert 5 <= len(seqs) <= 8, seqs  # 2 per second over 3 s, give or take the first and the HTTP pace
    assert seqs[0] == 1 and seqs == sorted(seqs), seqs


def test_a_coalesce_that_is_not_a_duration_from_50ms_to_5s_or_comes_with_a_max_rate_is_400(hub: HubProcess) -> None:
    with hub.admin() as admin:
        for bad in (
            "",
            "100",
            "40ms",
            "6s",
            "5.5s",
            "0.0005s",
            "fast",
            "100 ms",
            "-1s",
            "1e2ms",
            " 100ms",
            "\u0661\u0660\u0660ms",
        ):
            refused = admin.get("/api/v1/meter-events", params={"coalesce": bad})
            assert refused.status_code == 400, (bad, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "invalid_request" and set(error["fields"]) == {"coalesce"}, error
        both = admin.get("/api/v1/meter-events", params={"coalesce": "100ms", "max_rate": "2"})
        assert both.status_code == 400 and set(both.json()["error"]["fields"]) == {"max_rate"}, both.text
        for good in ("50ms", "0.5s", "5s"):  # the stream opens (its headers only: HEAD)
            assert admin.head("/api/v1/meter-events", params={"coalesce": good}).status_code == 200, good


def test_a_coalesced_stream_starts_with_the_latest_frames_then_carries_each_tick_s_changes_to_those_who_may_see_them(
    hub: HubProcess,
) -> None:
    north, north_credential = enroll(hub, "north")
    south, south_credential = enroll(hub, "south")
    ours = {north, south}
    assert post_frame(hub, north, north_credential, frame(1)).status_code == 204
    assert post_frame(hub, south, south_credential, frame(1)).status_code == 204
    everyone = Stream(hub, hub.login(), [("coalesce", "100ms")])
    north_only = Stream(hub, user_token(hub, ["north"]), [("coalesce", "0.2s")])
    one_node = Stream(hub, hub.login(), [("coalesce", "100ms"), ("node_id", south)])
    streams = (everyone, north_only, one_node)
    try:
        wait_for(lambda: all(s.status is not None and s.ticks for s in streams), 10, "the streams' snapshots")
        for seq in range(2, 5):
            assert post_frame(hub, north, north_credential, frame(seq)).status_code == 204
            assert post_frame(hub, south, south_credential, frame(seq)).status_code == 204

        def latest(stream: Stream) -> dict[str, int]:
            return {node_id: f["seq"] for t in stream.ticks for node_id, f in t["frames"].items() if node_id in ours}

        wait_for(lambda: latest(everyone) == {north: 4, south: 4}, 10, "every node's last frame")
        wait_for(lambda: latest(north_only) == {north: 4} and latest(one_node) == {south: 4}, 10, "the filtered ticks")
    finally:
        for stream in streams:
            stream.close()
    assert all(s.status == 200 for s in streams)
    first = everyone.ticks[0]
    assert first["snapshot"] is True and {node_id: f["seq"] for node_id, f in first["frames"].items() if node_id in ours} == {
        north: 1,
        south: 1,
    }
    assert all(t["snapshot"] is False and t["interval_ms"] == 100 for t in everyone.ticks[1:])
    assert all(a["tick"] < b["tick"] for a, b in zip(everyone.ticks[1:], everyone.ticks[2:], strict=False))
    assert all(t["interval_ms"] == 200 and south not in t["frames"] for t in north_only.ticks)
    assert all(set(t["frames"]) == {south} for t in one_node.ticks)
    assert everyone.frames == []  # no `event: meter` on a coalesced stream
