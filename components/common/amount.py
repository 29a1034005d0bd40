"""Amounts: integers of base units; 1 coin = COIN units, never more than MAX_MONEY in total."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

COIN: int = 100_000_000
# Same bound on every network (as in Bitcoin): it is a sanity limit on any single value or sum,
# not the actual supply, which follows from the subsidy schedule.
MAX_MONEY: int = 21_000_000 * COIN

_EIGHT_PLACES = Decimal("0.00000001")


def money_range(value: int) -> bool:
    """True when `value` is a valid amount: 0 <= value <= MAX_MONEY."""
    return 0 <= value <= MAX_MONEY


def format_amount(units: int) -> Decimal:
    """Units -> coins as a Decimal with exactly 8 places (JSON-RPC prints it as a number)."""
    return (Decimal(units) / COIN).quantize(_EIGHT_PLACES)


def parse_amount(value: object) -> int:
    """Coins (int, float, str or Decimal) -> units, as bitcoind's AmountFromValue.

    Raises ValueError for non-numbers, more than 8 decimal places, negatives and amounts
    above MAX_MONEY.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("Amount is not a number or string")
    try:
        # str() of a float gives its shortest repr, so 0.1 becomes Decimal("0.1"), not
        # 0.1000000000000000055511151231257827.
        dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError("Invalid amount") from None
    if not dec.is_finite():
        raise ValueError("Invalid amount")
    units = dec * COIN
    if units != units.to_integral_value():
        raise ValueError("Invalid amount")
    result = int(units)
    if not money_range(result):
        raise ValueError("Amount out of range")
    return result
