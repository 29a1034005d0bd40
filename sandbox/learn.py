"""`CleanCoin-sandbox learn`: run a program (or collect what components recorded) and write
the policy it needs, with a diff against the current one.

The recording is `learn_recorder`'s (a learning plan: seccomp user notifications, no
Landlock). Here the records become an `Observation` (syscalls with counts, paths with the kind
of access, sockets, bound and connected addresses), and the observation a policy file:

- [seccomp] allow: exactly the syscalls used (clone3 aside: every filter answers it ENOSYS);
  a dangerous one gets a reason that says it was learned and asks for review;
- [filesystem]: every path opened, exec'd, created or removed, as a grant of the right class:
  covered by a current grant, that grant (as written, with its variables); otherwise the path
  with the launch's variable values put back as ${variables}, and three or more new files of
  one directory as that directory. Created and removed files are write grants on their
  directory. Paths only looked up (stat, access) are listed in a comment, not granted;
- [network]: the socket families used; the TCP ports bound (and connected, when the current
  policy lists ports), with ${port}-style variables put back;
- everything that is not learned (namespaces, process, scopes, compatibility, argument rules)
  as the current policy has it.

The diff says what the current policy grants that was never used, and what was used that it
does not grant (the exit status is 1 then: the current policy would break the program).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import dangerous, launcher, paths, seccomp, toml_writer
from .families import BY_NUMBER
from .model import Grant, Policy
from .policy_dump import dump
from .printable import non_ascii, printable, visible
from .variables import default_values, substitute

_CLASS = {"read": "read", "lookup": "lookup", "write": "write", "create": "write", "remove": "write",
          "exec": "execute"}
_COVERS = {"read": ("read", "write", "execute"), "write": ("write",), "execute": ("execute",)}
_PORT_VARIABLES = ("port", "rpcport", "ipcport")
_PATH_VARIABLES = ("walletdir", "datadir", "tmpdir", "prefix", "base_prefix")
_REVIEW = "learned: used while learning; REVIEW and say why it is needed"


@dataclass
class Observation:
    """Everything the records of one policy say, merged."""

    policy: str = ""
    syscalls: dict[str, int] = field(default_factory=dict)       # name -> calls
    paths: dict[str, set[str]] = field(default_factory=dict)     # path -> accesses
    sockets: set[tuple[int, int]] = field(default_factory=set)   # (family, type)
    binds: set[tuple[int, str]] = field(default_factory=set)     # (family, port or path)
    connects: set[tuple[int, str]] = field(default_factory=set)
    variables: dict[str, str] = field(default_factory=dict)
    records: int = 0
    processes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.syscalls

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "records": self.records, "processes": self.processes,
                "syscalls": dict(sorted(self.syscalls.items())),
                "paths": {p: sorted(a) for p, a in sorted(self.paths.items())},
                "sockets": [{"family": BY_NUMBER.get(f, str(f)), "type": t} for f, t in sorted(self.sockets)],
                "bind": [{"family": BY_NUMBER.get(f, str(f)), "address": a} for f, a in sorted(self.binds)],
                "connect": [{"family": BY_NUMBER.get(f, str(f)), "address": a} for f, a in sorted(self.connects)],
                "errors": self.errors}


def read_records(files: Iterable[str], policy: str | None = None) -> Observation:
    """Merge record files (of one policy, when `policy` is given)."""
    obs = Observation(policy or "")
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            obs.errors.append(f"{path}: {exc.strerror}")
            continue
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                continue       # a line cut short when the recorder was killed (or nested too deep)
        if not records or records[0].get("t") != "header":
            continue
        header = records[0]
        if policy is not None and header.get("policy") != policy:
            continue
        obs.policy = str(header.get("policy", obs.policy))
        obs.records += 1
        obs.processes += 1
        # Each process has its own ${datadir}, ports ...: its paths and ports are kept in
        # their written form (${datadir}/debug.log), so that processes of many launches merge.
        own = {str(k): str(v) for k, v in dict(header.get("variables") or {}).items()}
        for name, value in own.items():
            obs.variables.setdefault(name, value)
        counts: dict[int, int] = {}
        for record in records[1:]:
            kind = record.get("t")
            if kind == "syscall":
                counts.setdefault(int(record["nr"]), 1)
            elif kind == "counts":
                for nr, n in record["counts"].items():
                    counts[int(nr)] = max(counts.get(int(nr), 0), int(n))
            elif kind == "path":
                if _unwritable(obs, str(record["path"])):
                    continue
                written = _with_variables(os.path.normpath(str(record["path"])), own)
                obs.paths.setdefault(written, set()).add(str(record["access"]))
            elif kind == "socket":
                obs.sockets.add((int(record["family"]), int(record["type"])))
            elif kind in ("bind", "connect", "sendto"):
                if "port" in record:
                    address = _port_text(str(record["port"]), own)
                elif "path" in record:
                    if _unwritable(obs, str(record["path"])):
                        continue
                    address = _with_variables(str(record["path"]), own)
                else:
                    address = "@" + str(record.get("abstract", ""))
                (obs.binds if kind == "bind" else obs.connects).add((int(record["family"]), address))
            elif kind == "error":
                obs.errors.append(f"{os.path.basename(path)}: recorder: {record.get('error')}")
        for nr, n in counts.items():
            name = seccomp.syscall_name(nr)
            obs.syscalls[name] = obs.syscalls.get(name, 0) + n
    return obs


def _unwritable(obs: Observation, path: str) -> bool:
    """A path the program chose that no policy may hold (control or format characters, not
    UTF-8: sandbox/printable.py) is left out of what is learned, with a warning: written into
    the learned file it made that file unloadable (or, before the loader refused them, an
    escape sequence for the terminal of whoever reads it). Since 12-07 a path outside ASCII
    too: the loader refuses it (a lookalike prints as another path); such a path is given at
    launch with --var."""
    if printable(path) and non_ascii(path) < 0:
        return False
    note = f"a path no policy can hold was used and is not granted: {visible(path)[:300]}"
    if note not in obs.errors:
        obs.errors.append(note)
    return True


def record_files(directory: str) -> list[str]:
    """The record files in a learn directory."""
    try:
        return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".jsonl"))
    except OSError:
        return []


# ------------------------------------------------------------------------------ the comparison

@dataclass(frozen=True)
class _GrantRef:
    written: str          # as the policy writes it, normalised: ${walletdir}, /usr/lib
    real: str             # filled with this learning's values and resolved
    cls: str
    grant: Grant | None

    def covers(self, path: str, real: str) -> bool:
        """Whether the grant shows `path` (written form) or its resolved host path."""
        if path.startswith("${"):
            return paths.beneath(path, self.written)
        return paths.beneath(real, self.real) or paths.beneath(path, self.real)


@dataclass
class LearnDiff:
    """What the current policy grants that was never used, and what was used that it does not."""

    syscalls_allowed: int = 0
    syscalls_used: int = 0
    unused_syscalls: list[str] = field(default_factory=list)
    missing_syscalls: list[str] = field(default_factory=list)
    answered_by_rules: list[str] = field(default_factory=list)
    unused_paths: list[str] = field(default_factory=list)
    missing_paths: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)
    unused_families: list[str] = field(default_factory=list)
    missing_families: list[str] = field(default_factory=list)
    unused_ports: list[str] = field(default_factory=list)
    missing_ports: list[str] = field(default_factory=list)

    def used_not_granted(self) -> bool:
        return bool(self.missing_syscalls or self.missing_paths or self.missing_families or self.missing_ports)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_text(self, policy: str) -> str:
        lines = [f"syscalls: {self.syscalls_allowed} allowed by '{policy}', {self.syscalls_used} used"]
        sections = (
            ("used but NOT granted (the current policy would refuse these)", [
                ("syscalls", self.missing_syscalls), ("paths", self.missing_paths),
                ("socket families", self.missing_families), ("TCP ports", self.missing_ports)]),
            ("granted but never used", [
                ("syscalls", self.unused_syscalls), ("paths", self.unused_paths),
                ("socket families", self.unused_families), ("TCP ports", self.unused_ports)]),
        )
        for title, parts in sections:
            lines.append(title + ":")
            shown = False
            for name, items in parts:
                if items:
                    shown = True
                    lines.append(f"  {name} ({len(items)}): {', '.join(items)}")
            if not shown:
                lines.append("  nothing")
        if self.answered_by_rules:
            lines.append(f"used and answered by an argument-free rule: {', '.join(self.answered_by_rules)}")
        if self.looked_up:
            lines.append(f"looked up only (stat, access; not granted): {len(self.looked_up)} paths")
        return "\n".join(lines)


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return path


def _links_on_the_way(path: str) -> list[str]:
    """Every symlink met while resolving `path` (where it lies, as the view must show it):
    /lib64/ld-linux-x86-64.so.2 passes /lib64 and /usr/lib64/ld-linux-x86-64.so.2."""
    found: list[str] = []
    pending = [c for c in path.split("/") if c]
    pending.reverse()
    current = "/"
    hops = 0
    while pending and hops < 40:
        part = pending.pop()
        if part in (".", ""):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            hops += 1
            found.append(candidate)
            target = os.readlink(candidate)
            pending.extend(reversed([c for c in target.split("/") if c]))
            current = "/" if target.startswith("/") else current
        else:
            current = candidate
    return found


def _current_grants(policy: Policy, values: Mapping[str, str]) -> list[_GrantRef]:
    out = []
    for cls in ("read", "write", "execute"):
        for grant in getattr(policy.filesystem, cls):
            try:
                filled = os.path.normpath(substitute(grant.value, values, grant.where))
            except Exception:  # noqa: BLE001 - a variable without a value: the grant stays unused
                continue
            out.append(_GrantRef(_norm_written(grant.value), _real(filled), cls, grant))
    return out


def _norm_written(text: str) -> str:
    return os.path.normpath(text) if text.startswith("/") else text.rstrip("/")


def _tmpfs(policy: Policy, values: Mapping[str, str]) -> list[str]:
    """The private tmpfs paths, both as written and filled."""
    out = []
    for grant in policy.filesystem.tmpfs:
        out.append(_norm_written(grant.value))
        try:
            out.append(os.path.normpath(substitute(grant.value, values, grant.where)))
        except Exception:  # noqa: BLE001
            continue
    if policy.namespaces.private_tmp:
        out.append("/tmp")
    return out


def _with_variables(path: str, values: Mapping[str, str]) -> str:
    """The path with the longest matching variable value put back as ${name}."""
    best = ("", "")
    for name in _PATH_VARIABLES:
        value = values.get(name, "")
        if value and value != "/" and paths.beneath(path, value) and len(value) > len(best[1]):
            best = (name, value)
    if not best[0]:
        return path
    return "${" + best[0] + "}" + path[len(best[1]):]


def _fill(path: str, values: Mapping[str, str]) -> str:
    for name in _PATH_VARIABLES:
        token = "${" + name + "}"
        if path.startswith(token) and values.get(name):
            return values[name] + path[len(token):]
    return path


def _port_text(port: str, values: Mapping[str, str]) -> str:
    for name in _PORT_VARIABLES:
        if values.get(name) == port:
            return "${" + name + "}"
    return port


@dataclass
class Learned:
    """The observation, the learned policy's text and the diff against the current policy."""

    policy: str
    observation: Observation
    toml: str
    diff: LearnDiff
    program_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "program_status": self.program_status,
                "observation": self.observation.to_dict(), "diff": self.diff.to_dict(), "toml": self.toml}

    def to_text(self) -> str:
        obs = self.observation
        head = (f"learned from {obs.processes} process(es) of policy '{self.policy}': "
                f"{len(obs.syscalls)} syscalls, {len(obs.paths)} paths, {len(obs.sockets)} socket kinds, "
                f"{len(obs.binds)} bound and {len(obs.connects)} connected addresses")
        if self.program_status is not None:
            head += f"; the program {launcher.describe_status(self.program_status)}"
        lines = [head, self.diff.to_text(self.policy)]
        lines.extend(f"warning: {e}" for e in obs.errors)
        return "\n".join(lines)


def learned_policy(policy: Policy, obs: Observation) -> tuple[str, LearnDiff]:
    """The policy file the observation asks for, and the diff against `policy`."""
    values = {**default_values(), **obs.variables}
    diff = LearnDiff()
    grants = _current_grants(policy, values)
    tmpfs = _tmpfs(policy, values)
    used_grants: dict[str, set[str]] = {}     # written -> classes used
    new: dict[str, set[str]] = {"read": set(), "write": set(), "execute": set()}
    looked_up = []
    for path, accesses in sorted(obs.paths.items()):
        if path.startswith("/proc/") and path.split("/")[2].isdigit():
            path = "/proc/self/" + "/".join(path.split("/")[3:])
        for access in accesses:
            cls = _CLASS.get(access, "read")
            # Creating or removing a file is a right on its directory (a variable's own root,
            # ${datadir} made or removed, stays itself: its parent is no grant of the policy).
            target = (os.path.dirname(path) or path) if access in ("create", "remove") else path
            if target.startswith("${") and "/" not in target and path == target:
                target = path
            if cls == "lookup":
                looked_up.append(path)
                continue
            variable = target.startswith("${")
            real = target if variable else _real(target)
            # The symlinks on the way must be in the view too (the /lib64 -> usr/lib64 link of
            # the dynamic loader): any grant that shows one of them is used.
            for link in ([] if variable else _links_on_the_way(target)):
                shown = next((g for g in grants if g.covers(link, link)
                              or g.covers(os.path.dirname(link), os.path.dirname(link))), None)
                if shown is not None:
                    used_grants.setdefault(shown.written, set()).add(shown.cls)
            cover = next((g for g in grants if g.cls in _COVERS[cls] and g.covers(target, real)), None)
            if cover is not None:
                used_grants.setdefault(cover.written, set()).add(cover.cls)
            elif not any(paths.beneath(target, t) for t in tmpfs):   # not a private tmpfs
                new[cls].add(target)
    diff.looked_up = sorted(set(looked_up))
    # Three or more new files of one directory of the launch's own (beneath a path variable:
    # ${datadir}/blocks): grant the directory. A host directory is never granted for files
    # in it: four harmless reads in /etc granted /etc/shadow and the SSH host keys with them,
    # and writes to /dev/null, /dev/tty and /dev/full all of /dev.
    for cls, found in new.items():
        by_dir: dict[str, list[str]] = {}
        for path in found:
            by_dir.setdefault(os.path.dirname(path), []).append(path)
        collapsed = set()
        for folder, items in by_dir.items():
            own = _with_variables(folder, values).startswith("${") and folder not in ("/", "/tmp")
            collapsed |= {folder} if len(items) >= 3 and own else set(items)
        new[cls] = {p if p.startswith("${") else _with_variables(p, values) for p in collapsed}
    diff.missing_paths = sorted(f"{cls} {p}" for cls, found in new.items() for p in found)
    diff.unused_paths = sorted(f"{g.cls} {g.grant.value if g.grant else g.written}" for g in grants
                               if g.written not in used_grants)

    # Syscalls
    used = {n for n in obs.syscalls if n != "clone3" and not n.startswith("#")}
    # Names that exist on other architectures only (_llseek) have no number here: not a grant.
    allowed = {n for n in policy.reachable_syscalls
               if n != "clone3" and (seccomp.syscall_number(n) if seccomp.syscall_number(n) is not None else -1) >= 0}
    rules = {r.syscall: r.action for r in policy.seccomp.rules if not r.args}
    diff.syscalls_allowed = len(allowed)
    diff.syscalls_used = len(used)
    diff.answered_by_rules = sorted(f"{n} -> {rules[n]}" for n in used if n in rules and n not in allowed)
    diff.missing_syscalls = sorted(n for n in used - allowed if n not in rules)
    diff.unused_syscalls = sorted(allowed - used)

    # Network
    families = {f for f, _ in obs.sockets}
    raw = {f for f, t in obs.sockets if f in (socket.AF_INET, socket.AF_INET6) and t not in (1, 2)}
    current_families = {f.name: f for f in policy.network.socket_families}
    names = sorted(BY_NUMBER.get(f, f"#{f}") for f in families)
    diff.missing_families = sorted(n for n in names if n not in current_families)
    diff.unused_families = sorted(n for n in current_families if n not in names)
    inet = (socket.AF_INET, socket.AF_INET6)
    bound = sorted({a for f, a in obs.binds if f in inet}, key=str)
    connected = sorted({a for f, a in obs.connects if f in inet}, key=str)
    for key, seen, current in (("bind", bound, policy.network.bind_tcp), ("connect", connected, policy.network.connect_tcp)):
        if current is None:
            continue
        granted = {g.value for g in current}
        diff.missing_ports += [f"{key} {p}" for p in seen if p not in granted]
        diff.unused_ports += [f"{key} {p}" for p in sorted(granted) if p not in seen]
    for f, address in sorted(obs.connects | obs.binds):
        if f == socket.AF_UNIX and address.startswith(("/", "${")):
            (new["write"] if (f, address) in obs.binds else new["read"]).add(address)

    text = _write(policy, obs, values, used_grants, new, names, raw, current_families, bound, connected, diff)
    return text, diff


def _write(policy: Policy, obs: Observation, values: Mapping[str, str], used_grants: dict[str, set[str]],
           new: dict[str, set[str]], families: list[str], raw: set[int], current_families: dict[str, Any],
           bound: list[str], connected: list[str], diff: LearnDiff) -> str:
    data = dump(policy)
    sections: list[toml_writer.Section] = []
    meta = toml_writer.Section("policy")
    meta.add("name", policy.name)
    meta.add("description", (policy.description or policy.name) + " (learned)")
    sections.append(meta)

    ns = toml_writer.Section("namespaces", comments=["Not learned: as the current policy has it."])
    for key in ("user", "mount", "pid", "net", "ipc", "uts", "private_tmp"):
        ns.add(key, data["namespaces"][key])
    ns.add("hostname", data["namespaces"]["hostname"])
    if policy.namespaces.reason:
        ns.add("reason", policy.namespaces.reason)
    sections.append(ns)

    fs = toml_writer.Section("filesystem")
    by_written = {g.value: g for cls in ("read", "write", "execute") for g in getattr(policy.filesystem, cls)}
    for cls in ("read", "write", "execute"):
        items: list[Any] = []
        notes: list[str] = []
        for grant in getattr(policy.filesystem, cls):
            if cls in used_grants.get(_norm_written(grant.value), set()):
                items.append(_grant_value(grant))
                notes.append("")
        for path in sorted(new[cls]):
            if path in by_written and cls in used_grants.get(_norm_written(path), set()):
                continue
            filled = _fill(path, values)
            exists = os.path.lexists(filled)
            item: Any = path
            if (cls == "write" and dangerous.is_dangerous_write(filled)) or not exists:
                item = {"path": path, **({"optional": True} if not exists else {}),
                        **({"reason": _REVIEW} if cls == "write" and dangerous.is_dangerous_write(filled) else {})}
            items.append(item)
            broad = filled.count("/") <= 1 and os.path.isdir(filled)
            notes.append("new: used while learning" + ("; a directory near the root: the grant covers "
                                                      "everything beneath it" if broad else "")
                         + ("" if exists else "; it did not exist (a failed open)"))
        if items:
            fs.add(cls, items, element_comments=notes)
    for key in ("hide", "tmpfs"):
        grants = getattr(policy.filesystem, key)
        if grants:
            fs.add(key, [_grant_value(g) for g in grants], "Not learned: as the current policy has it.")
    fs.comments = []
    if diff.unused_paths:
        fs.comments.append("Granted by the current policy, never used while learning (left out): "
                           + ", ".join(diff.unused_paths))
    if diff.looked_up:
        shown = diff.looked_up[:20]
        fs.comments.append("Looked up only (stat, access), not granted: " + ", ".join(shown)
                           + (f" and {len(diff.looked_up) - len(shown)} more" if len(diff.looked_up) > 20 else ""))
    sections.append(fs)

    net = toml_writer.Section("network")
    fam_items: list[Any] = []
    for name in families:
        number = next((n for n, v in BY_NUMBER.items() if v == name), -1)
        current = current_families.get(name)
        reason = current.reason if current is not None and current.reason else _REVIEW
        if number in raw:
            fam_items.append({"family": name, "raw": True, "reason": reason})
        elif name in dangerous.DANGEROUS_FAMILIES:
            fam_items.append({"family": name, "reason": reason})
        else:
            fam_items.append(name)
    net.add("socket_families", fam_items)
    for key, seen, current in (("bind_tcp", bound, policy.network.bind_tcp),
                               ("connect_tcp", connected, policy.network.connect_tcp)):
        if current is None:
            net.add(key, "any", f"Kept as the current policy has it; used while learning: "
                                f"{', '.join(seen) or 'none'}")
        else:
            net.add(key, [int(p) if p.isdigit() else p for p in seen])
    sections.append(net)

    scopes = toml_writer.Section("scopes", comments=["Not learned: as the current policy has it."])
    for key, value in data["scopes"].items():
        scopes.add(key, value)
    sections.append(scopes)

    proc = toml_writer.Section("process", comments=["Not learned: as the current policy has it."])
    p = data["process"]
    if p["capabilities"]:
        proc.add("capabilities", p["capabilities"])
    for key in ("dumpable", "new_session", "die_with_parent", "stdio", "memory_deny_write_execute"):
        proc.add(key, p[key])
    proc.add("environment", p["environment"])
    if p["set_environment"]:
        proc.add("set_environment", p["set_environment"])
    proc.add("fds", p["fds"])
    if p["reason"]:
        proc.add("reason", p["reason"])
    sections.append(proc)
    limits = toml_writer.Section("process.rlimits")
    for name, limit in p["rlimits"].items():
        limits.add(name, limit["soft"] if limit["soft"] == limit["hard"] else limit)
    sections.append(limits)

    sc = toml_writer.Section("seccomp")
    used = sorted(n for n in obs.syscalls if n != "clone3" and not n.startswith("#"))
    if not policy.seccomp.enabled:
        sc.add("enabled", False)
        sc.add("reason", policy.seccomp.reason or "off in the current policy")
    sc.add("default_action", policy.seccomp.default_action)
    if policy.seccomp.enabled and policy.seccomp.default_action == "log":
        sc.add("reason", policy.seccomp.reason or _REVIEW)
    allow = [{"syscall": n, "reason": _REVIEW} if n in dangerous.DANGEROUS_SYSCALLS else n for n in used]
    sc.add("allow", allow, f"The {len(used)} syscalls used while learning ({diff.syscalls_allowed} were "
                           f"allowed). clone3 is left out: every filter answers it ENOSYS.",
           element_comments=[f"{obs.syscalls[n]}x" for n in used])
    sections.append(sc)
    for rule in data["seccomp"]["rules"]:
        section = toml_writer.Section("seccomp.rules", array=True)
        section.add("syscall", rule["syscall"])
        section.add("action", rule["action"])
        if rule["args"]:
            section.add("args", rule["args"])
        if rule.get("reason"):
            section.add("reason", rule["reason"])
        sections.append(section)
    comp = toml_writer.Section("compatibility")
    for key, value in data["compatibility"].items():
        comp.add(key, value)
    sections.append(comp)
    header = [f"Learned by `CleanCoin-sandbox learn` from {obs.processes} process(es) under policy "
              f"'{policy.name}' ({', '.join(os.path.basename(f) for f in policy.files)}).",
              "Review every line before use: what the program did not do while learning is not here.",
              "Variables put back: " + ", ".join(f"${{{k}}}={v}" for k, v in sorted(values.items())
                                               if k in (*_PATH_VARIABLES, *_PORT_VARIABLES))]
    return toml_writer.document([], sections, header)


def _grant_value(grant: Grant) -> Any:
    if not grant.optional and not grant.reason:
        return grant.value
    out: dict[str, Any] = {"path": grant.value}
    if grant.optional:
        out["optional"] = True
    if grant.reason:
        out["reason"] = grant.reason
    return out


# ------------------------------------------------------------------------------ running

class _Progress:
    """Counts what the record files hold so far, for a line on stderr now and then."""

    def __init__(self, directory: str, say: Callable[[str], None] | None) -> None:
        self.directory, self.say = directory, say
        self.last = ""
        self.at = 0.0

    def tick(self, force: bool = False) -> None:
        if self.say is None or (not force and time.monotonic() - self.at < 0.5):
            return
        self.at = time.monotonic()
        counts = {"syscall": 0, "path": 0, "socket": 0, "bind": 0, "connect": 0}
        for path in record_files(self.directory):
            try:
                with open(path, encoding="utf-8") as handle:
                    for line in handle:
                        kind = line[7:line.find('"', 7)] if line.startswith('{"t": "') else ""
                        if kind in counts:
                            counts[kind] += 1
            except OSError:
                continue
        text = (f"{counts['syscall']} syscalls, {counts['path']} path accesses, {counts['socket']} socket "
                f"kinds, {counts['bind'] + counts['connect']} addresses so far")
        if text != self.last:
            self.last = text
            self.say(text)


def learn_program(policy: Policy, variables: Mapping[str, str], command: Sequence[str],
                  progress: Callable[[str], None] | None = None) -> Learned:
    """Run `command` under a learning plan of `policy`; the learned policy and the diff."""
    from .learn_plan import learning_plan
    directory = tempfile.mkdtemp(prefix="cleancoin-learn-")
    try:
        plan = learning_plan(launcher.prepare(policy, variables), policy, directory,
                             {**default_values(), **variables})
        child = launcher.spawn(plan, list(command), raw_output=True)
        ticker = _Progress(directory, progress)
        while child.poll() is None:
            ticker.tick()
            time.sleep(0.1)
        status = child.status
        child.wait()
        if child.output is not None:
            child.output.join()
        _await_end(directory)
        ticker.tick(force=True)
        obs = read_records(record_files(directory), policy.name)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    text, diff = learned_policy(policy, obs)
    return Learned(policy.name, obs, text, diff, status)


def _await_end(directory: str, timeout: float = 2.0) -> None:
    """Give the recorders a moment to write their last counts (one that shared the program's
    pid namespace is gone already: its lines up to then are there)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        size = sum(os.path.getsize(f) for f in record_files(directory))
        ended = all(_ended(f) for f in record_files(directory))
        if ended or size == last:
            return
        last = size
        time.sleep(0.1)


def _ended(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 64))
            return b'"end"' in handle.read()
    except OSError:
        return True


def learn_from(policy: Policy, directory: str) -> Learned:
    """What components recorded in `directory` (CleanCoin-node -sandboxlearn=DIR) under `policy`."""
    obs = read_records(record_files(directory), policy.name)
    text, diff = learned_policy(policy, obs)
    return Learned(policy.name, obs, text, diff)
