"""Which credential the node holds and uses, decided without sockets."""

from __future__ import annotations

from hark_fleet.node.credentials import Credentials
from hark_fleet.node.state import credential_digest


def delivery(credential: str, replaces: str | None) -> tuple[str, str | None]:
    """A delivered credential and the digest of the one it names as replaced."""
    return credential, credential_digest(replaces) if replaces else None


def test_a_delivery_is_taken_only_in_place_of_a_credential_the_node_holds() -> None:
    held = Credentials("c0")
    assert held.offer(*delivery("c1", "c0")) == Credentials("c1", "c0", "c1")
    assert held.offer(*delivery("c1", "c-other")) is None
    assert held.offer(*delivery("c1", None)) is None
    assert held.offer(*delivery("c0", "c0")) is None  # delivered again
    assert held.offer("c1", "é" * 64) is None


def test_a_second_delivery_may_replace_either_unconfirmed_credential() -> None:
    pending = Credentials("c1", "c0", "c1")
    assert pending.offer(*delivery("c2", "c1")) == Credentials("c2", "c1", "c2")
    assert pending.offer(*delivery("c2", "c0")) == Credentials("c2", "c0", "c2")
    assert pending.offer(*delivery("c1", "c0")) is None


def test_the_broker_refusing_the_new_one_switches_to_the_other_and_keeps_both() -> None:
    pending = Credentials("c1", "c0", "c1")
    fallen_back = pending.refused("c1", authoritative=False)
    assert fallen_back == Credentials("c1", "c0", "c0")
    assert fallen_back.refused("c0", authoritative=False) == pending  # both refused: try the new one again
    assert fallen_back.refused("c1", authoritative=False) is None  # a report about the one no longer in use


def test_the_hub_refusing_one_of_them_forgets_it() -> None:
    pending = Credentials("c1", "c0", "c1")
    assert pending.refused("c1", authoritative=True) == Credentials("c0")
    assert pending.refused("c0", authoritative=True) == Credentials("c1")
    assert Credentials("c1", "c0", "c0").refused("c1", authoritative=True) == Credentials("c0")
    assert Credentials("c0").refused("c0", authoritative=True) is None  # nothing to fall back to


def test_the_new_one_accepted_confirms_it_and_drops_the_previous() -> None:
    pending = Credentials("c1", "c0", "c1")
    assert pending.accepted("c1") == Credentials("c1")
    assert Credentials("c1", "c0", "c0").accepted("c1") == Credentials("c1")
    assert pending.accepted("c0") is None  # the old one still working proves nothing about the new one
    assert Credentials("c1").accepted("c1") is None
