"""The P2P CPU budget's arithmetic (components/node/p2p/cpu_budget.py), without a network: what a
message may cost before its address is paused, the shared bucket for large messages, and
what is free. The real node under a flood: tests/functional/test_p2p_cpu_fairness.py."""

from __future__ import annotations

import pytest

from cleancoin.components.node.p2p.cpu_budget import (
    BURST, LARGE_MESSAGE, MIN_RATE, SHARED_RATE, CpuBudgets, estimated_cost,
)


def test_an_address_that_spends_its_burst_waits_for_its_share_of_the_rate() -> None:
    budgets = CpuBudgets()
    a = budgets.attach("10.0.0.1", 0.0)
    budgets.attach("10.0.0.2", 0.0)
    assert budgets.rate() == pytest.approx(SHARED_RATE / 2)
    assert budgets.delay(a, 0.0, 0.0) == 0.0
    r = budgets.reserve(a, 0.0, 0.0)
    assert budgets.settle(a, r, 0.2, unsolicited=True)              # spent: from 0.05 to -0.15
    assert a.take_exhaustion()                                       # on an unasked message
    assert budgets.delay(a, 0.0, 0.0) == pytest.approx((0.2 - BURST) / (SHARED_RATE / 2))
    assert budgets.delay(a, 0.0, 100.0) == 0.0                       # refilled (to BURST at most)
    assert a.tokens == BURST
    # The other address was never held up.
    assert budgets.delay(budgets.attach("10.0.0.2", 0.0), 0.0, 0.0) == 0.0


def test_what_was_asked_for_is_free_and_requests_to_us_are_no_misbehaviour() -> None:
    budgets = CpuBudgets()
    a = budgets.attach("10.0.0.1", 0.0)
    r = budgets.reserve(a, 0.01, 0.0)
    assert not budgets.settle(a, r, None, unsolicited=True)          # a requested block: free
    assert a.tokens == BURST
    r = budgets.reserve(a, 0.0, 0.0)
    assert budgets.settle(a, r, 0.3, unsolicited=False)              # getheaders etc.
    assert not a.take_exhaustion()


def test_large_messages_of_all_addresses_share_one_bucket() -> None:
    """Two fresh addresses each announce a max-size message: the second is not read until
    the shared bucket refilled, though its own bucket is full; a small one passes."""
    budgets = CpuBudgets()
    a, b = budgets.attach("10.0.0.1", 0.0), budgets.attach("10.0.0.2", 0.0)
    big = estimated_cost(1_800_000)
    assert big >= LARGE_MESSAGE
    assert budgets.delay(a, big, 0.0) == 0.0
    budgets.reserve(a, big, 0.0)
    assert budgets.delay(b, big, 0.0) > 0.0                          # (a's is reserved)
    assert budgets.delay(b, estimated_cost(100), 0.0) == 0.0


def test_many_addresses_get_at_least_the_minimum_and_idle_full_buckets_are_forgotten() -> None:
    budgets = CpuBudgets()
    for i in range(200):
        budgets.attach(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert budgets.rate() == MIN_RATE
    spent = budgets.attach("10.1.0.1", 0.0)
    spent.tokens = -1.0
    for i in range(200):
        budgets.detach(f"10.0.{i // 256}.{i % 256}")
    budgets.detach("10.1.0.1")
    budgets.prune(0.0)
    assert len(budgets) == 1                         # the one in debt is kept: reconnecting
    assert budgets.attach("10.1.0.1", 0.0).tokens == -1.0      # does not refill it
