"""Live listen on the wire (issue 23): the hub's `cmd/listen` and the node's audio chunks.

The hub tells a node, in one `cmd/listen` (QoS 1), the whole set of streams it wants now; the
node starts the streams it does not run, stops those no longer listed, and stops everything
when no `cmd/listen` renewed the set within `lease_s` (a hub that died leaves no encoder
running). A newer `version` replaces an older one; an older one arriving late is ignored.

With more than one hub instance (issue 24) each instance sends its own set, naming itself in
`hub`: the node keeps one set per sender, each with its own version and lease, and runs the
union of the sets by `stream_id`. One sender's empty set, or its lease running out, stops only
the streams no other sender wants. Stream ids are a function of the node and the format
(`stream_id_for`), so instances wanting the same format name the same stream and the node
encodes it once.

A stream's audio goes to the hub as chunks, on MQTT `hark/v1/nodes/{id}/listen/{stream_id}`
(QoS 0) or in the body of `POST /api/v1/nodes/{id}/listen/chunk?stream={stream_id}`. The hub
hands each chunk's bytes unchanged to every listener of the stream as one binary WebSocket
message: the browser parses the same header (no re-encoding, no re-framing at the hub).

Chunk (little endian):

    offset size
    0      4    magic b"HKL1"
    4      1    codec: 1 opus, 2 pcm16 (interleaved signed 16-bit samples)
    5      1    channels (1 or 2)
    6      1    frame_ms: the duration of each frame (20)
    7      1    flags: bit 0 set on the first chunk after a discontinuity (the node lost audio)
    8      4    sample_rate
    12     4    seq: the stream's number of the chunk's first frame (consecutive frames, +1 each)
    16     8    capture_us: capture time of the first frame's first sample, microseconds since the epoch (node clock)
    24     2    count: frames in this chunk
    26     ...  count times: u16 length, then that many bytes (one Opus packet, or frame_ms of PCM)

Frame `i` of a chunk has number `seq + i` and was captured at `capture_us + i * frame_ms * 1000`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import msgspec

MAGIC = b"HKL1"
CODECS = ("opus", "pcm16")
CODEC_IDS = {"opus": 1, "pcm16": 2}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus encodes at
PCM_RATES = (16000, 24000, 32000, 44100, 48000)
OPUS_BITRATES = (6000, 510000)  # libopus's range, bits per second
DEFAULT_OPUS_BITRATE = 64000
FRAME_MS = 20
MAX_CHANNELS = 2  # a listen is a mono channel or a stereo pair (or a mapped programme of one or two)
LEASE_S = 30.0  # a node stops its streams when no cmd/listen renewed them for this long
RENEW_S = 10.0  # the hub sends the set again this often while anyone listens
FLAG_DISCONTINUITY = 0x01
MAX_FRAMES_PER_CHUNK = 50  # one second of 20 ms frames: an HTTP chunk may batch
MAX_CHUNK_BYTES = 64 * 1024

_HEADER = struct.Struct("<4sBBBBIIQH")
HEADER_BYTES = _HEADER.size  # 26
_LENGTH = struct.Struct("<H")


class ListenStream(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One stream the hub wants: these logical channels of the node's channel map, encoded so."""

    stream_id: str
    channels: list[int]  # 0-based logical channel indices, one or two
    codec: str  # opus | pcm16
    sample_rate: int
    bitrate: int | None = None  # opus only


class ListenCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`cmd/listen`: the complete set of streams the node should run now (empty: stop them all)."""

    version: int  # increases with every change the hub makes; a lower one is stale
    streams: list[ListenStream] = []
    lease_s: float = LEASE_S
    transport: str = "mqtt"  # mqtt | http: how the node sends the chunks
    hub: str = ""  # the hub instance sending the set (issue 24); "" from a hub that does not say


class ListenError(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`listen/{stream_id}/error` (JSON, QoS 1): the node cannot run the stream (opus missing, channels gone...)."""

    stream_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A parsed chunk: its header fields and the frames' bytes."""

    codec: str
    channels: int
    frame_ms: int
    flags: int
    sample_rate: int
    seq: int
    capture_us: int
    frames: list[bytes]

    @property
    def discontinuity(self) -> bool:
        return bool(self.flags & FLAG_DISCONTINUITY)


class ChunkError(ValueError):
    """Bytes that are not a valid chunk (the hub drops them; the reason says why)."""


def encode_chunk(
    codec: str,
    channels: int,
    sample_rate: int,
    seq: int,
    capture_us: int,
    frames: list[bytes],
    frame_ms: int = FRAME_MS,
    flags: int = 0,
) -> bytes:
    """One chunk of consecutive frames, as the node sends it and the browser reads it."""
    parts = [
        _HEADER.pack(MAGIC, CODEC_IDS[codec], channels, frame_ms, flags, sample_rate, seq & 0xFFFFFFFF, capture_us, len(frames))
    ]
    for frame in frames:
        parts.append(_LENGTH.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def chunk_header(data: bytes) -> tuple[str, int, int, int, int, int, int]:
    """(codec, channels, frame_ms, flags, sample_rate, seq, capture_us) of a chunk, checking only its header."""
    if len(data) < HEADER_BYTES:
        raise ChunkError(f"{len(data)} bytes: shorter than a chunk header ({HEADER_BYTES})")
    if len(data) > MAX_CHUNK_BYTES:
        raise ChunkError(f"{len(data)} bytes: larger than {MAX_CHUNK_BYTES}")
    magic, codec, channels, frame_ms, flags, rate, seq, capture_us, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ChunkError("not a listen chunk (bad magic)")
    if codec not in CODEC_NAMES:
        raise ChunkError(f"unknown codec {codec}")
    if not 1 <= channels <= MAX_CHANNELS or not 1 <= count <= MAX_FRAMES_PER_CHUNK or not 1 <= frame_ms <= 120:
        raise ChunkError("channels, frame count or frame duration out of range")
    return CODEC_NAMES[codec], channels, frame_ms, flags, rate, seq, capture_us


def parse_chunk(data: bytes) -> Chunk:
    """The whole chunk, every frame length checked; ChunkError says what is wrong."""
    codec, channels, frame_ms, flags, rate, seq, capture_us = chunk_header(data)
    count = _HEADER.unpack_from(data)[-1]
    frames: list[bytes] = []
    at = HEADER_BYTES
    for _ in range(count):
        if at + 2 > len(data):
            raise ChunkError("truncated: a frame length is missing")
        (length,) = _LENGTH.unpack_from(data, at)
        at += 2
        if length == 0 or at + length > len(data):
            raise ChunkError("truncated or empty frame")
        frames.append(bytes(data[at : at + length]))
        at += length
    if at != len(data):
        raise ChunkError(f"{len(data) - at} bytes after the last frame")
    return Chunk(codec, channels, frame_ms, flags, rate, seq, capture_us, frames)


def stream_id_for(node_id: str, channels: list[int] | tuple[int, ...], codec: str, sample_rate: int, bitrate: int | None) -> str:
    """The stream id of one format on one node, the same on every hub instance (`lst_` and 20 hex digits)."""
    key = f"{node_id}|{','.join(str(c) for c in channels)}|{codec}|{sample_rate}|{bitrate or 0}"
    return "lst_" + hashlib.sha256(key.encode()).hexdigest()[:20]


def listen_topic(node_id: str, stream_id: str) -> str:
    """Where a node publishes a stream's chunks (QoS 0)."""
    return f"hark/v1/nodes/{node_id}/listen/{stream_id}"
