"""The policy format: every section, key and value type, defined once.

The loader validates files against this table and the JSON Schema shipped in `policies/` is
generated from it (`policy_schema.py`), so the two cannot drift apart. Each value type turns a
raw TOML value into model values and says what is wrong with a bad one.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import PolicyError, SourceRef
from .families import FAMILIES
from .model import MECHANISMS, ArgCondition, Grant, Level, Rlimit, SeccompRule, SocketFamily
from .rlimits import RLIMITS as _RLIMITS
from .variables import check_references

#: The value types below are immutable and never compared or hashed (identity is all they
#: need): no generated __eq__ or __hash__, which would only cost start-up time (a dataclass
#: method is compiled from source when its class is made; docs/audit.md, "Start-up time").
_value_type = dataclass(frozen=True, eq=False)

Ref = Callable[[str], SourceRef]
"""Gives the SourceRef of a dotted key path in the file being read."""

_TOML_TYPE = {bool: "a boolean", int: "an integer", str: "a string", list: "an array",
              dict: "a table", float: "a float"}


def _type_name(value: object) -> str:
    return _TOML_TYPE.get(type(value), type(value).__name__)


def _number(value: int) -> str:
    """An integer for a message: long ones are cut (a policy may hold 4000-digit numbers)."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _toml(value: object) -> str:
    """A value as TOML spells it, for messages (at most about 80 characters)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _number(value)
    if isinstance(value, (str, list, dict)):
        try:
            return json.dumps(value, default=str)[:80]
        except (ValueError, RecursionError):    # digits or depth beyond what json takes
            return f"{_type_name(value)} of {len(value)} items"
    return str(value)[:80]


def _expect(value: object, kind: type, ref: SourceRef, what: str) -> None:
    # bool is an int in Python; TOML keeps them apart, and so do we.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PolicyError(ref, f"expected {what}, found {_type_name(value)} {_toml(value)}")


def _string(value: object, ref: SourceRef, what: str = "a string") -> str:
    _expect(value, str, ref, what)
    assert isinstance(value, str)
    if "\0" in value:
        # No path, name or environment value can hold one: the kernel would cut it there, and
        # Python refuses it at launch.
        raise PolicyError(ref, f"{_toml(value)} contains a NUL character (\\u0000)")
    check_references(value, ref)
    return value


def _table(value: object, ref: SourceRef, keys: Mapping[str, bool], what: str) -> dict[str, Any]:
    """Check an inline table: `keys` maps each allowed key to whether it is required."""
    _expect(value, dict, ref, what)
    assert isinstance(value, dict)
    for key in value:
        if key not in keys:
            raise PolicyError(SourceRef(ref.file, ref.line, f"{ref.key}.{key}"),
                              f"unknown key '{key}' (allowed: {', '.join(keys)})")
    for key, required in keys.items():
        if required and key not in value:
            raise PolicyError(ref, f"missing key '{key}' in {what}")
    return value


def _reason(table: Mapping[str, Any], ref: SourceRef) -> str | None:
    if "reason" not in table:
        return None
    # Plain text, never substituted: a "$" in it is just a dollar sign.
    _expect(table["reason"], str, ref, "a reason string")
    reason = str(table["reason"])
    if not reason.strip():
        raise PolicyError(ref, "an empty reason is no reason")
    return reason


class ValueType:
    """A value type of the format: validation plus its JSON Schema."""

    def parse(self, value: object, path: str, ref: Ref) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


@_value_type
class Bool(ValueType):
    """true or false."""

    def parse(self, value: object, path: str, ref: Ref) -> bool:
        _expect(value, bool, ref(path), "true or false")
        return bool(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@_value_type
class Text(ValueType):
    """A string, at most `max_bytes` long in UTF-8 when that is set."""

    max_bytes: int | None = None     # a limit the kernel sets (a hostname: 64)

    def parse(self, value: object, path: str, ref: Ref) -> str:
        text = _string(value, ref(path))
        if self.max_bytes is not None and len(text.encode()) > self.max_bytes:
            raise PolicyError(ref(path), f"longer than {self.max_bytes} bytes")
        return text

    def schema(self) -> dict[str, Any]:
        if self.max_bytes is not None:
            return {"type": "string", "maxLength": self.max_bytes}
        return {"type": "string"}


@_value_type
class Integer(ValueType):
    """An integer in minimum..maximum."""

    minimum: int = 0
    maximum: int = 2**63 - 1

    def parse(self, value: object, path: str, ref: Ref) -> int:
        _expect(value, int, ref(path), "an integer")
        assert isinstance(value, int)
        if not self.minimum <= value <= self.maximum:
            raise PolicyError(ref(path), f"{_number(value)} is out of range "
                                         f"{self.minimum}..{self.maximum}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


@_value_type
class Choice(ValueType):
    """One string of a fixed list."""

    choices: tuple[str, ...]

    def parse(self, value: object, path: str, ref: Ref) -> str:
        text = _string(value, ref(path))
        if text not in self.choices:
            raise PolicyError(ref(path), f"'{text}' is not one of {', '.join(self.choices)}")
        return text

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


_ERRNO_NAMES = tuple(sorted(errno.errorcode.values()))
_ACTIONS = ("allow", "kill_process", "log")


def parse_action(text: str, ref: SourceRef, allow_allowed: bool = True) -> str:
    """Validate a seccomp action: allow, kill_process, log or errno:NAME."""
    if text.startswith("errno:"):
        name = text.split(":", 1)[1]
        if name not in errno.errorcode.values():
            raise PolicyError(ref, f"unknown errno name '{name}' in '{text}'")
        return text
    if text not in _ACTIONS or (text == "allow" and not allow_allowed):
        choices = [a for a in _ACTIONS if allow_allowed or a != "allow"] + ["errno:NAME"]
        raise PolicyError(ref, f"unknown action '{text}' (one of {', '.join(choices)})")
    return text


@_value_type
class Action(ValueType):
    """A seccomp action: allow (unless `allow_allowed` is false), kill_process, log or errno:NAME."""

    allow_allowed: bool = True

    def parse(self, value: object, path: str, ref: Ref) -> str:
        return parse_action(_string(value, ref(path)), ref(path), self.allow_allowed)

    def schema(self) -> dict[str, Any]:
        names = [a for a in _ACTIONS if self.allow_allowed or a != "allow"]
        return {"type": "string", "pattern": "^(" + "|".join(names) + "|errno:[A-Z0-9]+)$"}


@_value_type
class GrantList(ValueType):
    """A list of strings, each optionally written as a table with a reason.

    `item_key` names the value in the table form: `{ path = "/", reason = "..." }`.
    """

    item_key: str
    optional_flag: bool = False
    check: Callable[[str, SourceRef], str] | None = None

    def parse(self, value: object, path: str, ref: Ref) -> tuple[Grant, ...]:
        _expect(value, list, ref(path), "an array")
        assert isinstance(value, list)
        grants: list[Grant] = []
        keys = {self.item_key: True, "reason": False}
        if self.optional_flag:
            keys["optional"] = False
        for i, item in enumerate(value):
            where = ref(f"{path}[{i}]")
            if isinstance(item, dict):
                table = _table(item, where, keys, f"a table with {self.item_key}")
                text = _string(table[self.item_key], where)
                optional = table.get("optional", False)
                _expect(optional, bool, where, "true or false for optional")
                reason = _reason(table, where)
            else:
                text = _string(item, where, f"a string or a table with {self.item_key}")
                optional, reason = False, None
            if self.check is not None:
                text = self.check(text, where)
            grants.append(Grant(text, where, reason, bool(optional)))
        return tuple(grants)

    def schema(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                "required": [self.item_key],
                                "properties": {self.item_key: {"type": "string"},
                                               "reason": {"type": "string", "minLength": 1}}}
        if self.optional_flag:
            item["properties"]["optional"] = {"type": "boolean"}
        return {"type": "array", "items": {"anyOf": [{"type": "string"}, item]}}


def _check_path(text: str, ref: SourceRef) -> str:
    """A path grant may not step up with `..`: `${datadir}/..` reads as a place in the datadir
    to a reviewer and to `diff` (which compared it with `${datadir}` as text and called it
    not wider), and is the datadir's parent where it is applied."""
    if ".." in text.split("/"):
        shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
        raise PolicyError(ref, f"'{shown}' has a '..' component: it leaves the directory it names; "
                               "write the directory meant")
    return text


def _check_port(text: str, ref: SourceRef) -> str:
    if not re.fullmatch(r"\$\{[a-z_]+\}|[0-9]{1,5}", text) or (text.isdigit() and int(text) > 65535):
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"
        raise PolicyError(ref, f"'{shown}' is not a TCP port (0-65535) or a ${{variable}}")
    return text


@_value_type
class PortList(ValueType):
    """TCP ports: integers, `${port}`-style variables, or the word "any" (not restricted)."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[Grant, ...] | None:
        if value == "any":
            return None
        _expect(value, list, ref(path), 'an array of ports or "any"')
        assert isinstance(value, list)
        grants = []
        for i, item in enumerate(value):
            where = ref(f"{path}[{i}]")
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            text = _string(item, where, "a port number or a ${variable}")
            grants.append(Grant(_check_port(text, where), where))
        return tuple(grants)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"const": "any"}, {"type": "array", "items": {"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 65535},
            {"type": "string", "pattern": r"^\$\{[a-z_]+\}$"}]}}]}


# Every family the kernel knows (sandbox/families.py): imported profiles name them all.
SOCKET_FAMILIES: Mapping[str, int] = FAMILIES


@_value_type
class FamilyList(ValueType):
    """Socket address families, each a name or a table with raw and a reason."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[SocketFamily, ...]:
        _expect(value, list, ref(path), "an array of socket families")
        assert isinstance(value, list)
        families = []
        for i, item in enumerate(value):
            where = ref(f"{path}[{i}]")
            if isinstance(item, dict):
                table = _table(item, where, {"family": True, "raw": False, "reason": False, "datagram": False,
                                             "socketpair_only": False},
                               "a table with family")
                name = _string(table["family"], where)
                raw = table.get("raw", False)
                _expect(raw, bool, where, "true or false for raw")
                datagram = table.get("datagram", True)
                _expect(datagram, bool, where, "true or false for datagram")
                pair_only = table.get("socketpair_only", False)
                _expect(pair_only, bool, where, "true or false for socketpair_only")
                reason = _reason(table, where)
            else:
                name, raw, reason, datagram = _string(item, where, "a family name or a table"), False, None, True
                pair_only = False
            if name not in SOCKET_FAMILIES:
                raise PolicyError(where, f"unknown socket family '{name}' "
                                         f"(one of {', '.join(SOCKET_FAMILIES)})")
            if raw and name not in ("inet", "inet6"):
                raise PolicyError(where, "raw applies to the inet and inet6 families only")
            if not datagram and (raw or name not in ("inet", "inet6")):
                raise PolicyError(where, "datagram = false applies to the inet and inet6 families without raw only "
                                         "(stream sockets only: TCP, no UDP)")
            if pair_only and name != "unix":
                raise PolicyError(where, "socketpair_only applies to the unix family only")
            families.append(SocketFamily(name, where, bool(raw), reason, bool(datagram), bool(pair_only)))
        return tuple(families)

    def schema(self) -> dict[str, Any]:
        names = list(SOCKET_FAMILIES)
        return {"type": "array", "items": {"anyOf": [{"enum": names}, {
            "type": "object", "additionalProperties": False, "required": ["family"],
            "properties": {"family": {"enum": names}, "raw": {"type": "boolean"}, "datagram": {"type": "boolean"},
                           "socketpair_only": {"type": "boolean"},
                           "reason": {"type": "string", "minLength": 1}}}]}}


@_value_type
class StrList(ValueType):
    """A list of strings, each matching `pattern`."""

    pattern: str = r"^.+$"

    def parse(self, value: object, path: str, ref: Ref) -> tuple[str, ...]:
        _expect(value, list, ref(path), "an array of strings")
        assert isinstance(value, list)
        out = []
        for i, item in enumerate(value):
            text = _string(item, ref(f"{path}[{i}]"))
            if not re.fullmatch(self.pattern, text):
                raise PolicyError(ref(f"{path}[{i}]"), f"'{text}' does not match {self.pattern}")
            out.append(text)
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "pattern": self.pattern}}


@_value_type
class IntList(ValueType):
    """A list of integers 0..65535 (file descriptors)."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[int, ...]:
        _expect(value, list, ref(path), "an array of integers")
        assert isinstance(value, list)
        return tuple(Integer(0, 65535).parse(v, f"{path}[{i}]", ref) for i, v in enumerate(value))

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 65535}}


@_value_type
class EnvMap(ValueType):
    """A table of environment variables: NAME = "value"."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[tuple[str, str], ...]:
        _expect(value, dict, ref(path), "a table of NAME = \"value\"")
        assert isinstance(value, dict)
        out = []
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise PolicyError(ref(f"{path}.{name}"), f"'{name}' is not an environment name")
            out.append((name, _string(text, ref(f"{path}.{name}"))))
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": {"type": "string"},
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}


RLIMITS: Mapping[str, int] = _RLIMITS


#: The largest finite rlimit: setrlimit(2) takes a 64-bit rlim_t whose top value means
#: "infinity", and Python passes it as a signed 64-bit integer.
RLIM_MAX: int = 2**63 - 1
#: The kernel's ceiling for fs.nr_open, and so for any nofile limit (sysctl_nr_open_max on
#: 64-bit Linux); used when /proc/sys/fs/nr_open cannot be read.
NR_OPEN_CEILING: int = 2**31 - 64


def nofile_maximum() -> int:
    """The largest nofile limit setrlimit accepts on this system (fs.nr_open)."""
    try:
        with open("/proc/sys/fs/nr_open", encoding="utf-8") as handle:   # ASCII
            return min(int(handle.read().strip()), NR_OPEN_CEILING)
    except (OSError, ValueError):
        return NR_OPEN_CEILING


def _limit(value: object, where: SourceRef, name: str) -> int | None:
    """One rlimit value, checked against what setrlimit(2) can take, so that a policy `check`
    accepts is never refused for its numbers at launch."""
    if value in ("infinity", "unlimited"):
        if name == "nofile":
            raise PolicyError(where, f"nofile cannot be infinity: the kernel caps it at "
                                     f"fs.nr_open ({nofile_maximum()})")
        return None
    _expect(value, int, where, 'a non-negative integer or "infinity"')
    assert isinstance(value, int)
    if value < 0:
        raise PolicyError(where, f"{_number(value)} is negative")
    if value > RLIM_MAX:
        raise PolicyError(where, f"{_number(value)} is above the largest rlimit, {RLIM_MAX} "
                                 '(write "infinity" for no limit)')
    if name == "nofile" and value > (top := nofile_maximum()):
        raise PolicyError(where, f"{_number(value)} is above this system's fs.nr_open ({top}), "
                                 "the most open files setrlimit accepts")
    return value


@_value_type
class RlimitMap(ValueType):
    """A table of rlimits: a number, "infinity", or { soft, hard }."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[Rlimit, ...]:
        _expect(value, dict, ref(path), "a table of rlimits")
        assert isinstance(value, dict)
        out = []
        for name, item in value.items():
            where = ref(f"{path}.{name}")
            if name not in RLIMITS:
                raise PolicyError(where, f"unknown rlimit '{name}' (one of {', '.join(sorted(RLIMITS))})")
            if isinstance(item, dict):
                table = _table(item, where, {"soft": True, "hard": True}, "a table with soft and hard")
                soft, hard = _limit(table["soft"], where, name), _limit(table["hard"], where, name)
                if hard is not None and (soft is None or soft > hard):
                    raise PolicyError(where, "the soft limit is above the hard limit")
            else:
                soft = hard = _limit(item, where, name)
            out.append(Rlimit(name, soft, hard, where))
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        limit = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": RLIM_MAX},
                           {"enum": ["infinity", "unlimited"]}]}
        return {"type": "object", "propertyNames": {"enum": sorted(RLIMITS)},
                "additionalProperties": {"anyOf": [limit, {
                    "type": "object", "additionalProperties": False, "required": ["soft", "hard"],
                    "properties": {"soft": limit, "hard": limit}}]}}


ARG_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "masked_eq", "masked_ne")
#: Ops with a mask: the rule holds when (argument & mask) == value, or != value.
_MASKED_OPS = ("masked_eq", "masked_ne")
_UINT64_MAX = 2**64 - 1


def narrow_argument(syscall: str, action: str, cond: ArgCondition) -> str | None:
    """Why a condition on an argument the kernel reads narrower than 64 bits does not mean
    what it says, or None. The filter compares the whole register; the kernel casts it to the
    argument's type (an int: the low 32 bits). So a refusing rule that must match (`eq`, `lt`,
    `le`) is passed by setting a high bit, and an allowing rule that must match `ne`, `gt`,
    `ge` is met by one, while the kernel reads the value the author meant to keep out."""
    from .syscall_args import ARG_BITS
    widths = ARG_BITS.get(syscall, ())
    if cond.index >= len(widths) or widths[cond.index] >= 64:
        return None
    bits = widths[cond.index]
    top = (1 << bits) - 1
    what = (f"argument {cond.index} of {syscall} is {bits} bits wide (the kernel ignores the "
            "rest of the register)")
    masked = f'{{ index = {cond.index}, op = "masked_eq", mask = {top:#x}, value = ... }}'
    if cond.op in ("eq", "ne", "masked_eq") and (cond.value > top or cond.mask > top):
        return f"{what}: {max(cond.value, cond.mask):#x} does not fit in it; write {masked}"
    permits = action in ("allow", "log")
    if (not permits and cond.op in ("eq", "lt", "le") and not (cond.op == "le" and cond.value == _UINT64_MAX)) \
            or (permits and cond.op in ("ne", "gt", "ge")):
        hint = (f"write {masked}" if cond.op == "eq" else
                "test the low bits with masked_eq (one rule per value), or refuse what must not "
                "pass and allow the rest" if permits else
                "allow what may pass instead (allow rules compare no high bits in the caller's favour)")
        return (f"{what}: '{cond.op}' compares all 64 bits, so a caller that sets a high bit "
                f"{'meets' if permits else 'passes'} this rule while the kernel reads the value "
                f"it {'keeps out' if permits else 'refuses'}; {hint}")
    return None


@_value_type
class RuleList(ValueType):
    """`[[seccomp.rules]]`: one syscall, an action, and conditions on its arguments."""

    def parse(self, value: object, path: str, ref: Ref) -> tuple[SeccompRule, ...]:
        _expect(value, list, ref(path), "an array of tables ([[seccomp.rules]])")
        assert isinstance(value, list)
        rules = []
        for i, item in enumerate(value):
            here = f"{path}[{i}]"
            table = _table(item, ref(here), {"syscall": True, "action": False, "args": False,
                                             "reason": False, "log": False}, "a rule table")
            syscall = _string(table["syscall"], ref(f"{here}.syscall"))
            action = Action().parse(table.get("action", "allow"), f"{here}.action", ref)
            raw_args = table.get("args", [])
            _expect(raw_args, list, ref(f"{here}.args"), "an array of argument conditions")
            conditions: list[ArgCondition] = []
            # A masked_ne condition: (position, index, value, mask). libseccomp compares
            # (argument & mask) == value only, so the rule is written as one rule per bit of
            # the mask, each holding when that bit differs from value's: the same filter.
            differs: tuple[int, int, int, int] | None = None
            for j, arg in enumerate(raw_args):
                where = ref(f"{here}.args[{j}]")
                cond = _table(arg, where, {"index": True, "op": True, "value": True, "mask": False},
                              "a condition {index, op, value}")
                index = Integer(0, 5).parse(cond["index"], f"{here}.args[{j}]", ref)
                op = Choice(ARG_OPS).parse(cond["op"], f"{here}.args[{j}]", ref)
                val = Integer(0, 2**64 - 1).parse(cond["value"], f"{here}.args[{j}]", ref)
                if op in _MASKED_OPS and "mask" not in cond:
                    raise PolicyError(where, f"{op} needs a mask")
                if op not in _MASKED_OPS and "mask" in cond:
                    raise PolicyError(where, f"mask is for masked_eq and masked_ne only, not {op}")
                mask = Integer(0, 2**64 - 1).parse(cond.get("mask", 0), f"{here}.args[{j}]", ref)
                if op == "masked_ne" and not mask:
                    raise PolicyError(where, "masked_ne with mask 0: (argument & 0) is always 0, so the "
                                             "rule holds for no value 0 and for every other one; write "
                                             "the rule without it")
                if op in _MASKED_OPS and val & ~mask:
                    # (argument & mask) never has a bit the mask clears: the rule would read
                    # as a test and never hold.
                    raise PolicyError(where, f"value {val:#x} has bits outside mask {mask:#x} "
                                             f"({val & ~mask:#x}): (argument & mask) can never equal "
                                             "it, so the rule never applies")
                if any(c.index == index for c in conditions) or (differs is not None and differs[1] == index):
                    raise PolicyError(where, f"argument {index} is tested twice in one rule; "
                                             "write two rules instead")
                if op == "masked_ne":
                    if differs is not None:
                        raise PolicyError(where, "one masked_ne condition per rule (each is written as "
                                                 "one rule per bit of its mask); write two rules instead")
                    if (narrow := narrow_argument(syscall, action, ArgCondition(index, "masked_eq", val, mask))):
                        raise PolicyError(where, narrow)
                    differs = (len(conditions), index, val, mask)
                    continue
                condition = ArgCondition(index, op, val, mask)
                if (narrow := narrow_argument(syscall, action, condition)) is not None:
                    raise PolicyError(where, narrow)
                conditions.append(condition)
            logged = Bool().parse(table.get("log", True), f"{here}.log", ref)
            if not logged and not action.startswith("errno:"):
                raise PolicyError(ref(f"{here}.log"), f"log = false is for errno:NAME rules (the "
                                                      f"denial log records only those), not {action}")
            variants = [conditions]
            if differs is not None:
                at, index, val, mask = differs
                bits = [1 << b for b in range(64) if mask >> b & 1]
                variants = [conditions[:at] + [ArgCondition(index, "masked_eq", (val & bit) ^ bit, bit)]
                            + conditions[at:] for bit in bits]
            for variant in variants:
                rules.append(SeccompRule(syscall, action, tuple(variant), ref(f"{here}.syscall"),
                                         _reason(table, ref(here)), logged))
        return tuple(rules)

    def schema(self) -> dict[str, Any]:
        cond = {"type": "object", "additionalProperties": False,
                "required": ["index", "op", "value"],
                "properties": {"index": {"type": "integer", "minimum": 0, "maximum": 5},
                               "op": {"enum": list(ARG_OPS)},
                               "value": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
                               "mask": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}}}
        return {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["syscall"],
            "properties": {"syscall": {"type": "string"}, "action": Action().schema(),
                           "args": {"type": "array", "items": cond, "maxItems": 6},
                           "reason": {"type": "string", "minLength": 1},
                           "log": {"type": "boolean"}}}}


@dataclass(frozen=True)
class Key:
    """One key of a section: its type and a line of documentation."""

    type: ValueType
    doc: str
    merge: str = "replace"   # how `extends` combines it: replace, append, update


LEVEL = Choice(tuple(level.value for level in Level))

SECTIONS: Mapping[str, Mapping[str, Key]] = {
    "policy": {
        "name": Key(Text(), "short name of the component this policy is for"),
        "description": Key(Text(), "one line saying what the component does"),
    },
    "namespaces": {
        "user": Key(Bool(), "new user namespace (needed for the others when not root; default true)"),
        "mount": Key(Bool(), "new mount namespace whose root holds only the granted paths (default true)"),
        "pid": Key(Bool(), "new pid namespace with a small init as PID 1 and a fresh /proc (default true)"),
        "net": Key(Bool(), "new, empty network namespace: only a loopback device that is down (default false)"),
        "ipc": Key(Bool(), "new System V IPC and POSIX message queue namespace (default true)"),
        "uts": Key(Bool(), "new hostname namespace (default true)"),
        "private_tmp": Key(Bool(), "an empty tmpfs on /tmp (needs mount)"),
        "hostname": Key(Text(max_bytes=64), "hostname inside a uts namespace (at most 64 bytes)"),
        "reason": Key(Text(), "why the policy enters no namespace at all (required then)"),
    },
    "filesystem": {
        "read": Key(GrantList("path", optional_flag=True, check=_check_path), "paths it may read (Landlock)", "append"),
        "write": Key(GrantList("path", optional_flag=True, check=_check_path),
                     "paths it may read, write, create and remove in", "append"),
        "execute": Key(GrantList("path", optional_flag=True, check=_check_path), "paths it may read and execute", "append"),
        "hide": Key(GrantList("path", optional_flag=True, check=_check_path),
                    "paths covered by an empty read-only tmpfs, even beneath a granted directory "
                    "(needs namespaces.mount)", "append"),
        "tmpfs": Key(GrantList("path", check=_check_path),
                     "a fresh, empty, writable tmpfs at each path, seen by the sandbox only "
                     "(needs namespaces.mount)", "append"),
    },
    "network": {
        "bind_tcp": Key(PortList(), 'TCP ports it may bind (Landlock ABI 4), or "any"', "append"),
        "connect_tcp": Key(PortList(), 'TCP ports it may connect to (Landlock ABI 4), or "any"', "append"),
        "socket_families": Key(FamilyList(), "address families it may create sockets of (seccomp)", "append"),
    },
    "scopes": {
        "abstract_unix_socket": Key(Bool(), "abstract unix sockets outside the sandbox are out of reach (Landlock ABI 6)"),
        "signal": Key(Bool(), "processes outside the sandbox cannot be signalled (Landlock ABI 6)"),
    },
    "process": {
        "capabilities": Key(GrantList("name"), "capabilities to keep; each needs a reason", "append"),
        "dumpable": Key(Bool(), "allow core dumps and ptrace by the same user (default false)"),
        "no_new_privs": Key(Bool(), "always true; false is rejected"),
        "new_session": Key(Bool(), "setsid(): no controlling terminal (default true; false needs "
                                   "a reason)"),
        "die_with_parent": Key(Bool(), "PR_SET_PDEATHSIG: killed when the parent dies (default true)"),
        "environment": Key(StrList(r"^[A-Za-z_*?][A-Za-z0-9_*?]*$"),
                           "names (or globs) of variables kept from the parent's environment", "append"),
        "set_environment": Key(EnvMap(), "variables set in the child", "update"),
        "fds": Key(IntList(), "file descriptors kept open besides the IPC one (default 0, 1, 2)"),
        "rlimits": Key(RlimitMap(), "resource limits; core is 0 unless set", "update"),
        "stdio": Key(Choice(("pipe", "null", "inherit")),
                     'descriptors 0-2: "pipe" (default: stdin /dev/null, output through pipes the '
                     'launcher reads), "null", or "inherit" the launcher\'s (needs a reason)'),
        "memory_deny_write_execute": Key(Bool(), "PR_SET_MDWE: no memory both writable and "
                                                 "executable, ever (default true)"),
        "reason": Key(Text(), "why the process is dumpable, may map W+X memory, inherits stdio "
                              "or keeps the launcher's session (required then)"),
    },
    "seccomp": {
        "enabled": Key(Bool(), "false turns the syscall filter off (needs a reason)"),
        "reason": Key(Text(), "why the syscall filter is off (required then)"),
        "default_action": Key(Action(allow_allowed=False), "what a syscall not allowed gets: kill_process, log or errno:NAME"),
        "allow": Key(GrantList("syscall"), "syscall names and @groups allowed", "append"),
        "deny": Key(GrantList("syscall"), "syscall names and @groups removed from allow", "append"),
        "rules": Key(RuleList(), "rules with argument conditions", "append"),
    },
    "compatibility": {
        **{m: Key(LEVEL, f"what to do when the kernel lacks part of {m}: hard, soft or best_effort")
           for m in MECHANISMS},
        "landlock_min_abi": Key(Integer(1, 64), "lowest Landlock ABI the policy accepts"),
    },
}

TOP_LEVEL: Mapping[str, Key] = {
    "extends": Key(StrList(), "policy files this one builds on, relative to it", "append"),
}
