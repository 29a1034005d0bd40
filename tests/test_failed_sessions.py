"""FailedSessions (components/node/p2p/failed_sessions.py): the wasted blocks-first sync
sessions the node counts per address, so that a claimed chain height does not buy a
connection the next stall race (tests/functional/test_p2p_sync_races.py has the attack)."""

from __future__ import annotations

from cleancoin.components.node.p2p.failed_sessions import FailedSessions


def test_charges_count_per_address_and_an_unknown_address_has_none() -> None:
    failed = FailedSessions()
    failed.charge("127.0.0.60")
    failed.charge("127.0.0.60")
    failed.charge("127.0.0.61")
    assert failed.count("127.0.0.60") == 2
    assert failed.count("127.0.0.61") == 1
    assert failed.count("127.0.0.59") == 0


def test_past_the_limit_the_least_recently_charged_address_is_forgotten() -> None:
    failed = FailedSessions(limit=2)
    failed.charge("a")
    failed.charge("b")
    failed.charge("a")          # (charged again: now the most recent)
    failed.charge("c")
    assert len(failed) == 2
    assert failed.count("b") == 0
    assert failed.count("a") == 2
    assert failed.count("c") == 1
