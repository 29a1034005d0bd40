"""The seccomp step: compile a policy's syscall rules to BPF, and load BPF into a process.

Compiling happens in the parent with libseccomp (through pyseccomp), with its binary-tree
optimization. The child only loads the finished program with the raw seccomp(2) syscall:
importing pyseccomp runs `ldconfig -p` to find the library (about 30 ms), which no child
should pay at start-up, and a child that loads bytes cannot build a different filter than the
one the parent hashed and reported.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Sequence
from dataclasses import field
from functools import lru_cache
from types import ModuleType

from .errors import EnforcementError, PolicyError, SourceRef
from .records import Record, record

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:   # the child only loads BPF and must not pay for the policy model
    import hashlib
    from .model import ArgCondition, SeccompRule, SocketFamily

#: The bits of a 32-bit syscall argument (an int): the kernel ignores the rest of the register.
_LOW32 = 0xFFFFFFFF
_UINT64_MAX = 2**64 - 1


#: The sonames pyseccomp looks up with ctypes.util.find_library, which runs `ldconfig -p`
#: (a fork and exec, ~10 ms each) for every name. Tried first with dlopen; the real lookup
#: remains the fallback.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def _lib() -> ModuleType:
    # Imported lazily: see the module docstring.
    import sys
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    found = {name: soname for name, soname in _SONAMES.items() if _loads(soname)}
    if len(found) == len(_SONAMES) and "ctypes.util" not in sys.modules:
        # pyseccomp imports ctypes.util only for find_library at its import, and ctypes.util
        # imports subprocess, tempfile and random (about 2 ms of every start that compiles a
        # filter). With every soname found, its import gets a stand-in that answers them, for
        # the length of the import only: ctypes.util is then as it was (not imported).
        stand_in = ModuleType("ctypes.util")
        stand_in.find_library = found.get  # type: ignore[attr-defined]
        sys.modules["ctypes.util"] = stand_in
        ctypes.util = stand_in  # type: ignore[attr-defined]
        try:
            import pyseccomp
        finally:
            del sys.modules["ctypes.util"]
            del ctypes.util  # type: ignore[attr-defined]
        return pyseccomp
    from ctypes import util
    original = util.find_library
    util.find_library = lambda name: found.get(name) or original(name)
    try:
        import pyseccomp
    finally:
        util.find_library = original
    return pyseccomp


@lru_cache(maxsize=None)
def syscall_number(name: str) -> int | None:
    """The native syscall number of `name`; None when libseccomp does not know the name.

    libseccomp answers a negative pseudo number for names it knows on other architectures
    only (socketcall on x86_64); those are known names that simply never occur here.
    """
    lib = _lib()
    number = lib.resolve_syscall(lib.Arch.NATIVE, name)
    return None if number == -1 else number


def syscall_name(nr: int) -> str:
    """The native name of syscall number `nr` in this libseccomp's table, or "#nr" for a
    number it does not know (a syscall of a newer kernel): the one lookup of names by number
    (the learn records, the denial monitor's table, a SIGSYS death from the kernel log)."""
    lib = _lib()
    try:
        name = lib.resolve_syscall(lib.Arch.NATIVE, nr)
    except ValueError:
        return f"#{nr}"
    return name.decode() if isinstance(name, bytes) else str(name)


def libseccomp_info() -> tuple[str, int] | None:
    """(version, API level) of libseccomp, asked through ctypes without loading pyseccomp
    (the library pyseccomp loaded, once it is loaded); None if it cannot be asked. The API
    level is what libseccomp found the kernel to support (kill-process, notify, ...)."""
    import sys
    try:
        path = sys.modules["pyseccomp"]._libseccomp_path if "pyseccomp" in sys.modules else _SONAMES["seccomp"]
        lib = ctypes.CDLL(path)
        version = lib.seccomp_version
        version.restype = ctypes.POINTER(ctypes.c_uint * 3)
        major, minor, micro = version().contents
        api = lib.seccomp_api_get
        api.restype = ctypes.c_uint
        return f"{major}.{minor}.{micro}", int(api())
    except (AttributeError, OSError, ValueError):
        return None


def libseccomp_version() -> str:
    """The version of libseccomp, for messages that depend on its syscall table."""
    info = libseccomp_info()
    return info[0] if info is not None else "unknown"


def action_value(action: str) -> int:
    """The libseccomp action code of a policy action string."""
    lib = _lib()
    if action.startswith("errno:"):
        return lib.ERRNO(getattr(errno, action.split(":", 1)[1]))
    return {"allow": lib.ALLOW, "kill_process": lib.KILL_PROCESS, "log": lib.LOG}[action]


@record
class CompiledFilter(Record):
    """A finished BPF program and what a report needs to know about it."""

    bpf: bytes
    sha256: str
    instructions: int
    allowed: int                  # syscalls allowed without conditions
    conditional: int              # syscalls with argument rules
    unresolved: tuple[str, ...]   # group members this libseccomp cannot name


def _arg(cond: "ArgCondition") -> object:
    lib = _lib()
    op = {"eq": lib.EQ, "ne": lib.NE, "lt": lib.LT, "le": lib.LE, "gt": lib.GT, "ge": lib.GE,
          "masked_eq": lib.MASKED_EQ}[cond.op]
    if cond.op == "masked_eq":
        return lib.Arg(cond.index, op, cond.mask, cond.value)
    return lib.Arg(cond.index, op, cond.value)


def _always() -> object:
    # An always-true condition that libseccomp keeps as a condition. An unconditional rule
    # would make libseccomp drop every conditional rule of the same syscall, so an allowed
    # syscall that also has conditional denials (ioctl without TIOCSTI) is allowed this way,
    # and the more specific conditional rules take precedence. The probe battery proves it.
    lib = _lib()
    return lib.Arg(0, lib.LE, _UINT64_MAX)


def _family_rules(families: Iterable["SocketFamily"]) -> list[tuple[str, list["ArgCondition"]]]:
    """Conditions under which socket() and socketpair() may run, per allowed family."""
    # _socket, not socket.py (with selectors and its enum conversions): a filter-cache miss of
    # `CleanCoin-sandbox run` needs only these constants (tests/test_sandbox_startup.py).
    import _socket as socket
    from .families import FAMILIES as SOCKET_FAMILIES   # policy_spec's table, without the format
    from .model import ArgCondition
    rules: list[tuple[str, list[ArgCondition]]] = []
    for fam in families:
        number = SOCKET_FAMILIES[fam.name]
        if fam.name in ("inet", "inet6") and not fam.raw:
            # SOCK_STREAM and SOCK_DGRAM only; the low bits of the type hold the kind, the
            # high bits SOCK_NONBLOCK and SOCK_CLOEXEC. And TCP and UDP only (the protocol, an
            # int, on its low 32 bits): Landlock's TCP port rules hold for IPPROTO_TCP sockets
            # alone, and a stream socket of MPTCP (which falls back to TCP), SMC or SCTP bound
            # and connected to any port (found 12-06, h33).
            # `datagram = false`: stream (TCP) only, no UDP socket at all.
            kinds = ((socket.SOCK_STREAM, socket.IPPROTO_TCP),) + (
                ((socket.SOCK_DGRAM, socket.IPPROTO_UDP),) if fam.datagram else ())
            for kind, protocol in kinds:
                for proto in (0, protocol):
                    rules.append(("socket", [ArgCondition(0, "eq", number),
                                             ArgCondition(1, "masked_eq", kind, 0xF),
                                             ArgCondition(2, "masked_eq", proto, _LOW32)]))
        elif not fam.socketpair_only:
            rules.append(("socket", [ArgCondition(0, "eq", number)]))
        # socketpair_only (unix): no socket(2), so no socket that can be bound to an abstract
        # name of the host's network namespace or connected to a named one; the pair stays.
        if fam.name == "unix":
            rules.append(("socketpair", [ArgCondition(0, "eq", number)]))
    return rules


def _refused_families(entries: Iterable[tuple[str, list["ArgCondition"], SourceRef, bool]]) -> set[int]:
    """The families that a policy's rules (action, conditions, ...) refuse outright: one
    condition, on argument 0, all 32 bits of it (the family is an int)."""
    refused = set()
    for action, conds, _, _ in entries:
        if action == "allow" or action == "log" or len(conds) != 1:
            continue
        cond = conds[0]
        if cond.index == 0 and (cond.op == "eq" or (cond.op == "masked_eq" and cond.mask & _LOW32 == _LOW32)):
            refused.add(cond.value & _LOW32)
    return refused


@record
class FilterSpec(Record):
    """What a filter is built from: the policy's seccomp section, resolved."""

    default_action: str
    allowed: frozenset[str]
    rules: tuple["SeccompRule", ...]
    families: tuple["SocketFamily", ...]
    where: SourceRef
    # clone(2) creates namespaces as unshare(2) does: when unshare is denied, so are those flags.
    deny_namespace_clone: bool = True
    # A policy that wants the process not dumpable: prctl(PR_SET_DUMPABLE, 1) must not undo it.
    deny_dumpable: bool = True
    # No set-user-ID or set-group-ID file of the confined side's making (systemd's
    # RestrictSUIDSGID): the view mounts grants nosuid, the host does not.
    deny_suid_sgid: bool = True
    # A process left in the launcher's session (new_session = false) has the operator's
    # terminal as its controlling one, and one given the launcher's descriptors (stdio =
    # "inherit") holds it: TIOCSTI there types into the operator's shell, and the rest of
    # syscalls.TERMINAL_REFUSED steers the terminal beyond the program's run.
    deny_terminal_input: bool = False


@record
class TableRule(Record):
    """One rule of a finished filter, in the order it is added: what libseccomp compiles, and
    what `CleanCoin-sandbox export` writes out, so that an exported profile is the same rules."""

    action: str                          # allow, kill_process, log, errno:NAME
    syscall: str
    args: tuple["ArgCondition", ...]
    always: bool = False                 # conditional on the always-true condition (see _always)
    where: SourceRef | None = field(default=None, compare=False)   # the policy line behind it
    logged: bool = True                  # an errno the denial log records (a rule's `log`)


@record
class RuleTable(Record):
    """A filter's rules in order, with the counts a report gives."""

    default_action: str
    rules: tuple[TableRule, ...]
    allowed: int                  # syscalls allowed without conditions
    conditional: int              # syscalls with argument rules
    unresolved: tuple[str, ...]   # group members this libseccomp cannot name


def rule_table(spec: FilterSpec) -> RuleTable:
    """The rules of a policy's filter, fixed parts included, in the order they are added.

    Fixed parts, whatever the policy says: syscalls of foreign architectures (i386 through
    `int 0x80`, x32) kill the process (the filter's bad-architecture action, not a rule);
    clone3 answers ENOSYS so that glibc falls back to clone (whose flags, unlike clone3's
    struct, the filter can read); socket() and socketpair() of a family the policy does not
    list answer EAFNOSUPPORT, as systemd's RestrictAddressFamilies does. Derived from the
    policy: clone with a CLONE_NEW* flag answers EPERM unless unshare is allowed, and
    prctl(PR_SET_DUMPABLE, non-zero) answers EPERM unless the policy makes the process dumpable.
    Always: a call that would give a file the set-user-ID or set-group-ID bit (chmod, fchmod,
    fchmodat(2), creat, mknod(at), open and openat with O_CREAT or O_TMPFILE) answers EPERM, and
    openat2, whose mode the filter cannot read, answers ENOSYS (glibc then uses openat).
    """
    from .model import ArgCondition
    default_action, allowed, rules, families, where = (
        spec.default_action, spec.allowed, spec.rules, spec.families, spec.where)

    unresolved = tuple(sorted(n for n in allowed if syscall_number(n) is None))
    plain = {n for n in allowed if syscall_number(n) is not None}
    # (action, conditions, source, logged): derived rules are always logged.
    conditional: dict[str, list[tuple[str, list[ArgCondition], SourceRef, bool]]] = {}
    unconditional: dict[str, tuple[str, SourceRef, bool]] = {}
    for rule in rules:
        if rule.args:
            conditional.setdefault(rule.syscall, []).append((rule.action, list(rule.args), rule.where, rule.logged))
        else:
            unconditional[rule.syscall] = (rule.action, rule.where, rule.logged)
    for name in ("socket", "socketpair"):
        if name in plain:
            plain.discard(name)
            conditional.setdefault(name, [])
            # A policy rule that refuses the call for a whole family takes that family's place
            # (connect-broker.toml: no socket(AF_UNIX), socketpair(AF_UNIX) still): both
            # rules would hold at once, and libseccomp's choice between them is not ours.
            refused = _refused_families(conditional[name])
            for syscall, conds in _family_rules(families):
                if syscall == name and conds[0].value not in refused:
                    conditional[name].append(("allow", conds, where, True))
            conditional[name].append(("errno:EAFNOSUPPORT", [ArgCondition(0, "le", _UINT64_MAX)], where, True))
    plain.discard("clone3")
    conditional.pop("clone3", None)
    unconditional["clone3"] = ("errno:ENOSYS", where, True)
    # Derived rules. Where the default action is the same errno, a denial cannot be written
    # as a rule (libseccomp refuses it): the syscall is then allowed only under the
    # complementary condition, and everything else falls to the default.
    def derive(name: str, refusals: list[list[ArgCondition]], complements: list[list[ArgCondition]]) -> None:
        _derive(name, refusals, complements, allowed, plain, conditional, unconditional, default_action, where)

    if spec.deny_namespace_clone:
        from .syscalls import CLONE_NAMESPACE_FLAGS
        mask = 0
        for flag in CLONE_NAMESPACE_FLAGS:
            mask |= flag
        derive("clone", [[ArgCondition(0, "masked_eq", flag, flag)] for flag in CLONE_NAMESPACE_FLAGS],
               [[ArgCondition(0, "masked_eq", 0, mask)]])
    if spec.deny_dumpable:
        from .syscalls import PR_SET_DUMPABLE
        # prctl's option is an int: the kernel reads the low 32 bits of the register, so the
        # option is tested on those (`eq` saw 0x100000004 as another option, and let
        # PR_SET_DUMPABLE through). The second argument is an unsigned long: all 64 bits.
        option = ArgCondition(0, "masked_eq", PR_SET_DUMPABLE, _LOW32)
        # Under an errno:EPERM default, "any other option" on the low 32 bits: some bit of
        # them differs from PR_SET_DUMPABLE's (libseccomp has no masked not-equal), one rule
        # per bit.
        derive("prctl", [[option, ArgCondition(1, "ne", 0)]],
               [[ArgCondition(0, "masked_eq", (1 << bit) & ~PR_SET_DUMPABLE, 1 << bit)] for bit in range(32)]
               + [[option, ArgCondition(1, "eq", 0)]])
    if spec.deny_terminal_input:
        from .syscalls import TERMINAL_REFUSED
        # Whatever the policy's ioctl rules say (an unconditional `allow` replaced the shipped
        # bases' TIOCSTI refusal): until 12-08 a program kept in the launcher's session pushed
        # "touch FILE\n" into the operator's shell, which ran it once the program ended; until
        # 12-08 (h108) it also took the foreground (TIOCSPGRP) and left the terminal resized, and
        # with an `allow` rule for ioctl left it in N_NULL (every key discarded) and exclusive.
        # The command is an int: its low 32 bits; under an errno:EPERM default, "any other
        # command" is a rule per branch off the commands' bit prefixes (`_outside`).
        own = [conds for action, conds, _, _ in conditional.get("ioctl", []) if action not in _PERMITTING]
        commands = [c for c in TERMINAL_REFUSED
                    if [ArgCondition(1, "masked_eq", c, _LOW32)] not in own]
        if commands:
            derive("ioctl", [[ArgCondition(1, "masked_eq", c, _LOW32)] for c in commands],
                   _outside(1, commands))
    if spec.deny_suid_sgid:
        _suid_sgid_rules(allowed, plain, conditional, unconditional, default_action, where)

    table: list[TableRule] = []

    def add(action: str, name: str, args: list[ArgCondition], ref: SourceRef, always: bool = False,
            logged: bool = True) -> None:
        if action == default_action:
            if args or always:
                raise PolicyError(ref, f"a rule for {name} has the default action {action}, "
                                       "which libseccomp cannot combine with allowing the rest "
                                       f"of {name}; give the rule another action")
            return
        table.append(TableRule(action, name, tuple(args), always, ref, logged))

    for name, (action, ref, logged) in unconditional.items():
        plain.discard(name)
        conditional.pop(name, None)
        if syscall_number(name) is not None:
            add(action, name, [], ref, logged=logged)
    for name in sorted(plain - conditional.keys()):
        add("allow", name, [], where)
    for name, entries in sorted(conditional.items()):
        if syscall_number(name) is None:
            continue
        for action, conds, ref, logged in entries:
            add(action, name, conds, ref, logged=logged)
        if name in plain and any(action != "allow" for action, _, _, _ in entries):
            add("allow", name, [], where, always=True)
        elif name in plain:
            add("allow", name, [], where)

    return RuleTable(default_action, tuple(table), len(plain - conditional.keys()),
                     len(conditional), unresolved)


def _suid_sgid_rules(allowed: frozenset[str], plain: set[str],
                     conditional: dict[str, list[tuple[str, list["ArgCondition"], SourceRef, bool]]],
                     unconditional: dict[str, tuple[str, SourceRef, bool]], default_action: str,
                     where: SourceRef) -> None:
    """The derived rules that keep the set-user-ID and set-group-ID bits out of every mode the
    confined side sets. The grants are mounted nosuid in the view, but the files stay on the
    host's filesystem: a program the component wrote and gave the bit there runs with the
    rights of the component's user (root, for a node run as root) for anyone who reaches it.
    Found 12-06: the wallet process planted a set-user-ID root program in wallets/."""
    from .model import ArgCondition
    from .syscalls import MODE_SETTING_SYSCALLS, O_CREAT, O_TMPFILE_BIT, S_ISGID, S_ISUID
    refusals = suid_sgid_refusals()
    for name, (mode_index, flags_index) in MODE_SETTING_SYSCALLS.items():
        # Under an errno:EPERM default: runs only where no bit is asked for (or nothing is
        # created); the rest falls to the default, the same EPERM.
        complements = [[ArgCondition(mode_index, "masked_eq", 0, S_ISUID | S_ISGID)]]
        if flags_index is not None:
            complements.append([ArgCondition(flags_index, "masked_eq", 0, O_CREAT | O_TMPFILE_BIT)])
        _derive(name, refusals[name], complements, allowed, plain, conditional, unconditional,
                default_action, where)
    if _runs("openat2", allowed, unconditional, default_action, where) is not None:
        plain.discard("openat2")
        conditional.pop("openat2", None)
        unconditional["openat2"] = ("errno:ENOSYS", where, True)


def _runs(name: str, allowed: frozenset[str], unconditional: dict[str, tuple[str, SourceRef, bool]],
          default_action: str, where: SourceRef) -> tuple[str, SourceRef, bool] | None:
    """How a call runs where no derived rule refuses it: (action, source, logged), or None if
    it never runs (refused or killed whatever its arguments). On the allow list; under a rule
    of its own without conditions that lets it run (`allow`, `log`); not listed under a `log`
    default."""
    if name in unconditional:
        action, ref, logged = unconditional[name]
        return (action, ref, logged) if action in _PERMITTING else None
    if name in allowed:
        return ("allow", where, True)
    if default_action in _PERMITTING:
        return (default_action, where, True)
    return None


def _derive(name: str, refusals: list[list["ArgCondition"]], complements: list[list["ArgCondition"]],
            allowed: frozenset[str], plain: set[str],
            conditional: dict[str, list[tuple[str, list["ArgCondition"], SourceRef, bool]]],
            unconditional: dict[str, tuple[str, SourceRef, bool]], default_action: str,
            where: SourceRef) -> None:
    """A derived rule for `name` wherever the call may run (`_runs`): EPERM under each of
    `refusals`; under an errno:EPERM default (libseccomp refuses a rule with the default's
    action) the call's own action under each of `complements` instead, the rest falling to
    the default. A rule of the policy's own without conditions would make libseccomp drop the
    conditional rules beside it: its action becomes the fallback under an always-true
    condition. Until 12-06 (h33) derived rules were written for calls on the allow list only,
    and `{ syscall = "prctl", action = "log" }` let prctl(PR_SET_DUMPABLE, 1) through."""
    from .model import ArgCondition
    how = _runs(name, allowed, unconditional, default_action, where)
    if how is None:
        return
    action, ref, logged = how
    if name in unconditional:
        del unconditional[name]
        conditional[name] = []
        plain.discard(name)
    entries = conditional.setdefault(name, [])
    if default_action == "errno:EPERM":
        entries.extend((action, conds, ref, logged) for conds in complements)
        plain.discard(name)
        return
    entries.extend(("errno:EPERM", conds, where, True) for conds in refusals)
    if action == "allow":
        plain.add(name)              # allowed under the always-true condition (rule_table)
    elif action != default_action:   # a `log` rule under another default
        entries.append((action, [ArgCondition(0, "le", _UINT64_MAX)], ref, logged))


def _outside(index: int, values: Sequence[int]) -> list[list["ArgCondition"]]:
    """Conditions (any of them) under which the low 32 bits of argument `index` are none of
    `values`: walking the values' bits from the top, each branch off their prefixes that no
    value takes is one masked_eq (libseccomp has no "not in"). For one value, one rule per bit."""
    from .model import ArgCondition
    rules: list[list[ArgCondition]] = []
    mask = 0
    for shift in range(31, -1, -1):
        bit = 1 << shift
        taken = {v & (mask | bit) for v in values}
        for prefix in sorted({v & mask for v in values}):
            for branch in (prefix, prefix | bit):
                if branch not in taken:
                    rules.append([ArgCondition(index, "masked_eq", branch, mask | bit)])
        mask |= bit
    return rules


#: Actions under which a syscall runs.
_PERMITTING = ("allow", "log")


def suid_sgid_refusals() -> dict[str, list[list["ArgCondition"]]]:
    """For each call that sets a mode, the conditions (one list per rule, any of them) under
    which it would give a file the set-user-ID or set-group-ID bit: the mode has either bit,
    and for open and openat the flags create a file (O_CREAT or O_TMPFILE). The policy's
    filter answers them EPERM (`_suid_sgid_rules`), and so does a learning run's
    (learn_plan.learning_filter), which lets everything else go on."""
    from .model import ArgCondition
    from .syscalls import MODE_SETTING_SYSCALLS, O_CREAT, O_TMPFILE_BIT, S_ISGID, S_ISUID
    refusals: dict[str, list[list[ArgCondition]]] = {}
    for name, (mode_index, flags_index) in MODE_SETTING_SYSCALLS.items():
        creating = [None] if flags_index is None else [O_CREAT, O_TMPFILE_BIT]
        rules = refusals.setdefault(name, [])
        for flag in creating:
            for bit in (S_ISUID, S_ISGID):
                conds = [ArgCondition(mode_index, "masked_eq", bit, bit)]
                if flag is not None and flags_index is not None:
                    conds.insert(0, ArgCondition(flags_index, "masked_eq", flag, flag))
                rules.append(conds)
    return refusals


def _notified(action: str, syscall: str) -> bool:
    # clone3's ENOSYS is a fixed part of every filter, not a refusal worth a log line.
    return action.startswith("errno:") and syscall != "clone3"


def _build(spec: FilterSpec, notify_errno: bool = False) -> tuple[object, int, int, tuple[str, ...]]:
    """Build the libseccomp filter of a policy from its rule table (`rule_table`).

    With `notify_errno` (the denial log) every refusal with an errno goes to a user
    notification instead, whose supervisor answers the same errno and logs it (`denial_log`).
    """
    table = rule_table(spec)
    lib = _lib()
    notify_default = notify_errno and _notified(table.default_action, "")
    flt = lib.SyscallFilter(lib.NOTIFY if notify_default else action_value(table.default_action))
    flt.set_attr(lib.Attr.ACT_BADARCH, lib.KILL_PROCESS)
    flt.set_attr(lib.Attr.CTL_NNP, 0)        # no_new_privs is its own step
    flt.set_attr(lib.Attr.CTL_OPTIMIZE, 2)   # binary tree of syscall numbers
    for rule in table.rules:
        args = [_always()] if rule.always else [_arg(c) for c in rule.args]
        action = action_value(rule.action)
        # With a notifying default a rule cannot notify too (libseccomp refuses a rule with the
        # default's action): it keeps its errno, enforced and not logged.
        if notify_errno and rule.logged and _notified(rule.action, rule.syscall) and not notify_default:
            action = lib.NOTIFY
        try:
            flt.add_rule(action, rule.syscall, *args)
        except OSError as exc:
            raise PolicyError(rule.where or spec.where, f"libseccomp refused the rule for "
                                                        f"{rule.syscall}: {exc.strerror}") from exc
    return flt, table.allowed, table.conditional, table.unresolved


def _export(flt: object, method: str) -> bytes:
    # libseccomp writes to a file descriptor; a memfd keeps it off the filesystem and out of
    # the way of pipe buffer limits for large filters.
    fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    with open(fd, "w+b") as handle:
        getattr(flt, method)(handle)
        handle.seek(0)
        return handle.read()


def _sha256(data: bytes) -> "hashlib._Hash":
    # CPython's built-in SHA-256 gives the same digest as hashlib's without hashlib loading
    # OpenSSL (~3 ms of every `CleanCoin-sandbox run`); hashlib where it is absent (3.12: _sha2).
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(data)


def rules_only_filter(name: str, rules: Sequence["SeccompRule"]) -> bytes:
    """A filter of `rules` (all for syscall `name`, in the policy's order) and nothing else,
    compiled by libseccomp: a call none of them holds for gets SECCOMP_RET_TRAP, an action no
    policy rule has. For the probe's judge, which asks libseccomp which of several matching
    argument rules the kernel would take (libseccomp orders them by value, not as written)."""
    lib = _lib()
    flt = lib.SyscallFilter(lib.TRAP)
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    for rule in rules:
        flt.add_rule(action_value(rule.action), name, *(_arg(c) for c in rule.args))
    return _export(flt, "export_bpf")


def compile_filter(spec: FilterSpec, notify_errno: bool = False, cached: bool = True) -> CompiledFilter:
    """Compile a filter to BPF, with its hash and counts for the report (`notify_errno`: the
    denial log's form, see `_build`). With `cached`, a checked entry of the package's filter
    cache is taken instead when there is one, and a fresh compile is stored there
    (filter_cache.py: who may write it, what is checked)."""
    if not cached:
        return _compile(spec, notify_errno)
    from . import filter_cache
    name = filter_cache.key(spec, notify_errno)
    if name is not None and (hit := filter_cache.load(name)) is not None:
        return hit
    compiled = _compile(spec, notify_errno)
    if name is not None:
        filter_cache.store(name, compiled)
    return compiled


def _compile(spec: FilterSpec, notify_errno: bool) -> CompiledFilter:
    flt, allowed, conditional, unresolved = _build(spec, notify_errno)
    bpf = _export(flt, "export_bpf")
    return CompiledFilter(bpf, _sha256(bpf).hexdigest(), len(bpf) // 8,
                          allowed, conditional, unresolved)


def pseudo_code(spec: FilterSpec) -> str:
    """libseccomp's readable pseudo code of the filter (`explain --pfc`)."""
    flt, _, _, _ = _build(spec)
    return _export(flt, "export_pfc").decode()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_filter(bpf: bytes) -> None:
    """Install a BPF program in this process (all threads, TSYNC). Needs no_new_privs first."""
    if not bpf or len(bpf) % 8:
        raise EnforcementError("seccomp", f"malformed BPF program of {len(bpf)} bytes")
    from . import syscalls
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        syscalls.check(syscalls.syscall(syscalls.SYS_SECCOMP, syscalls.SECCOMP_SET_MODE_FILTER,
                                        syscalls.SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)),
                       "seccomp(SET_MODE_FILTER)")
    except OSError as exc:
        raise EnforcementError("seccomp", f"seccomp(SET_MODE_FILTER) failed: {exc.strerror}") from None
