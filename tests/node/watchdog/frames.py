"""Hand-made meter frames for the watchdog's tests."""

from __future__ import annotations

from hark_fleet.protocol.messages import MeterChannel, MeterFrame


def channel(
    name: str, peak: float | None = -20.0, rms: float | None = -23.0, dc: float | None = 0.0, clip: int = 0
) -> MeterChannel:
    return MeterChannel(index=0, name=name, peak_dbfs=peak, rms_dbfs=rms, dc=dc, clip=clip)


def frame(*channels: MeterChannel, interval_ms: int = 100, rate: int = 48000) -> MeterFrame:
    indexed = [MeterChannel(**{**_fields(c), "index": i}) for i, c in enumerate(channels)]
    return MeterFrame(ts="2026-12-06T09:00:00.000Z", seq=1, interval_ms=interval_ms, channels=indexed, sample_rate=rate)


def _fields(c: MeterChannel) -> dict[str, object]:
    return {f: getattr(c, f) for f in c.__struct_fields__}


def normal(name: str = "M") -> MeterChannel:
    return channel(name)
