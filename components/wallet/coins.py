"""Coin selection, fees from the signed size, and building + signing a transaction.

Size is known before signing. Every input is a P2PKH spend: outpoint (36) + script length (1)
+ push(DER signature + sighash byte) + push(33-byte pubkey). With low S (keys.py enforces it)
S has at most 32 bytes and R at most 33, so the signature with its sighash byte is at most 72
bytes and an input at most 36 + 1 + 1 + 72 + 1 + 33 = 144 bytes. The fee is computed for
that maximum, so the signed transaction always pays at least the requested rate; a shorter
signature (R without its sign padding, about half the time) leaves at most a byte or two of
overpayment per input.

Selection: largest coins first until the target plus the fee is covered. Simple, always finds
a solution when one exists (the largest-first prefix is the cheapest set by count), and uses
few inputs. Change below DUST_THRESHOLD (an output that costs more to spend than it is worth
at the dust relay rate, as bitcoind's GetDustThreshold) is not created: it goes to the fee.

`subtract_fee_from`: the fee is taken from those outputs (split equally, the first of them
pays the remainder, as bitcoind), so the sender spends exactly the amounts given.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cleancoin.components.common.amount import MAX_MONEY
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.common.policy import MAX_STANDARD_TX_SIZE, fee_for_size
from cleancoin.components.common.primitives import (
    TXOUT_SIZE, OutPoint, Transaction, TxIn, TxOut, compact_size,
)

__all__ = [
    "AmountTooSmall", "CoinSelectionError", "FeeExceedsMaximum", "DUST_RELAY_FEE", "DUST_THRESHOLD",
    "InsufficientFunds", "MAX_INPUT_SIZE", "SpendableCoin", "TransactionTooLarge",
    "build_transaction", "estimate_size",
]

#: Largest signed P2PKH input: 36 outpoint + 1 length + 1 + 72 signature + 1 + 33 pubkey.
MAX_INPUT_SIZE: int = 36 + 1 + 1 + 72 + 1 + 33
#: bitcoind's DUST_RELAY_TX_FEE (units per 1000 bytes).
DUST_RELAY_FEE: int = 3000
#: Smallest output worth creating: spending it (one input) plus the output itself, at the
#: dust relay rate.
DUST_THRESHOLD: int = fee_for_size(DUST_RELAY_FEE, TXOUT_SIZE + MAX_INPUT_SIZE)
TX_VERSION: int = 2


class CoinSelectionError(Exception):
    """A transaction that cannot be built."""


class InsufficientFunds(CoinSelectionError):
    """The coins do not cover the amounts plus the fee."""

    def __init__(self, message: str = "Insufficient funds") -> None:
        super().__init__(message)


class AmountTooSmall(CoinSelectionError):
    """An output is dust, or would be after the fee is subtracted from it."""


class FeeExceedsMaximum(CoinSelectionError):
    """The fee would be above the wallet's cap (-maxtxfee, common/fee_cap.py)."""


class TransactionTooLarge(CoinSelectionError):
    """The transaction would exceed the relay size limit."""

    def __init__(self) -> None:
        super().__init__("Transaction too large")


@dataclass(frozen=True)
class SpendableCoin:
    """A coin the wallet can spend: where it is, what it is worth, and the key it pays."""

    outpoint: OutPoint
    value: int
    key: PrivateKey

    @property
    def pkh(self) -> bytes:
        """The pkh the coin pays (the key's)."""
        return self.key.public_key.pkh


def estimate_size(n_inputs: int, n_outputs: int) -> int:
    """Largest signed size of a transaction with these counts (see the module docstring)."""
    return (4 + len(compact_size(n_inputs)) + n_inputs * MAX_INPUT_SIZE
            + len(compact_size(n_outputs)) + n_outputs * TXOUT_SIZE + 4)


def _split(amount: int, parts: int) -> list[int]:
    """amount split into `parts` shares, the first taking the remainder."""
    share, rest = divmod(amount, parts)
    return [share + rest] + [share] * (parts - 1)


def build_transaction(coins: Sequence[SpendableCoin], outputs: Sequence[tuple[bytes, int]],
                      fee_rate_per_kb: int, change_pkh: bytes,
                      subtract_fee_from: set[int] | frozenset[int] = frozenset(), *,
                      change_position: int | None = None,
                      locktime: int = 0) -> tuple[Transaction, int]:
    """Select coins, add change if worth it, sign; returns (signed transaction, fee).

    `outputs` are (pkh, value) in units; `subtract_fee_from` holds indexes into `outputs`.
    The change output goes to `change_position` (random when None, so an observer cannot
    tell change from payment by its place). Raises InsufficientFunds, AmountTooSmall,
    TransactionTooLarge.
    """
    if not outputs:
        raise ValueError("Transaction must have at least one recipient")
    if any(not 0 <= i < len(outputs) for i in subtract_fee_from):
        raise ValueError("subtract_fee_from index out of range")
    for pkh, value in outputs:
        if len(pkh) != 20:
            raise ValueError("pkh must be 20 bytes")
        if value <= 0 or value > MAX_MONEY:
            raise AmountTooSmall("Invalid amount") if value <= 0 else ValueError("Amount out of range")
        if value < DUST_THRESHOLD:
            raise AmountTooSmall("Transaction amount too small")
    target = sum(v for _, v in outputs)
    if target > MAX_MONEY:
        raise ValueError("Amount out of range")
    if fee_rate_per_kb < 0:
        raise ValueError("fee rate must not be negative")
    sff = sorted(subtract_fee_from)

    # Largest first; the outpoint breaks ties so the choice is deterministic.
    ordered = sorted(coins, key=lambda c: (-c.value, c.outpoint.txid, c.outpoint.n))
    selected: list[SpendableCoin] = []
    in_value = 0
    for coin in ordered:
        selected.append(coin)
        in_value += coin.value
        plan = _plan(in_value, len(selected), outputs, target, fee_rate_per_kb, sff)
        if plan is not None:
            values, change, fee = plan
            break
    else:
        raise InsufficientFunds()

    size = estimate_size(len(selected), len(values) + (change > 0))
    if size > MAX_STANDARD_TX_SIZE:
        raise TransactionTooLarge()
    vout = [TxOut(v, pkh) for (pkh, _), v in zip(outputs, values, strict=True)]
    if change:
        pos = secrets.randbelow(len(vout) + 1) if change_position is None else change_position
        vout.insert(min(max(pos, 0), len(vout)), TxOut(change, change_pkh))
    unsigned = Transaction(TX_VERSION, tuple(TxIn(c.outpoint) for c in selected), tuple(vout),
                           locktime)
    tx = sign_transaction(unsigned, [c.key for c in selected])
    if tx.size > size:   # cannot happen with low-S DER; a bug here must not underpay silently
        raise RuntimeError(f"signed size {tx.size} exceeds the estimate {size}")
    assert in_value - tx.value_out == fee
    return tx, fee


def _plan(in_value: int, n_in: int, outputs: Sequence[tuple[bytes, int]], target: int,
          rate: int, sff: list[int]) -> tuple[list[int], int, int] | None:
    """(output values, change (0: none), fee) if `in_value` from n_in inputs suffices."""
    n_out = len(outputs)
    fee_without = fee_for_size(rate, estimate_size(n_in, n_out))
    fee_with = fee_for_size(rate, estimate_size(n_in, n_out + 1))
    values = [v for _, v in outputs]
    if not sff:
        if in_value < target + fee_without:
            return None
        change = in_value - target - fee_with
        if change >= DUST_THRESHOLD:
            return values, change, fee_with
        # Dust change is dropped; what is left over (at least fee_without) is the fee.
        return values, 0, in_value - target

    # The recipients pay the fee: the inputs only need to cover the amounts.
    if in_value < target:
        return None
    change = in_value - target
    if change >= DUST_THRESHOLD:
        fee = fee_with
    else:
        fee, change = fee_without, 0    # dust change goes to the fee, on top of fee_without
    for i, share in zip(sff, _split(fee, len(sff)), strict=True):
        values[i] -= share
        if values[i] < DUST_THRESHOLD:
            raise AmountTooSmall("The transaction amount is too small to pay the fee")
    total_fee = in_value - sum(values) - change
    return values, change, total_fee
