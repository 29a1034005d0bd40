"""Token buckets and the failure limiter (components/common/ratelimit.py), on a clock the test turns."""

from __future__ import annotations

import pytest

from cleancoin.components.common.ratelimit import FailureLimiter, Rate, TokenBucket, source_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 2.0, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() and not bucket.take()
    clock.now += 100
    assert bucket.full() and [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.0)


def test_failures_are_charged_to_the_source_and_to_the_whole() -> None:
    clock = Clock()
    limiter = FailureLimiter(Rate(2, 1.0), Rate(5, 1.0), clock=clock)
    for _ in range(2):
        assert limiter.allowed("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert not limiter.allowed("10.0.0.1")            # its own allowance is spent
    assert limiter.allowed("10.0.0.2")                # another address is not held up
    limiter.failed("10.0.0.2")
    limiter.failed("10.0.0.3")
    limiter.failed("10.0.0.4")
    assert not limiter.allowed("10.0.0.9")            # the overall one is spent too
    assert limiter.retry_after("10.0.0.9") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.allowed("10.0.0.9") and limiter.allowed("10.0.0.2")


def test_an_ipv6_host_is_one_source_per_64() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::7") == "2001:db8:1:2::/64"
    assert source_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_key("fe80::1%eth0") == "fe80::/64"


def test_source_buckets_are_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(Rate(2, 1.0), Rate(1_000_000, 1.0), max_sources=100, clock=clock)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._sources) <= 100
