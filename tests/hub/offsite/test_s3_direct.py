"""The direct route's part layout and S3's composite checksum, as pure functions (issue 20)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hark_fleet.hub.offsite.s3_direct import MIN_PART_BYTES, b64_digest, composite_checksum, layout_for

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "count", "last"),
    [(0, 1, 0), (1, 1, 1), (8 * MIB, 1, 8 * MIB), (8 * MIB + 1, 2, 1), (20 * MIB, 3, 4 * MIB)],
)
def test_a_file_is_cut_into_8_mib_parts_with_a_shorter_last_one(size: int, count: int, last: int) -> None:
    layout = layout_for(size)
    assert layout.part_size == 8 * MIB and layout.count == count and layout.length(count) == last
    assert sum(layout.length(n) for n in range(1, count + 1)) == size
    assert all(layout.offset(n) == (n - 1) * 8 * MIB for n in range(1, count + 1))


def test_a_large_file_gets_larger_whole_mib_parts_within_s3s_limits() -> None:
    layout = layout_for(100 * 1024**3)
    assert layout.part_size % MIB == 0 and layout.part_size >= MIN_PART_BYTES and layout.count <= 1000
    with pytest.raises(ValueError):
        layout_for(10 * 1024**4)  # over S3's 5 TiB
    with pytest.raises(ValueError):
        layout_for(20 * MIB, part_size=MIB)  # parts under S3's 5 MiB minimum


def test_the_composite_checksum_is_the_sha256_of_the_parts_digests() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [hashlib.sha256(p).hexdigest() for p in parts]
    expected = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert composite_checksum(digests) == base64.b64encode(expected).decode()
    assert b64_digest(digests[0]) == base64.b64encode(hashlib.sha256(parts[0]).digest()).decode()
