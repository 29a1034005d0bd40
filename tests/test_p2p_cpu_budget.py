"""The P2P CPU budget's arithmetic (components/node/p2p/cpu_budget.py), without a network: what a
message may cost before its address is paused, the shared bucket for large messages, and
what is free. The real node under a flood: tests/functional/test_p2p_cpu_fairness.py."""

from __future__ import annotations

import pytest

from cleancoin.components.node.p2p.cpu_budget import (
    BURST, LARGE_MESSAGE, MAX_TOTAL_RATE, MIN_RATE, NEWCOMER_POOL, NEWCOMER_RATE, SHARED_RATE, CpuBudgets,
    budget_group, estimated_cost,
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
    for i in range(30):
        budgets.attach(f"10.0.0.{i}", 0.0)
    assert budgets.rate() == MIN_RATE                               # 30 x 0.01 > 0.25
    spent = budgets.attach("10.1.0.1", 0.0)
    spent.tokens = -1.0
    for i in range(30):
        budgets.detach(f"10.0.0.{i}")
    budgets.detach("10.1.0.1")
    budgets.prune(1.0)                               # (the newcomers, opened empty, are full)
    assert len(budgets) == 1                         # the one in debt is kept: reconnecting
    assert budgets.attach("10.1.0.1", 1.0).tokens == pytest.approx(-1.0 + SHARED_RATE)   # does not refill it


def test_many_groups_together_never_get_more_than_the_total_rate() -> None:
    """Before 12-07 (later) each group got at least MIN_RATE however many there were: 110 IPv4
    addresses sending pings or getheaders, which cost no ban score, took 0.83 to 0.86 node
    CPU-s/s (1.1 allowed). Now MIN_RATE holds up to 40 groups, then they share MAX_TOTAL_RATE."""
    budgets = CpuBudgets()
    for i in range(40):
        budgets.attach(f"10.0.0.{i}", 0.0)
    assert budgets.rate() == pytest.approx(MIN_RATE)
    for i in range(40, 115):                                          # every inbound slot
        budgets.attach(f"10.0.0.{i}", 0.0)
    assert budgets.rate() * 115 == pytest.approx(MAX_TOTAL_RATE)
    assert MAX_TOTAL_RATE < 0.5


def test_new_inbound_groups_open_with_what_the_newcomers_pool_gives() -> None:
    """Before 12-07 (later) every new group opened with a full BURST: an attacker connecting
    from ever new addresses was paid one a connection (16 churners: 0.7 node CPU-s/s). Now
    inbound newcomers together open with NEWCOMER_POOL, then NEWCOMER_RATE a second; a group
    already known keeps its own bucket, and a connection the node dialled opens full."""
    budgets = CpuBudgets()
    opened = [budgets.attach(f"10.2.0.{i}", 0.0).tokens for i in range(100)]
    assert opened[:4] == [BURST] * 4                                 # honest newcomers: full
    assert sum(opened) == pytest.approx(NEWCOMER_POOL)
    assert opened[-1] == 0.0
    late = budgets.attach("10.3.0.1", 1.0)
    assert late.tokens == pytest.approx(min(BURST, NEWCOMER_RATE))   # a second's refill
    assert budgets.attach("10.3.0.2", 1.0).tokens == 0.0
    assert budgets.attach("10.3.0.1", 1.0) is late                    # same group: no new draw
    assert budgets.attach("10.4.0.1", 1.0, inbound=False).tokens == BURST
    # A newcomer opened empty waits for its group's rate before its first (version) message.
    empty = budgets.attach("10.5.0.1", 1.0)
    assert budgets.delay(empty, estimated_cost(120), 1.0) > 0.0


def test_a_bucket_spent_message_by_message_is_misbehaviour_only_once_a_burst_was_charged() -> None:
    """A bucket at zero is spent by every message (its cost is known after its estimate): a
    newcomer opened empty was charged ban score for each small unasked message it sent after
    its handshake. Now a verdict needs a whole BURST charged since the last one."""
    budgets = CpuBudgets()
    for i in range(4):
        budgets.attach(f"10.6.0.{i}", 0.0)                            # (the pool emptied)
    a = budgets.attach("10.7.0.1", 0.0)
    assert a.tokens == pytest.approx(0.0, abs=1e-9)
    verdicts = []
    need, now = estimated_cost(24), 0.0
    for n in range(1, 1000):
        now += budgets.delay(a, need, now) + 1e-9                     # (read once it can pay:
        assert budgets.delay(a, need, now) == 0.0                    # peer.py asks again)
        r = budgets.reserve(a, need, now)
        if budgets.settle(a, r, need + 0.0001, unsolicited=True):     # costs a bit more: spent
            verdicts.append((n, a.take_exhaustion()))
    assert verdicts[0] == (1, False)                                  # spent, no verdict yet
    firsts = [n for n, mostly in verdicts if mostly]
    assert firsts and firsts[0] * (estimated_cost(24) + 0.0001) >= BURST     # a burst's worth first


def test_a_budget_belongs_to_an_ipv4_address_or_an_ipv6_64() -> None:
    assert budget_group("10.0.0.1") == "10.0.0.1"
    assert budget_group("::ffff:10.0.0.1") == "10.0.0.1"              # IPv4-mapped: the IPv4 one
    assert budget_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert budget_group("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert budget_group("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert budget_group("fe80::1%eth0") == "fe80::/64"
    assert budget_group("not an address") == "not an address"


def test_addresses_of_one_64_share_one_bucket_and_one_share() -> None:
    """Before 12-07 each address had a full bucket and a share of its own: k addresses of one
    /64 (any IPv6 host's) were k budgets. Now a new address of a /64 in debt is in debt."""
    budgets = CpuBudgets()
    a = budgets.attach("2001:db8::1", 0.0)
    r = budgets.reserve(a, 0.0, 0.0)
    assert budgets.settle(a, r, 0.2, unsolicited=True)              # spent: 0.05 -> -0.15
    b = budgets.attach("2001:db8::2:1", 0.0)
    assert b is a and b.tokens == pytest.approx(BURST - 0.2)
    assert budgets.delay(b, 0.0, 0.0) > 0.0                           # its first message waits
    assert budgets.rate() == SHARED_RATE                              # one group, one share
    other = budgets.attach("2001:db8:0:1::1", 0.0)                   # the next /64: its own
    assert other is not a and other.tokens == BURST
    assert budgets.rate() == pytest.approx(SHARED_RATE / 2)
    assert budgets.attach("::ffff:10.0.0.1", 0.0) is budgets.attach("10.0.0.1", 0.0)
    assert budgets.attach("10.0.0.2", 0.0) is not budgets.attach("10.0.0.1", 0.0)
    # The group's bucket stays while any of its connections does.
    budgets.detach("2001:db8::1")
    budgets.prune(1000.0)
    assert budgets.attach("2001:db8::3", 1000.0) is a
