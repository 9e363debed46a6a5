"""The working file's WAV header: written before the data, rewritten with the sizes as it grows, RF64 past 4 GiB.

Layout (EBU Tech 3306 style): `RIFF size WAVE`, a 28-byte `JUNK` chunk that becomes `ds64` when the
file outgrows 32-bit sizes, `fmt ` (plain PCM, or WAVE_FORMAT_EXTENSIBLE above 16 bit or 2 channels),
then `data` running to the end of the file. Only this module knows the byte offsets.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from hark_fleet.node.recorder.errors import CorruptRecording

MAX_32 = 0xFFFFFFFF
WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
PCM_SUBTYPE = bytes.fromhex("0100000000001000800000aa00389b71")
DS64_BODY = 28  # riff size, data size, sample count (64 bit each), table length (32 bit)
MAX_HEADER_SCAN = 4096


@dataclass(frozen=True, slots=True)
class WavLayout:
    """What a working file's header says: format, where the data starts, and the declared data size."""

    rate: int
    channels: int
    bit_depth: int
    data_offset: int
    data_bytes: int
    rf64: bool

    @property
    def block_align(self) -> int:
        """Bytes per frame."""
        return self.channels * (self.bit_depth // 8)


def extensible(channels: int, bit_depth: int) -> bool:
    """Whether the fmt chunk must be WAVE_FORMAT_EXTENSIBLE (over 16 bit or over 2 channels)."""
    return bit_depth > 16 or channels > 2


def header_size(channels: int, bit_depth: int) -> int:
    """Bytes before the first sample."""
    return 12 + 8 + DS64_BODY + 8 + (40 if extensible(channels, bit_depth) else 16) + 8


def needs_rf64(channels: int, bit_depth: int, data_bytes: int) -> bool:
    """Whether a file with this much data no longer fits 32-bit RIFF sizes."""
    return header_size(channels, bit_depth) - 8 + data_bytes + 1 > MAX_32


def build_header(rate: int, channels: int, bit_depth: int, data_bytes: int, rf64: bool, padded: bool = False) -> bytes:
    """The whole header for `data_bytes` of samples (`padded`: the pad byte after odd data is there, count it)."""
    block_align = channels * (bit_depth // 8)
    size = header_size(channels, bit_depth)
    riff_size = size - 8 + data_bytes + (1 if padded and data_bytes & 1 else 0)
    if extensible(channels, bit_depth):
        mask = {1: 0x4, 2: 0x3}.get(channels, 0)
        head_fields = (WAVE_FORMAT_EXTENSIBLE, channels, rate, rate * block_align, block_align, bit_depth)
        fmt = struct.pack("<HHIIHHHHI16s", *head_fields, 22, bit_depth, mask, PCM_SUBTYPE)
    else:
        fmt = struct.pack("<HHIIHH", WAVE_FORMAT_PCM, channels, rate, rate * block_align, block_align, bit_depth)
    if rf64:
        head = b"RF64" + struct.pack("<I", MAX_32) + b"WAVE"
        ds64 = b"ds64" + struct.pack("<IQQQI", DS64_BODY, riff_size, data_bytes, data_bytes // block_align, 0)
        data = b"data" + struct.pack("<I", MAX_32)
    else:
        head = b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        ds64 = b"JUNK" + struct.pack("<I", DS64_BODY) + bytes(DS64_BODY)
        data = b"data" + struct.pack("<I", data_bytes)
    header = head + ds64 + b"fmt " + struct.pack("<I", len(fmt)) + fmt + data
    assert len(header) == size
    return header


def read_layout(fd: int) -> WavLayout:
    """Parse the header of an open working file; CorruptRecording when it is not one of ours."""
    raw = os.pread(fd, MAX_HEADER_SCAN, 0)
    if len(raw) < 12 or raw[:4] not in (b"RIFF", b"RF64") or raw[8:12] != b"WAVE":
        raise CorruptRecording("not a RIFF/RF64 WAVE file")
    rf64 = raw[:4] == b"RF64"
    pos = 12
    data_size64: int | None = None
    fmt: tuple[int, int, int] | None = None
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        body = pos + 8
        if chunk == b"ds64" and size >= 16 and body + 16 <= len(raw):
            data_size64 = struct.unpack_from("<Q", raw, body + 8)[0]
        elif chunk == b"fmt " and size >= 16 and body + 16 <= len(raw):
            _tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", raw, body)
            fmt = (rate, channels, bits)
        elif chunk == b"data":
            if fmt is None:
                raise CorruptRecording("the data chunk comes before fmt")
            rate, channels, bits = fmt
            if channels < 1 or bits not in (16, 24, 32) or rate < 1:
                raise CorruptRecording(f"unsupported fmt: {channels} channels, {bits} bit, {rate} Hz")
            declared = data_size64 if rf64 and size == MAX_32 and data_size64 is not None else size
            return WavLayout(rate, channels, bits, body, declared, rf64)
        pos = body + size + (size & 1)
    raise CorruptRecording("no data chunk in the header")


def repair(path: str | os.PathLike[str]) -> WavLayout:
    """Make the header agree with the file: drop a trailing partial frame, rewrite the sizes, sync; the repaired layout."""
    fd = os.open(path, os.O_RDWR)
    try:
        layout = read_layout(fd)
        size = os.fstat(fd).st_size
        data_bytes = max(0, size - layout.data_offset) // layout.block_align * layout.block_align
        if layout.data_offset != header_size(layout.channels, layout.bit_depth):
            raise CorruptRecording("the header is not the recorder's own layout")
        os.ftruncate(fd, layout.data_offset + data_bytes)
        rf64 = layout.rf64 or needs_rf64(layout.channels, layout.bit_depth, data_bytes)
        close_data(fd, layout.rate, layout.channels, layout.bit_depth, data_bytes, rf64)
        os.fsync(fd)
        return WavLayout(layout.rate, layout.channels, layout.bit_depth, layout.data_offset, data_bytes, rf64)
    finally:
        os.close(fd)


def close_data(fd: int, rate: int, channels: int, bit_depth: int, data_bytes: int, rf64: bool) -> None:
    """Finish a file holding `data_bytes` of samples: the pad byte after odd data, then the final header."""
    offset = header_size(channels, bit_depth) + data_bytes
    if data_bytes & 1:
        os.pwrite(fd, b"\x00", offset)
    os.ftruncate(fd, offset + (data_bytes & 1))
    os.pwrite(fd, build_header(rate, channels, bit_depth, data_bytes, rf64, padded=True), 0)
