"""JSON text for RPC, with exact decimals both ways.

bitcoind keeps a JSON number as the text it was written with, so `0.1` stays `0.1` and an amount
such as `50.00000000` keeps its eight decimals. Python's `json` turns numbers into floats. Here:

- `loads` (server side) gives `JsonFloat` for non-integers: a float that remembers its text, so
  an amount parameter becomes an exact `Decimal` (`registry.parse_amount`) while other handlers
  see an ordinary float. NaN and Infinity are refused, as UniValue does.
- `loads_decimal` (client side) gives `Decimal` for non-integers, as bitcoind-style clients do.
- `loads_untrusted` reads what a less trusted process answers (a wallet process's result):
  exactly one value, `Decimal` for non-integers, bounded in size and depth, every string
  valid Unicode. Its value is serialised again by `dumps`: no text from another process is
  ever spliced into a reply.
- `value_bound` counts, without parsing, how many values a text can hold at most: what the
  server checks before it parses a request (a value costs 50 to 100 bytes once parsed, and a
  non-integer some 0.7 us of Python).
- `dumps` writes `Decimal` as a bare number in fixed notation (`Decimal("50.00000000")` ->
  `50.00000000`); compact like bitcoind's replies, or indented like bitcoin-cli's output.
"""

from __future__ import annotations

import json
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


def value_bound(data: bytes | bytearray) -> int:
    """At least the number of JSON values in `data`, counted without parsing it: every value
    but the first follows a `,`, `:`, `[` or `{` (the same bytes inside strings are counted
    too, so this may count more, never fewer). Four byte counts, about 5 ms for 32 MiB."""
    return 1 + data.count(b",") + data.count(b":") + data.count(b"[") + data.count(b"{")


def loads_decimal(text: str | bytes) -> Any:
    """Parse a reply with `Decimal` for every non-integer number."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


class UntrustedJsonError(ValueError):
    """Text that `loads_untrusted` refuses; the message says why (never the text itself)."""


def loads_untrusted(text: str, *, max_bytes: int, max_depth: int) -> Any:
    """Parse JSON text from a less trusted process: exactly one value (trailing data is
    refused), NaN and Infinity refused, at most `max_bytes` bytes of UTF-8 and `max_depth`
    levels of arrays and objects, no lone surrogate in any string (it could not be written
    as UTF-8). Non-integers come back as `Decimal`, so `dumps` writes them as they were
    written (`1.50000000` stays `1.50000000`). Raises UntrustedJsonError."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UntrustedJsonError("text is not valid Unicode") from None
    if size > max_bytes:
        raise UntrustedJsonError(f"{size} bytes, more than {max_bytes}")
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError:
        raise UntrustedJsonError(f"nested more than {max_depth} levels deep") from None
    except ValueError as exc:      # JSONDecodeError: trailing data, syntax; too many digits
        raise UntrustedJsonError(f"not exactly one JSON value ({str(exc).splitlines()[0][:80]})") from None
    # The walk below only looks for what the text itself can rule out (and most results do):
    # nesting deeper than the number of brackets in it, or a lone surrogate, which only a
    # \u escape can write (the text as a whole was UTF-8 above).
    if text.count("[") + text.count("{") > max_depth or "\\u" in text:
        _check_tree(value, max_depth)
    return value


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and string checks of a parsed value, without recursion (the walk itself must
    not be the thing a deep value breaks)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, (list, dict)):
            if depth >= max_depth:
                raise UntrustedJsonError(f"nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_string(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UntrustedJsonError("a string holds a lone surrogate") from None


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
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError("Out of range decimal values are not JSON compliant")
            if not nonce:
                nonce = secrets.token_hex(8)
            decimals.append(format(value, "f"))
            # A placeholder string no caller can forge (the nonce is fresh for every call).
            return f"\x00{nonce}:{len(decimals) - 1}\x00"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, default=default, indent=indent, separators=separators,
                      ensure_ascii=False, allow_nan=False)
    if decimals:
        text = _put_back(text, '"\\u0000' + nonce + ":", decimals)
    return text


def _put_back(text: str, marker: str, decimals: list[str]) -> str:
    """Each placeholder `"\\u0000NONCE:i\\u0000"` (as json escaped it) replaced by decimals[i].

    A split on the marker, not a regular expression: compiling one per call (the nonce is in
    it) was three quarters of the cost of a reply holding an amount (issue #16). Only `dumps`
    wrote the marker: a caller's string that held NUL and the fresh nonce cannot exist."""
    parts = text.split(marker)
    out = [parts[0]]
    for part in parts[1:]:
        index, sep, rest = part.partition('\\u0000"')
        if not sep or not index.isdigit():        # cannot happen: the marker is ours
            raise ValueError("internal error: a decimal placeholder was damaged")
        out.append(decimals[int(index)])
        out.append(rest)
    return "".join(out)
