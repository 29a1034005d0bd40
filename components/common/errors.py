"""Errors raised by consensus code.

`ValidationError` carries a Bitcoin-style reject reason ("bad-txns-in-belowout", "high-hash",
...) so RPC and P2P can report what bitcoind would report, and a `Failure` category that
tells the caller what the failure means for the block hash or the transaction:

- a MUTATED block (bad merkle root, duplicated transactions) has the same hash as the real
  block, so its hash must never be marked invalid, or an attacker could blind us to it;
- TIME_FUTURE may become valid later;
- MISSING_INPUTS / PREMATURE_SPEND make a loose transaction an orphan or an early one, not
  an invalid one (inside a block they are final: the block's parent state is fixed).
"""

from __future__ import annotations

import enum


class DeserializationError(ValueError):
    """Bytes that are not a well-formed encoding (truncated, oversized, non-canonical, trailing)."""


class Failure(enum.Enum):
    """What kind of failure a `ValidationError` is (mirrors Bitcoin's validation results)."""

    CONSENSUS = "consensus"            # invalid by the rules, permanently
    MUTATED = "mutated"                # block data does not match its header: hash stays valid
    INVALID_HEADER = "invalid-header"  # proof of work, difficulty bits or timestamp rules
    TIME_FUTURE = "time-future"        # too far in the future for now; may become valid
    MISSING_INPUTS = "missing-inputs"  # an input is unknown or already spent
    PREMATURE_SPEND = "premature-spend"  # immature coinbase (or, later, a timelock)
    TOO_LITTLE_WORK = "too-little-work"  # not invalid: a side branch too far behind to store


class ValidationError(Exception):
    """A block or transaction broke a consensus rule.

    `reason` is the short Bitcoin-style reject reason; `debug` optional detail for logs.
    """

    def __init__(self, failure: Failure, reason: str, debug: str = "") -> None:
        self.failure = failure
        self.reason = reason
        self.debug = debug
        super().__init__(f"{reason} ({debug})" if debug else reason)

    @property
    def code(self) -> Failure:
        """Alias of `failure`, for callers used to a (code, reason) pair."""
        return self.failure

    @property
    def marks_block_invalid(self) -> bool:
        """Whether a block failing with this error may have its hash remembered as invalid."""
        return self.failure not in (Failure.MUTATED, Failure.TIME_FUTURE, Failure.TOO_LITTLE_WORK)
