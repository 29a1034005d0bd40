"""Do two seccomp filters allow the same? Run both on the same syscalls and compare.

Every syscall number is tried; a syscall that some rule conditions on is tried with the
values around each constant of those conditions (the constant, one below and above it, the
mask, the 32- and 64-bit edges), every combination for up to two tested arguments. That is
where two filters built from different rule sets can part ways, so agreement on all of them
means they decide alike (`bpf_sim` runs each filter as the kernel would).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import bpf_sim, seccomp
from ..families import AF_MAX
from ..model import ArgCondition

_EDGES = (0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1)
_MAX_NR = 470


@dataclass(frozen=True)
class Difference:
    syscall: str
    args: tuple[int, ...]
    a: str          # verdict of the first filter: allow, errno:N, kill_process ...
    b: str


def _candidates(conds: Iterable[ArgCondition]) -> dict[int, set[int]]:
    values: dict[int, set[int]] = {}
    for cond in conds:
        here = values.setdefault(cond.index, set(_EDGES))
        for c in (cond.value, cond.mask):
            here.update(v & (2**64 - 1) for v in (c - 1, c, c + 1) if v >= 0)
        if cond.op == "masked_eq":
            here.update({cond.value | cond.mask, cond.mask & ~cond.value})
            # Each bit of the mask on its own (clone's namespace flags, one at a time).
            here.update(1 << b for b in range(64) if cond.mask >> b & 1)
    return values


def probes(conditions: Mapping[str, Sequence[ArgCondition]]) -> Iterable[tuple[int, str, tuple[int, ...]]]:
    """(number, name, arguments) to try: every syscall, the conditioned ones with variations."""
    names = {nr: seccomp.syscall_name(nr) for nr in range(_MAX_NR)}
    for nr, name in names.items():
        conds = conditions.get(name, ())
        cands = _candidates(conds)
        if name == "socket":
            cands.setdefault(0, set()).update(range(AF_MAX + 2))
        if not cands:
            yield nr, name, ()
            continue
        indexes = sorted(cands)[:2]
        for combo in itertools.product(*(sorted(cands[i]) for i in indexes)):
            args = [0] * 6
            for index, value in zip(indexes, combo):
                args[index] = value
            yield nr, name, tuple(args)


def compare(bpf_a: bytes, bpf_b: bytes, conditions: Mapping[str, Sequence[ArgCondition]]) -> list[Difference]:
    """Every probe on which the two filters decide differently."""
    out = []
    for nr, name, args in probes(conditions):
        a = bpf_sim.verdict(bpf_sim.run(bpf_a, nr, args))
        b = bpf_sim.verdict(bpf_sim.run(bpf_b, nr, args))
        if a != b:
            out.append(Difference(name, args, a, b))
    return out


def conditions_of(*tables: Iterable[tuple[str, Sequence[ArgCondition]]]) -> dict[str, list[ArgCondition]]:
    """The conditions per syscall name, from (name, conditions) pairs of any number of rule sets."""
    out: dict[str, list[ArgCondition]] = {}
    for table in tables:
        for name, conds in table:
            out.setdefault(name, []).extend(conds)
    return out
