"""Proof of work: compact "bits" encoding, the hash check, retargeting and chain work.

Targets are Python ints, so none of Bitcoin's 256-bit overflow concerns apply to the
arithmetic itself (Bitcoin's retarget multiplies before dividing and would overflow for a
pow_limit as high as ours); the *encoding* rules (negative, overflow) are Bitcoin's exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .chainparams import ChainParams

#: BIP94: the first block of a retarget period may be at most this much older than its parent
#: (closes the time-warp attack that Bitcoin's off-by-one retarget window allows).
MAX_TIMEWARP: int = 600


def compact_to_target(bits: int) -> tuple[int, bool, bool]:
    """Bitcoin's arith_uint256::SetCompact: (target, negative, overflow).

    Layout: one size byte (number of bytes of the value), then a 3-byte mantissa whose top
    bit is a sign bit. A target that is negative or does not fit 256 bits is unusable.
    """
    size = bits >> 24
    word = bits & 0x007FFFFF
    if size <= 3:
        word >>= 8 * (3 - size)
        target = word
    else:
        target = word << (8 * (size - 3))
    negative = word != 0 and (bits & 0x00800000) != 0
    overflow = word != 0 and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32))
    return target, negative, overflow


def target_to_compact(target: int, negative: bool = False) -> int:
    """Bitcoin's arith_uint256::GetCompact (lossy: keeps the top 3 significant bytes)."""
    if target < 0:
        raise ValueError("target must be non-negative (use negative=True for the sign bit)")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = (target << (8 * (3 - size))) & 0xFFFFFFFF
    else:
        compact = (target >> (8 * (size - 3))) & 0xFFFFFFFF
    # The mantissa's top bit is the sign: if the value uses it, shift one byte right.
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    compact |= size << 24
    if negative and compact & 0x007FFFFF:
        compact |= 0x00800000
    return compact


def derive_target(bits: int, pow_limit: int) -> int | None:
    """The target encoded by `bits`, or None if it is zero, negative, overflows or is easier
    than `pow_limit` (Bitcoin's DeriveTarget)."""
    target, negative, overflow = compact_to_target(bits)
    if negative or overflow or target == 0 or target > pow_limit:
        return None
    return target


def check_proof_of_work(block_hash: bytes, bits: int, params: ChainParams) -> bool:
    """True when the hash (internal byte order, read as a little-endian number) is at or
    below the target that `bits` encodes, and `bits` is a usable target for this network."""
    target = derive_target(bits, params.pow_limit)
    if target is None:
        return False
    return int.from_bytes(block_hash, "little") <= target


def block_proof(bits: int) -> int:
    """Expected number of hashes for a block at `bits`: 2**256 // (target + 1).

    Summed along a chain this is the chain work that picks the best chain. Invalid bits
    count for nothing.
    """
    target, negative, overflow = compact_to_target(bits)
    if negative or overflow or target == 0:
        return 0
    return (1 << 256) // (target + 1)


def difficulty(bits: int, params: ChainParams) -> float:
    """getdifficulty: how many times harder than the network's easiest target (pow_limit)."""
    target, negative, overflow = compact_to_target(bits)
    if negative or overflow or target == 0:
        return 0.0
    return compact_to_target(params.pow_limit_bits)[0] / target


@dataclass(frozen=True)
class PrevBlock:
    """What retargeting needs of the block a new block builds on."""

    height: int
    bits: int
    time: int


def calculate_next_work_required(last_bits: int, last_time: int, first_time: int,
                                 params: ChainParams) -> int:
    """Bitcoin's CalculateNextWorkRequired: scale the target by actual/expected timespan,
    clamped to [timespan/4, timespan*4] so one period moves difficulty at most x4 either way,
    and never easier than pow_limit."""
    if params.pow_no_retargeting:
        return last_bits
    timespan = params.target_timespan
    actual = last_time - first_time
    actual = max(timespan // 4, min(timespan * 4, actual))
    target, _, _ = compact_to_target(last_bits)
    new_target = target * actual // timespan
    if new_target > params.pow_limit:
        new_target = params.pow_limit
    return target_to_compact(new_target)


def next_work_required(prev: PrevBlock, params: ChainParams,
                       ancestor_time: Callable[[int], int]) -> int:
    """The bits a block on top of `prev` must carry.

    Difficulty changes only at heights that are multiples of `retarget_interval`; the period
    is measured, as in Bitcoin, from the first block of the period (height
    prev.height - (interval - 1), whose time `ancestor_time(height)` returns) to `prev`.
    Regtest never retargets. There is no testnet "20 minutes -> minimum difficulty" rule:
    it is what let Bitcoin's testnet3 difficulty collapse and jump around.
    """
    if params.pow_no_retargeting:
        return prev.bits
    if (prev.height + 1) % params.retarget_interval != 0:
        return prev.bits
    first_height = prev.height - (params.retarget_interval - 1)
    return calculate_next_work_required(prev.bits, prev.time, ancestor_time(first_height), params)


def median_time_past(times: list[int] | tuple[int, ...]) -> int:
    """Median of the (up to 11) latest block times, ending at the previous block.

    A new block's time must be strictly greater; locktimes compare against it (BIP113).
    """
    if not times:
        raise ValueError("no block times")
    s = sorted(times[-11:])
    return s[len(s) // 2]
