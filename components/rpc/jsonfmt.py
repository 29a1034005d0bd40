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

import functools
import json
import os
import secrets
from dataclasses import dataclass
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


# The decoders and encoders are made once, not per call: `json.loads`/`json.dumps` given any
# option build a JSONDecoder/JSONEncoder (and its scanner) for every call, which was most of
# the cost of parsing a forwarded call's "[]" (7 of 8 us) and a third of writing a reply
# (issue #16). They hold no state between calls (the C scanner's key memo is emptied after
# each), as json's own default decoder and encoder, which every thread shares.
_REQUEST_DECODER = json.JSONDecoder(parse_float=JsonFloat, parse_constant=_refuse_constant)
_DECIMAL_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def _decode(decoder: json.JSONDecoder, text: str | bytes) -> Any:
    """`decoder` applied as `json.loads` would apply it (bytes decoded as json.loads does)."""
    if isinstance(text, str):
        return decoder.decode(text)
    return json.loads(text, cls=type(decoder), parse_float=decoder.parse_float,
                      parse_constant=decoder.parse_constant)


def loads(text: str | bytes) -> Any:
    """Parse a request; raises ValueError for anything that is not strict JSON."""
    try:
        return _decode(_REQUEST_DECODER, text)
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
        return _decode(_DECIMAL_DECODER, text)
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
        value = _DECIMAL_DECODER.decode(text)
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
    writer = _writer(indent)
    text = writer.encoder.encode(obj)
    if writer.marker in text:
        text = _put_back(text, writer.marker)
    return text


@dataclass(frozen=True)
class _Writer:
    """An encoder that writes each Decimal as a placeholder string holding its digits,
    `"\\u0000SECRET:<digits>\\u0000"` once escaped (`marker` is its start), for `_put_back`
    to turn into a bare number. SECRET is 128 random bits of this process: no caller's string
    can hold a placeholder without knowing it, and it never appears in any text `dumps`
    returns. (Until 12-07 the secret was drawn for every call, which forced a new encoder per
    call; a forked child draws its own, `_writer`.)"""

    encoder: json.JSONEncoder
    marker: str


@functools.cache
def _writer(indent: int | None) -> _Writer:
    secret = secrets.token_hex(16)

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError("Out of range decimal values are not JSON compliant")
            return f"\x00{secret}:{value:f}\x00"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    separators = (",", ":") if indent is None else (",", ": ")
    encoder = json.JSONEncoder(default=default, indent=indent, separators=separators,
                               ensure_ascii=False, allow_nan=False)
    return _Writer(encoder, '"\\u0000' + secret + ":")


# A forked child (a wallet process is a fork of the zygote) makes its own secrets.
os.register_at_fork(after_in_child=_writer.cache_clear)


def _put_back(text: str, marker: str) -> str:
    """Each placeholder `"\\u0000SECRET:<digits>\\u0000"` (as json escaped it) replaced by its
    digits.

    A split on the marker, not a regular expression: compiling one per call was three
    quarters of the cost of a reply holding an amount (issue #16). Only `dumps` wrote the
    marker: a caller's string cannot hold the process's secret."""
    parts = text.split(marker)
    out = [parts[0]]
    for part in parts[1:]:
        digits, sep, rest = part.partition('\\u0000"')
        if not sep or not _is_fixed_point(digits):      # cannot happen: the marker is ours
            raise ValueError("internal error: a decimal placeholder was damaged")
        out.append(digits)
        out.append(rest)
    return "".join(out)


def _is_fixed_point(digits: str) -> bool:
    """Whether `digits` is what format(Decimal, "f") writes for a finite value."""
    whole, _, fraction = digits.removeprefix("-").partition(".")
    return whole.isdigit() and whole.isascii() and (not fraction or (fraction.isdigit() and fraction.isascii()))
