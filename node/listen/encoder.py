"""One live-listen stream's frame encoder: Opus through libopus (opuslib_next), or little-endian 16-bit PCM.

Opus runs as APPLICATION_RESTRICTED_LOWDELAY (CELT only: 2.5 ms of algorithmic delay instead of
6.5 ms, and no switching to the speech codec on a stage microphone), constant bitrate as asked,
one 20 ms frame per packet. `opuslib_next` is a ctypes binding of the system's libopus (Debian:
libopus0): importing it fails when the library is missing, which becomes EncoderUnavailable with
the package to install, so the node reports the stream as failed instead of crashing.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.listen import CODECS, DEFAULT_OPUS_BITRATE, OPUS_BITRATES, OPUS_RATES, PCM_RATES

MAX_OPUS_PACKET = 4000  # libopus's recommended output buffer; a 20 ms packet is at most 1275 bytes


class EncoderUnavailable(NodeError):
    """The stream cannot be encoded here (libopus missing, a format libopus does not take)."""


class FrameEncoder(Protocol):
    """Turns one frame (samples x channels, float32 in -1..1) into the bytes of one chunk frame."""

    codec: str

    def encode(self, frame: np.ndarray) -> bytes: ...


class Pcm16Encoder:
    """Interleaved signed 16-bit little-endian samples (the LAN's lossless choice)."""

    codec = "pcm16"

    def encode(self, frame: np.ndarray) -> bytes:
        scaled = np.rint(np.asarray(frame, dtype=np.float32) * 32768.0)
        return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


class OpusEncoder:
    """One libopus encoder state for one stream (Opus keeps state between frames: never share it)."""

    codec = "opus"

    def __init__(self, rate: int, channels: int, bitrate: int) -> None:
        opus = load_opus()
        if rate not in OPUS_RATES:
            raise EncoderUnavailable(f"libopus does not encode at {rate} Hz (it takes {', '.join(map(str, OPUS_RATES))})")
        self.channels = channels
        try:
            self._encoder = opus.Encoder(rate, channels, opus.APPLICATION_RESTRICTED_LOWDELAY)
            self._encoder.bitrate = bitrate
            self._encoder.vbr = 0  # constant bitrate: the bandwidth a session shows is what it costs
        except opus.OpusError as err:
            raise EncoderUnavailable(f"libopus refused {rate} Hz, {channels} channels, {bitrate} b/s: {err}") from err
        self._encode_float = opus.api.encoder.encode_float

    def encode(self, frame: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(frame, dtype=np.float32)
        packet: bytes = self._encode_float(self._encoder.encoder_state, pcm.tobytes(), pcm.shape[0], MAX_OPUS_PACKET)
        return packet


def load_opus() -> Any:
    """The opuslib_next module, or EncoderUnavailable saying how to get libopus."""
    try:
        import opuslib_next
    except Exception as err:  # the binding raises a bare Exception when it finds no libopus
        raise EncoderUnavailable(f"libopus cannot be loaded ({err}): install libopus0 and the node extra's opuslib-next") from err
    return opuslib_next


def make_encoder(codec: str, rate: int, channels: int, bitrate: int | None) -> FrameEncoder:
    """The encoder of one stream; EncoderUnavailable when it cannot run here."""
    if codec == "pcm16":
        if rate not in PCM_RATES:
            raise EncoderUnavailable(f"pcm16 streams run at {', '.join(map(str, PCM_RATES))} Hz, not {rate}")
        return Pcm16Encoder()
    if codec == "opus":
        bitrate = DEFAULT_OPUS_BITRATE if bitrate is None else bitrate
        if not OPUS_BITRATES[0] <= bitrate <= OPUS_BITRATES[1]:
            raise EncoderUnavailable(f"opus bitrate {bitrate} is outside {OPUS_BITRATES[0]}..{OPUS_BITRATES[1]}")
        return OpusEncoder(rate, channels, bitrate)
    raise EncoderUnavailable(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
