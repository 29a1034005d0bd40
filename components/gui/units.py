"""Amounts as the GUI shows and reads them (1 CC = 100,000,000 units)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cleancoin.components.common.amount import COIN, MAX_MONEY

UNIT = "CC"


def format_units(units: int, *, with_unit: bool = True, plus: bool = False) -> str:
    """12345678900 -> '123.45678900 CC' (thousands not grouped: amounts are copied around)."""
    sign = "-" if units < 0 else ("+" if plus and units > 0 else "")
    whole, frac = divmod(abs(units), COIN)
    text = f"{sign}{whole}.{frac:08d}"
    return f"{text} {UNIT}" if with_unit else text


def format_coins(value: object, **kwargs: bool) -> str:
    """A JSON-RPC amount (Decimal or number of coins) as format_units shows it."""
    return format_units(to_units(value), **kwargs)


def to_units(value: object) -> int:
    """A JSON-RPC amount in coins -> units."""
    return int((Decimal(str(value)) * COIN).to_integral_value())


def parse_coins(text: str) -> int:
    """What the user typed, in coins -> units; ValueError with a message for the form."""
    text = text.strip().replace(",", ".")
    if not text:
        raise ValueError("Enter an amount")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"'{text}' is not an amount") from None
    if not value.is_finite() or value <= 0:
        raise ValueError("The amount must be more than 0")
    if value.as_tuple().exponent < -8:     # type: ignore[operator]
        raise ValueError("At most 8 decimal places")
    units = int(value * COIN)
    if units > MAX_MONEY:
        raise ValueError("More than the largest possible amount")
    return units
