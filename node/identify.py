"""`identify`: make this box findable in a rack — a tone on an audio output, a blink on a front panel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np

log = logging.getLogger(__name__)

TONE_HZ = 1000.0
TONE_DBFS = -12.0
TONE_RATE = 48_000
DEFAULT_DURATION_S = 5.0

Blinker = Callable[[float], Awaitable[None]]  # blink for this many seconds


def tone(duration_s: float, rate: int = TONE_RATE, freq: float = TONE_HZ, dbfs: float = TONE_DBFS) -> np.ndarray:
    """A mono sine with 20 ms fades (no clicks), float32."""
    count = int(duration_s * rate)
    signal = (10 ** (dbfs / 20.0)) * np.sin(2 * np.pi * freq * np.arange(count) / rate)
    fade = min(count // 2, int(0.02 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    return signal.astype(np.float32)


def _play_tone(duration_s: float) -> str:
    """Play the tone on the default output device; what happened, in words (never raises)."""
    try:
        import sounddevice  # noqa: PLC0415 - PortAudio is optional on a node
    except (ImportError, OSError) as err:
        return f"no tone: PortAudio is not available ({err})"
    try:
        device = sounddevice.query_devices(kind="output")
    except Exception as err:  # noqa: BLE001 - PortAudio reports a missing device in many ways
        return f"no tone: no audio output device ({err})"
    try:
        sounddevice.play(tone(duration_s), TONE_RATE, blocking=True)
    except Exception as err:  # noqa: BLE001
        return f"no tone: playing on {device['name']!r} failed ({err})"
    return f"played a {TONE_HZ:g} Hz tone for {duration_s:g}s on {device['name']!r}"


class Identify:
    """Runs every identify signal the box has; front-panel drivers register a blinker."""

    def __init__(self) -> None:
        self.blinkers: list[Blinker] = []

    async def run(self, duration_s: float = DEFAULT_DURATION_S) -> str:
        log.warning("IDENTIFY: this node was asked to make itself known for %gs", duration_s)
        done = [f"logged an IDENTIFY line for {duration_s:g}s"]
        for blink in self.blinkers:
            await blink(duration_s)
            done.append("blinked the front panel")
        done.append(await asyncio.get_running_loop().run_in_executor(None, _play_tone, duration_s))
        return "; ".join(done)
