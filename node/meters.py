"""Meter frames from the synthetic source description (real metering replaces this later).

Frames go out at QoS 0, straight to the broker, never through the outbox: only the latest matters.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import msgspec

from hub.mqtt.messages import MeterChannel, MeterFrame
from node.audio_source import AudioSource
from node.clock import utc_iso
from node.worker import stopped

log = logging.getLogger(__name__)

SINE_CREST_DB = 3.01  # a sine's RMS sits 3.01 dB under its peak
NOISE_CREST_DB = 10.0  # roughly, for Gaussian noise over a 100 ms window


def channel_names(count: int) -> list[str | None]:
    if count == 2:
        return ["L", "R"]
    if count == 1:
        return ["M"]
    return [None] * count


def synthetic_channels(source: AudioSource) -> list[MeterChannel]:
    """The levels the synthetic signal would read; empty for sources that are not synthetic."""
    if not source.is_synthetic:
        return []
    peak: float | None
    rms: float | None
    if source.target == "silence":
        peak = rms = None
    elif source.target == "noise":
        rms = source.dbfs
        peak = min(0.0, round(source.dbfs + NOISE_CREST_DB, 2))
    else:  # sine, sweep: a sine at `dbfs` peak
        peak = source.dbfs
        rms = round(source.dbfs - SINE_CREST_DB, 2)
    return [
        MeterChannel(index=i, peak_dbfs=peak, rms_dbfs=rms, name=name) for i, name in enumerate(channel_names(source.channels))
    ]


class MeterPublisher:
    """Publishes one MeterFrame every `interval_ms` while connected."""

    def __init__(self, source: AudioSource, topic: str, publish: Callable[[str, bytes], bool], interval_ms: int) -> None:
        self.source = source
        self.topic = topic
        self.interval_ms = interval_ms
        self._publish = publish
        self._seq = itertools.count(1)
        self._channels = synthetic_channels(source)
        self.restarts = 0

    def restart(self) -> str:
        """Start the audio path again from the source (what `restart-audio` does); says what it restarted."""
        self._channels = synthetic_channels(self.source)
        self.restarts += 1
        log.info("audio restarted: %s", self.source.describe())
        return f"audio restarted: {self.source.describe()}, {len(self._channels)} channels metered"

    def frame(self) -> MeterFrame:
        return MeterFrame(
            ts=utc_iso(),
            seq=next(self._seq),
            interval_ms=self.interval_ms,
            channels=self._channels,
            sample_rate=self.source.rate,
        )

    async def run(self, stop: asyncio.Event) -> None:
        if not self._channels:
            log.info("meters: source %s gives no meter frames yet", self.source.describe())
            await stop.wait()
            return
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self._publish(self.topic, msgspec.json.encode(self.frame()))
            next_at += self.interval_ms / 1000.0
            now = loop.time()
            if next_at < now:  # fell behind (suspended, slow loop): skip, never burst
                next_at = now
            if await stopped(stop, next_at - now):
                return
