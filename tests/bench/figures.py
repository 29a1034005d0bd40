"""Shared helpers of the benchmarks: printing, medians, verdicts against a target.

Not a `bench_*.py` file: never collected, only imported (as chain_fixture.py).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

import pytest


def out(line: str = "") -> None:
    """Print at once: `make bench` runs with -s, and a long benchmark should show progress."""
    print(line, flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p90(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def bootstrap_interval(a: Sequence[float], b: Sequence[float], rounds: int = 2000) -> tuple[float, float]:
    """90 % bootstrap interval of median(a) - median(b)."""
    rng = random.Random(0)
    diffs = sorted(median(rng.choices(a, k=len(a))) - median(rng.choices(b, k=len(b)))
                   for _ in range(rounds))
    return diffs[int(0.05 * rounds)], diffs[int(0.95 * rounds) - 1]


def verdict(ok: bool) -> str:
    """A target is printed beside its figure, never enforced: a miss does not fail the run."""
    return "MET" if ok else "MISS"


def broken(what: str) -> None:
    """A measurement that measured the wrong thing (or nothing) fails the run."""
    pytest.fail(f"measurement broken: {what}", pytrace=False)
