"""What a wallet process may register as JSON-RPC methods of the node (`Chain.register_rpc`).

The node lists registered methods in `help` and forwards their calls, so a registration is
checked before anything of it is used: names as bitcoind spells RPC methods (`[a-z0-9_]+`),
so no case or whitespace variant of another method, no newline or escape sequence; a
category of the same alphabet; a one-line signature that starts with the name; help text
without control or format characters (an operator's terminal prints it); and bounds on
every size. The wallet of this version registers 31 methods with 9.8 kB of help in all (the
longest 1 kB, the longest signature 148 characters): the bounds leave it ample room and
stop a registration from filling the node's memory or the operator's screen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..interfaces.chain import RpcMethodInfo

NAME_RE = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class RegistrationLimits:
    """Bounds of one registration (in characters)."""

    max_methods: int = 256
    max_name: int = 64
    max_category: int = 32
    max_signature: int = 1024
    max_help: int = 16 * 1024
    max_total_help: int = 1024 * 1024


class RegistrationRefused(Exception):
    """A registration the node does not take; the message says why, with names quoted."""


def check_methods(methods: Sequence[RpcMethodInfo], limits: RegistrationLimits = RegistrationLimits()) -> None:
    """Raise RegistrationRefused unless every method is well formed (module docstring)."""
    if not methods:
        raise RegistrationRefused("no methods to register")
    if len(methods) > limits.max_methods:
        raise RegistrationRefused(f"{len(methods)} methods; at most {limits.max_methods} may be registered")
    seen: set[str] = set()
    total = 0
    for m in methods:
        name = m.name
        if len(name) > limits.max_name or not NAME_RE.fullmatch(name):
            raise RegistrationRefused(f"method name {shown(name)}: names are [a-z0-9_]+, at most "
                                      f"{limits.max_name} characters")
        if name in seen:
            raise RegistrationRefused(f"method {name!r} is listed twice")
        seen.add(name)
        if len(m.category) > limits.max_category or not NAME_RE.fullmatch(m.category):
            raise RegistrationRefused(f"category {shown(m.category)} of method {name!r}: categories are "
                                      f"[a-z0-9_]+, at most {limits.max_category} characters")
        if len(m.signature) > limits.max_signature:
            raise RegistrationRefused(f"the signature of method {name!r} has more than {limits.max_signature} characters")
        if m.signature != name and not m.signature.startswith(name + " "):
            raise RegistrationRefused(f"the signature of method {name!r} does not start with its name")
        _check_text(m.signature, f"the signature of method {name!r}", newlines=False)
        if len(m.help) > limits.max_help:
            raise RegistrationRefused(f"the help of method {name!r} has {len(m.help)} characters; at most "
                                      f"{limits.max_help}")
        _check_text(m.help, f"the help of method {name!r}", newlines=True)
        total += len(m.help)
        if total > limits.max_total_help:
            raise RegistrationRefused(f"more than {limits.max_total_help} characters of help in all; at most "
                                      f"{limits.max_total_help} may be registered")


def _check_text(text: str, what: str, *, newlines: bool) -> None:
    """Printable characters only (and newlines, if allowed): no escape sequence, no bidi
    override, nothing a terminal interprets."""
    for line in text.split("\n") if newlines else (text,):
        if not line.isprintable():
            bad = next(ch for ch in line if not ch.isprintable())
            raise RegistrationRefused(f"{what} holds the control character U+{ord(bad):04X}")


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted for a message or a log line: escaped (repr), and cut."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 4] + "...'"
