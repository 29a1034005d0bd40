"""Standardness policy the node's mempool and the wallet's coin selection share (Bitcoin
Core's src/policy/): what the network relays, and what a fee rate means for a size."""

from __future__ import annotations

#: Largest relayed transaction: bitcoind's MAX_STANDARD_TX_WEIGHT (400,000) / 4, as there is
#: no witness. Bigger ones are valid in a block (up to the block size) but not relayed, so a
#: single peer cannot make every node verify ~7,000 signatures for one message.
MAX_STANDARD_TX_SIZE: int = 100_000


def fee_for_size(rate_per_kb: int, size: int) -> int:
    """The fee `size` bytes pay at `rate_per_kb` (bitcoind's CFeeRate::GetFee: truncating,
    but at least 1 unit when the rate is positive, so a tiny tx cannot go free)."""
    fee = rate_per_kb * size // 1000
    if fee == 0 and size > 0 and rate_per_kb > 0:
        fee = 1
    return fee


def fee_rate(fee: int, size: int) -> int:
    """Units per 1000 bytes for `fee` over `size` bytes (bitcoind's CFeeRate(fee, size))."""
    return fee * 1000 // size if size > 0 else 0
