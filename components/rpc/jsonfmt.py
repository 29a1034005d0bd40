"""JSON text for RPC, with exact decimals both ways.

bitcoind keeps a JSON number as the text it was written with, so `0.1` stays `0.1` and an amount
such as `50.00000000` keeps its eight decimals. Python's `json` turns numbers into floats. Here:

- `loads` (server side) gives `JsonFloat` for non-integers: a float that remembers its text, so
  an amount parameter becomes an exact `Decimal` (`registry.parse_amount`) while other handlers
  see an ordinary float. NaN and Infinity are refused, as UniValue does.
- `loads_decimal` (client side) gives `Decimal` for non-integers, as bitcoind-style clients do.
- `dumps` writes `Decimal` as a bare number in fixed notation (`Decimal("50.00000000")` ->
  `50.00000000`); compact like bitcoind's replies, or indented like bitcoin-cli's output.
"""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any


class JsonFloat(float):
    """A float parsed from JSON that keeps its source text (`.text`)."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "JsonFloat":
        value = super().__new__(cls, text)
        value.text = text
        return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def loads(text: str | bytes) -> Any:
    """Parse a request; raises ValueError for anything that is not strict JSON."""
    try:
        return json.loads(text, parse_float=JsonFloat, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def loads_decimal(text: str | bytes) -> Any:
    """Parse a reply with `Decimal` for every non-integer number."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


class RawJson:
    """JSON text that `dumps` inserts as it is: a result another process already serialized
    (a forwarded wallet call), so its exact numbers survive the trip."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def exact(obj: Any) -> Any:
    """`obj` with every JsonFloat turned into a Decimal of its source text, so that `dumps`
    writes each number exactly as it was received (for forwarding a request)."""
    if isinstance(obj, JsonFloat):
        return Decimal(obj.text)
    if isinstance(obj, list):
        return [exact(v) for v in obj]
    if isinstance(obj, dict):
        return {k: exact(v) for k, v in obj.items()}
    return obj


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """JSON text; `Decimal` as exact numbers; non-ASCII kept as UTF-8, like UniValue."""
    decimals: list[str] = []
    nonce = ""

    def default(value: Any) -> Any:
        nonlocal nonce
        if isinstance(value, (Decimal, RawJson)):
            if isinstance(value, Decimal) and not value.is_finite():
                raise ValueError("Out of range decimal values are not JSON compliant")
            if not nonce:
                nonce = secrets.token_hex(8)
            decimals.append(value.text if isinstance(value, RawJson) else format(value, "f"))
            # A placeholder string no caller can forge (the nonce is fresh for every call).
            return f"\x00{nonce}:{len(decimals) - 1}\x00"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, default=default, indent=indent, separators=separators,
                      ensure_ascii=False, allow_nan=False)
    if decimals:
        pattern = re.compile('"\\\\u0000' + nonce + ':([0-9]+)\\\\u0000"')
        text = pattern.sub(lambda m: decimals[int(m.group(1))], text)
    return text
