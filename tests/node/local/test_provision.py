"""Claim codes, the wrong-code limit and the node's local identity, without sockets."""

from __future__ import annotations

import pytest
from hark_fleet.node.local.errors import TooManyAttempts
from hark_fleet.node.local.provision import (
    CROCKFORD,
    WrongCodeLimit,
    format_claim_code,
    new_claim_code,
    normalize_claim_code,
    with_local_identity,
)
from hark_fleet.node.state import NodeState


def test_claim_codes_are_8_crockford_characters_shown_in_two_groups() -> None:
    code = new_claim_code()
    assert len(code) == 8 and set(code) <= set(CROCKFORD)
    assert format_claim_code("ABCD2345") == "ABCD-2345"


def test_a_typed_claim_code_is_normalized_like_crockford_reads_it() -> None:
    assert normalize_claim_code(" abcd-2345 ") == "ABCD2345"
    assert normalize_claim_code("OIL0-0000") == "01100000"


def test_identity_is_generated_once_and_then_kept() -> None:
    first = with_local_identity(NodeState())
    assert first.hardware_id and first.hardware_id.startswith("hw-") and first.claim_code
    assert with_local_identity(first) == first


def test_five_wrong_codes_a_minute_then_refused_until_the_window_moves_on() -> None:
    now = [1000.0]
    limit = WrongCodeLimit(clock=lambda: now[0])
    for _ in range(5):
        limit.check()
        limit.failed()
        now[0] += 1
    with pytest.raises(TooManyAttempts) as refused:
        limit.check()
    assert refused.value.extra["retry_after_s"] == 55
    now[0] = 1060.5
    limit.check()  # the first failure left the window
