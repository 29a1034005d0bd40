"""The shape of an OCI seccomp profile (the runtime spec's `linux.seccomp`, Docker's JSON),
checked before anything of it is read.

A profile comes from anywhere (a vendor, a pull request, Docker's default), so `import` must
refuse a malformed one with an error that names where (`syscalls[3].args[0].index`), never
crash on it or write a policy made of what it misread: a name that is a number, an argument
index 9, a value of -1 or 1e400. The rules follow the spec's types (uint for errno values,
uint64 for argument values, 0-5 for an index); keys this importer does not use are ignored,
as Go's JSON decoding in runc ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_UINT64_MAX = 2**64 - 1
#: The largest errno a syscall can return (linux/err.h's MAX_ERRNO).
_MAX_ERRNO = 4095
_MAX_NAME = 128


class FormatError(Exception):
    """A profile this importer cannot read, or a policy that has no OCI form."""


def _fail(where: str, expected: str, value: object) -> FormatError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return FormatError(f"{where}: expected {expected}, got {shown}")


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "an object", value)
    return value


def _string(value: object, where: str) -> str:
    # Printable and short: every string here is a name (a syscall, a capability, an action)
    # that may end up in the policy's comments and notes.
    if (not isinstance(value, str) or not 0 < len(value) <= _MAX_NAME
            or not value.isprintable()):
        raise _fail(where, f"a name (printable, 1 to {_MAX_NAME} characters)", value)
    return value


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise _fail(where, "an array of strings", value)
    return [_string(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _integer(value: object, where: str, low: int, high: int) -> int:
    # bool is an int in Python and a float may be inf: neither is a JSON integer here.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"an integer from {low} to {high}", value)
    return value


def _conditions(raw: object, where: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _fail(where, "an array of conditions", raw)
    for j, item in enumerate(raw):
        here = f"{where}[{j}]"
        cond = _object(item, here)
        _integer(cond.get("index"), f"{here}.index", 0, 5)
        _integer(cond.get("value", 0), f"{here}.value", 0, _UINT64_MAX)
        if cond.get("valueTwo") is not None:
            _integer(cond["valueTwo"], f"{here}.valueTwo", 0, _UINT64_MAX)
        _string(cond.get("op"), f"{here}.op")


def _filters(raw: object, where: str) -> None:
    """Docker's `includes` and `excludes`."""
    if raw is None:
        return
    table = _object(raw, where)
    for key in ("arches", "caps"):
        if table.get(key) is not None:
            _strings(table[key], f"{where}.{key}")
    if table.get("minKernel") is not None:
        _string(table["minKernel"], f"{where}.minKernel")


def check_profile(profile: object) -> None:
    """Raise FormatError naming the first value of `profile` that is not what the format
    says; return quietly if every value the importer reads has its type and range."""
    if not isinstance(profile, Mapping) or "defaultAction" not in profile:
        raise FormatError("not an OCI seccomp profile: no defaultAction")
    _string(profile["defaultAction"], "defaultAction")
    if profile.get("defaultErrnoRet") is not None:
        _integer(profile["defaultErrnoRet"], "defaultErrnoRet", 1, _MAX_ERRNO)
    if profile.get("architectures") is not None:
        _strings(profile["architectures"], "architectures")
    if profile.get("archMap") is not None:
        if not isinstance(profile["archMap"], list):
            raise _fail("archMap", "an array of objects", profile["archMap"])
        for i, item in enumerate(profile["archMap"]):
            _string(_object(item, f"archMap[{i}]").get("architecture"), f"archMap[{i}].architecture")
    syscalls = profile.get("syscalls")
    if syscalls is None:
        return
    if not isinstance(syscalls, list):
        raise _fail("syscalls", "an array of objects", syscalls)
    for i, item in enumerate(syscalls):
        where = f"syscalls[{i}]"
        entry = _object(item, where)
        if entry.get("names") is not None:
            _strings(entry["names"], f"{where}.names")
        elif entry.get("name") is not None:      # Docker's older spelling
            _string(entry["name"], f"{where}.name")
        else:
            raise FormatError(f"{where}: no names")
        _string(entry.get("action"), f"{where}.action")
        if entry.get("errnoRet") is not None:
            _integer(entry["errnoRet"], f"{where}.errnoRet", 1, _MAX_ERRNO)
        _conditions(entry.get("args"), f"{where}.args")
        _filters(entry.get("includes"), f"{where}.includes")
        _filters(entry.get("excludes"), f"{where}.excludes")
