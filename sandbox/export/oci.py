"""The OCI runtime seccomp format (`linux.seccomp` of config.json; Docker's and Kubernetes'
`Localhost` profiles are the same JSON): export any policy's filter, import a profile.

Export writes the rule table our own filter is compiled from (`seccomp.rule_table`), entry by
entry in the same order, so an OCI runtime that hands it to libseccomp (runc does) builds the
same filter: the allowed syscalls, the argument rules, the socket families, clone3 answering
ENOSYS, clone with namespace flags and prctl(PR_SET_DUMPABLE) refused. What an OCI profile
cannot say is listed in `Export.notes` (the rest of the policy: paths, ports, namespaces).

Import reads a profile as runc and Docker apply it on x86_64 (Docker's `includes`/`excludes`
by architecture, capability and minimum kernel resolved; names this libseccomp does not know
skipped, as runc skips them) and writes a policy whose filter allows the same: unconditional
allows become `seccomp.allow`, conditional entries `[[seccomp.rules]]`, rules on `socket`
become `network.socket_families`. Everything that differs is said in `Import.notes`.
"""

from __future__ import annotations

import errno as errno_module
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import seccomp, toml_writer
from ..families import AF_MAX, BY_NUMBER
from ..filter_spec import filter_spec
from ..model import ArgCondition, Policy
from .oci_profile import FormatError, check_profile

ARCH = "SCMP_ARCH_X86_64"
#: Docker's names of this machine's architecture (Go's GOARCH) in `includes.arches`.
_GOARCH = ("amd64",)
_OPS = {"eq": "SCMP_CMP_EQ", "ne": "SCMP_CMP_NE", "lt": "SCMP_CMP_LT", "le": "SCMP_CMP_LE",
        "gt": "SCMP_CMP_GT", "ge": "SCMP_CMP_GE", "masked_eq": "SCMP_CMP_MASKED_EQ"}
_OPS_BACK = {v: k for k, v in _OPS.items()}
_UINT64_MAX = 2**64 - 1


@dataclass
class Export:
    profile: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class Import:
    toml: str
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ export

def _action(action: str) -> dict[str, Any]:
    if action.startswith("errno:"):
        return {"action": "SCMP_ACT_ERRNO", "errnoRet": getattr(errno_module, action.split(":", 1)[1])}
    return {"action": {"allow": "SCMP_ACT_ALLOW", "kill_process": "SCMP_ACT_KILL_PROCESS",
                       "log": "SCMP_ACT_LOG"}[action]}


def _arg(cond: ArgCondition) -> dict[str, Any]:
    if cond.op == "masked_eq":
        # OCI (and libseccomp's SCMP_A*) put the mask first: value is the mask, valueTwo the datum.
        return {"index": cond.index, "value": cond.mask, "valueTwo": cond.value, "op": _OPS[cond.op]}
    return {"index": cond.index, "value": cond.value, "op": _OPS[cond.op]}


def export_profile(policy: Policy) -> Export:
    """The policy's syscall filter as an OCI `linux.seccomp` object."""
    if not policy.seccomp.enabled:
        raise FormatError(f"policy '{policy.name}' turns the syscall filter off: leave linux.seccomp "
                          "out of the container's config instead (an empty profile allows everything)")
    table = seccomp.rule_table(filter_spec(policy))
    default = _action(table.default_action)
    profile: dict[str, Any] = {"defaultAction": default["action"]}
    if "errnoRet" in default:
        profile["defaultErrnoRet"] = default["errnoRet"]
    profile["architectures"] = [ARCH]
    entries: list[dict[str, Any]] = []
    foreign = 0
    for rule in table.rules:
        number = seccomp.syscall_number(rule.syscall)
        if number is None or number < 0:
            foreign += 1      # a name of another architecture (_llseek, cacheflush): no rule here
            continue
        args = ([{"index": 0, "value": _UINT64_MAX, "op": "SCMP_CMP_LE"}] if rule.always
                else [_arg(c) for c in rule.args])
        entry = {"names": [rule.syscall], **_action(rule.action)}
        if args:
            entry["args"] = args
        last = entries[-1] if entries else None
        # Unconditional rules with the same action share one entry, as Docker writes them.
        if (not args and last is not None and "args" not in last
                and {k: v for k, v in last.items() if k != "names"} == {k: v for k, v in entry.items() if k != "names"}):
            last["names"].append(rule.syscall)
        else:
            entries.append(entry)
    profile["syscalls"] = entries
    notes = ["only the syscall filter is in an OCI seccomp profile: paths, TCP ports, namespaces, "
             "capabilities, rlimits and Landlock scopes are the runtime's other settings "
             "(`export --format kubernetes` writes a securityContext for some of them)",
             "syscalls of other architectures: the profile lists x86_64 only, and the runtime "
             "kills (libseccomp's bad-architecture action) what our filter kills"]
    if foreign:
        notes.append(f"{foreign} names that exist on other architectures only are left out")
    if table.unresolved:
        notes.append(f"{len(table.unresolved)} group members unknown to libseccomp "
                     f"{seccomp.libseccomp_version()} are left out (they stay denied)")
    return Export(profile, notes)


# ------------------------------------------------------------------------------ reading a profile

@dataclass(frozen=True)
class Entry:
    """One rule of a profile as it applies here: a syscall, an action, its conditions."""

    name: str
    action: str                     # our spelling: allow, kill_process, log, errno:NAME
    args: tuple[ArgCondition, ...]


def _our_action(entry: Mapping[str, Any], default_errno: int, where: str) -> str:
    action = entry.get("action") if "action" in entry else entry.get("defaultAction")
    ret = entry.get("errnoRet", entry.get("defaultErrnoRet", default_errno))
    if action == "SCMP_ACT_ALLOW":
        return "allow"
    if action in ("SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"):
        return "kill_process"
    if action == "SCMP_ACT_LOG":
        return "log"
    if action == "SCMP_ACT_ERRNO":
        name = errno_module.errorcode.get(int(ret if ret is not None else errno_module.EPERM))
        if name is None:
            raise FormatError(f"{where}: errno {ret} has no name")
        return f"errno:{name}"
    if action == "SCMP_ACT_TRACE":
        return "errno:ENOSYS"      # no tracer attached: the kernel answers ENOSYS
    raise FormatError(f"{where}: action {action!r} is not one this importer knows")


def _kernel_at_least(version: str, kernel: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split("-")[0].split(".")[:2] if p.isdigit())
    return parts(kernel) >= parts(version)


def _applies(entry: Mapping[str, Any], caps: frozenset[str], kernel: str) -> str | None:
    """Why Docker would leave this entry out here (None: it applies), as moby's
    profiles/seccomp does: every `includes` must hold, no `excludes` may."""
    inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
    if inc.get("arches") and not set(inc["arches"]) & set(_GOARCH):
        return f"only for {', '.join(inc['arches'])}"
    if exc.get("arches") and set(exc["arches"]) & set(_GOARCH):
        return "not for amd64"
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return f"only with {', '.join(inc['caps'])}"
    if exc.get("caps") and set(exc["caps"]) & caps:
        return f"not with {', '.join(exc['caps'])}"
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], kernel):
        return f"only from Linux {inc['minKernel']}"
    return None


def _conditions(raw: Iterable[Mapping[str, Any]], where: str) -> list[list[ArgCondition]]:
    """The entry's conditions as rules: one rule, or one per condition when an argument is
    tested twice (runc adds those as separate rules, so they act as an OR)."""
    conds = []
    for arg in raw:
        op = _OPS_BACK.get(arg.get("op", ""))
        if op is None:
            raise FormatError(f"{where}: unknown comparison {arg.get('op')!r}")
        index, value = int(arg["index"]), int(arg.get("value", 0))
        if op == "masked_eq":
            conds.append(ArgCondition(index, op, int(arg.get("valueTwo", 0)), value))
        else:
            conds.append(ArgCondition(index, op, value))
    indexes = [c.index for c in conds]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conds]
    return [conds]


@dataclass
class Effective:
    """A profile as it applies on this machine."""

    default_action: str
    entries: list[Entry]
    skipped: list[str]


def effective(profile: Mapping[str, Any], caps: Iterable[str] = (), kernel: str | None = None) -> Effective:
    """The profile's rules that apply on x86_64 with these capabilities and this kernel."""
    check_profile(profile)
    archs = profile.get("architectures")
    arch_map = [a.get("architecture") for a in profile.get("archMap") or []]
    if (archs or arch_map) and ARCH not in (archs or []) + arch_map:
        raise FormatError(f"the profile is for {', '.join(archs or arch_map)}, not x86_64")
    default_errno = int(profile.get("defaultErrnoRet") or errno_module.EPERM)
    default = _our_action(profile, default_errno, "defaultAction")
    if profile["defaultAction"] == "SCMP_ACT_ALLOW":
        raise FormatError("defaultAction SCMP_ACT_ALLOW: a deny list, which a CleanCoin policy "
                          "cannot be (its default action refuses)")
    capset = frozenset(caps)
    kernel = kernel or platform.release()
    entries: list[Entry] = []
    skipped: list[str] = []
    for i, raw in enumerate(profile.get("syscalls") or []):
        where = f"syscalls[{i}]"
        names = list(raw.get("names") or ([raw["name"]] if raw.get("name") else []))
        why = _applies(raw, capset, kernel)
        if why is not None:
            skipped.append(f"{where} ({', '.join(names[:4])}{'...' if len(names) > 4 else ''}): {why}")
            continue
        action = _our_action(raw, errno_module.EPERM, where)
        for conds in _conditions(raw.get("args") or [], where):
            for name in names:
                entries.append(Entry(name, action, tuple(conds)))
    return Effective(default, entries, skipped)


def compile_profile(profile: Mapping[str, Any], caps: Iterable[str] = (), kernel: str | None = None) -> bytes:
    """The BPF an OCI runtime builds from the profile with libseccomp (as runc does: each
    entry's rules added in order, unknown names and rules with the default action skipped)."""
    eff = effective(profile, caps, kernel)
    lib = seccomp._lib()  # noqa: SLF001 - the same libseccomp as our own filters
    flt = lib.SyscallFilter(seccomp.action_value(eff.default_action))
    flt.set_attr(lib.Attr.ACT_BADARCH, lib.KILL_PROCESS)
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    for entry in eff.entries:
        if seccomp.syscall_number(entry.name) is None or entry.action == eff.default_action:
            continue
        flt.add_rule(seccomp.action_value(entry.action), entry.name,
                     *[seccomp._arg(c) for c in entry.args])  # noqa: SLF001
    return seccomp._export(flt, "export_bpf")  # noqa: SLF001


# ------------------------------------------------------------------------------ import

def _socket_families(entries: list[Entry], notes: list[str]) -> tuple[list[int], list[Entry]]:
    """The families socket() is allowed for, from the socket entries (conditions on the
    family only); the other entries are returned as they are."""
    rest = [e for e in entries if e.name != "socket"]
    socket_rules = [e for e in entries if e.name == "socket" and e.action == "allow"]
    other = [e for e in entries if e.name == "socket" and e.action != "allow"]
    if other:
        notes.append("socket entries with actions other than allow are left out: socket() of a "
                     "family not allowed answers EAFNOSUPPORT")
    allowed = []
    for family in range(AF_MAX + 1):
        for rule in socket_rules:
            if any(c.index != 0 for c in rule.args):
                raise FormatError("a socket rule tests more than the family: not expressible "
                                  "as network.socket_families")
            if all(_holds(c, family) for c in rule.args):
                allowed.append(family)
                break
    return [f for f in allowed if f in BY_NUMBER], rest


def _holds(cond: ArgCondition, value: int) -> bool:
    return {"eq": value == cond.value, "ne": value != cond.value, "lt": value < cond.value,
            "le": value <= cond.value, "gt": value > cond.value, "ge": value >= cond.value,
            "masked_eq": value & cond.mask == cond.value}[cond.op]


def import_profile(profile: Mapping[str, Any], name: str, source: str, caps: Iterable[str] = (),
                   kernel: str | None = None) -> Import:
    """A policy file whose filter allows what the profile allows here (see the module docstring)."""
    from ..dangerous import DANGEROUS_SYSCALLS
    eff = effective(profile, caps, kernel)
    notes = [f"left out as Docker would on this machine: {s}" for s in eff.skipped]
    reason = f"imported: {source} allows it"
    unknown = sorted({e.name for e in eff.entries if seccomp.syscall_number(e.name) is None})
    if unknown:
        notes.append(f"{len(unknown)} names unknown to libseccomp {seccomp.libseccomp_version()} on "
                     f"x86_64 skipped, as runc skips them: {', '.join(unknown)}")
    entries = [e for e in eff.entries if seccomp.syscall_number(e.name) is not None]
    families, entries = _socket_families(entries, notes)
    if families:
        entries.append(Entry("socket", "allow", ()))    # narrowed to the families by the filter
    allow: list[str] = []
    rules: list[toml_writer.Section] = []
    for entry in entries:
        if entry.name == "clone3":
            notes.append(f"clone3 ({entry.action}): every CleanCoin filter answers clone3 with ENOSYS")
            continue
        if entry.action == eff.default_action:
            continue
        if not entry.args and entry.action == "allow":
            if entry.name not in allow:
                allow.append(entry.name)
            continue
        section = toml_writer.Section("seccomp.rules", array=True)
        section.add("syscall", entry.name)
        section.add("action", entry.action)
        if entry.args:
            section.add("args", [{"index": c.index, "op": c.op, "value": c.value,
                                  **({"mask": c.mask} if c.op == "masked_eq" else {})} for c in entry.args])
        if entry.action in ("allow", "log") and entry.name in DANGEROUS_SYSCALLS:
            section.add("reason", reason)
        rules.append(section)
    # A policy's filter narrows socketpair to unix and refuses clone with namespace flags and
    # prctl(PR_SET_DUMPABLE, 1) unless told otherwise; say so where the profile allows them.
    # The policy's own key for it, not an unconditional rule beside the filter's derived one
    # (which holds beside such a rule since 12-06, h33).
    dumpable = "prctl" in allow
    if "socketpair" in allow and any(f != 1 for f in families):
        notes.append("socketpair is allowed for unix only (the kernel supports it for unix, and for "
                     "tipc where that module is loaded); the profile allows every family")
    fam_values: list[Any] = []
    for number in families:
        fam = BY_NUMBER[number]
        if fam in ("inet", "inet6"):
            fam_values.append({"family": fam, "raw": True, "reason": f"{reason} (any socket type)"})
        elif fam == "packet":
            fam_values.append({"family": fam, "reason": reason})
        else:
            fam_values.append(fam)
    denied = [BY_NUMBER[n] for n in BY_NUMBER if n not in families]
    if denied and families:
        notes.append(f"socket families not allowed: {', '.join(denied)} (EAFNOSUPPORT; the profile's "
                     f"default action would answer {eff.default_action})")
    allow_values: list[Any] = [{"syscall": n, "reason": reason} if n in DANGEROUS_SYSCALLS else n
                               for n in sorted(allow)]
    policy = toml_writer.Section("policy")
    policy.add("name", name)
    policy.add("description", f"The syscall filter of {source}, imported")
    network = toml_writer.Section("network")
    network.add("socket_families", fam_values, element_comments=[""] * len(fam_values))
    sc = toml_writer.Section("seccomp")
    sc.add("default_action", eff.default_action)
    sc.add("allow", allow_values, element_comments=[""] * len(allow_values))
    process = toml_writer.Section("process", comments=[
        "The profile allows every prctl, PR_SET_DUMPABLE included: a policy's filter refuses",
        "prctl(PR_SET_DUMPABLE, 1) unless the process is dumpable."])
    process.add("dumpable", True)
    process.add("reason", f"{reason}: every prctl, PR_SET_DUMPABLE included")
    header = [f"Imported from {source} by `CleanCoin-sandbox import --format oci`.",
              "Only the syscall filter comes from the profile. Everything else is this format's",
              "default: namespaces on, no filesystem access at all, no TCP. Add [filesystem] grants",
              "(or extend a policy that has them) before you run anything under it.",
              *[f"note: {n}" for n in notes]]
    text = toml_writer.document([], [policy, network, *([process] if dumpable else []), sc, *rules], header)
    _check_loads(text, name)
    return Import(text, notes)


def _check_loads(text: str, name: str) -> None:
    """Fail closed: the policy written must be one the loader takes, or nothing is written
    (the profile was checked already; this catches what this importer itself gets wrong)."""
    import os
    import tempfile

    from ..errors import PolicyError, PolicyErrors
    from ..policy_loader import load_policy
    with tempfile.TemporaryDirectory(prefix="cleancoin-import-") as directory:
        path = os.path.join(directory, f"{name}.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load_policy(path)
        except (PolicyError, PolicyErrors) as exc:
            raise FormatError(f"the policy made from it does not load, so none is written: "
                              f"{str(exc).replace(path, name + '.toml')}") from None
