"""A policy in plain words: what the component may and may not do, grouped for a reviewer."""

from __future__ import annotations

from dataclasses import dataclass, field

import os

from . import dangerous, paths, syscall_groups
from .model import Grant, Policy, Process
from .variables import bind_port_text
from .written_code import code_from_written_paths


@dataclass
class Explanation:
    """Sections of sentences, each a list of lines: files, network, processes, kernel surface."""

    policy: str
    description: str
    files: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"policy": self.policy, "description": self.description, "files": self.files,
                "sections": self.sections}

    def to_text(self) -> str:
        out = [f"Policy '{self.policy}': {self.description}".rstrip(": "),
               f"  from {' + '.join(self.files)}"]
        for title, lines in self.sections.items():
            out.append("")
            out.append(title)
            out.extend(f"  - {line}" for line in lines)
        return "\n".join(out)


def _grants(grants: tuple[Grant, ...], resolve: bool = False) -> str:
    return ", ".join(g.value + _points_to(g.value, resolve) + (" (if present)" if g.optional else "")
                     + (f" [reason: {g.reason}]" if g.reason else "") for g in grants)


def _points_to(path: str, resolve: bool) -> str:
    """Where a path grant points on this machine when a symlink takes it elsewhere: a launch
    grants the target (`paths.real_grant`), and /usr/lib/ssl/private reads as a place in
    /usr/lib but is /etc/ssl/private."""
    if not resolve:
        return ""
    real = paths.real_grant(path)
    return f" (is {real})" if real != os.path.normpath(path) else ""


def _files(policy: Policy) -> list[str]:
    fs = policy.filesystem
    lines = []
    if fs.read:
        lines.append(f"may read: {_grants(fs.read, resolve=True)}")
    if fs.write:
        lines.append(f"may read, write, create and delete in: {_grants(fs.write, resolve=True)}")
    if fs.execute:
        lines.append(f"may execute: {_grants(fs.execute, resolve=True)}")
    lines.append("may not open anything else (Landlock); files opened before the sandbox stay open")
    if fs.hide:
        lines.append(f"cannot see or touch anything beneath: {_grants(fs.hide, resolve=True)} "
                     "(each covered by an empty read-only tmpfs, whatever Landlock grants above it)")
    tmpfs = [paths.spelled(g.value) for g in fs.tmpfs] + (["/tmp"] if policy.namespaces.private_tmp else [])
    if fs.tmpfs:
        lines.append(f"has a fresh, empty tmpfs only it sees at: {', '.join(g.value for g in fs.tmpfs)} "
                     "(a grant of that very path is the tmpfs, nothing of the host)")
    if policy.namespaces.private_tmp:
        lines.append("sees an empty private /tmp (granted paths under /tmp are bound back in)")
    # Since 12-07: a grant beneath a tmpfs reads as a place in it, but is the host's path.
    bound = [g for cls in (fs.read, fs.write, fs.execute) for g in cls
             if paths.beneath_tmpfs(paths.spelled(g.value), tmpfs) is not None]
    if bound:
        lines.append("SEES THE HOST'S paths beneath its tmpfs, bound in over it: "
                     + ", ".join(dict.fromkeys(g.value for g in bound)))
    if policy.namespaces.mount:
        lines.append("has its own mount namespace: its mounts do not reach the host")
    return lines


def _network(policy: Policy) -> list[str]:
    net, ns = policy.network, policy.namespaces
    lines = []
    if ns.net:
        lines.append("has an empty network namespace: no interface but a loopback that is down")
    families = [f.name + (" including raw sockets" if f.raw else "") + ("" if f.datagram else " (stream only, no UDP)")
                + (" (socketpair only, no socket(2))" if f.socketpair_only else "")
                + (f" [reason: {f.reason}]" if f.reason else "") for f in net.socket_families]
    lines.append(f"may create sockets of: {', '.join(families) or 'no family at all'}; "
                 "any other family gets EAFNOSUPPORT")
    binds = not policy.seccomp.enabled or "bind" in policy.reachable_syscalls
    if not binds:
        # CleanCoin-node's since 12-07: its listeners are bound before it confines itself and
        # keep the network namespace they were made in.
        lines.append("may not bind any socket (the filter refuses bind(2)); sockets bound before "
                     "the sandbox keep the network namespace they were made in")
    for what, ports in (("bind", net.bind_tcp), ("connect to", net.connect_tcp)):
        if what == "bind" and not binds:
            continue
        if ports is None:
            lines.append(f"may {what} any TCP port (not restricted by Landlock)")
        elif ports:
            shown = [bind_port_text(p.value) if what == "bind" else p.value for p in ports]
            lines.append(f"may {what} TCP ports {', '.join(shown)} only")
        else:
            lines.append(f"may not {what} any TCP port")
    if policy.scopes.abstract_unix_socket:
        lines.append("may not connect to abstract unix sockets created outside the sandbox")
    lines.append(_named_unix_sockets(policy))
    if not ns.net and _makes_unix_sockets(policy, "bind"):
        lines.append("MAY bind abstract unix socket names of the host's network namespace, where "
                     "the host's clients of a service not started yet connect to it instead (a "
                     "display's @/tmp/.X11-unix/X<n>): Landlock's scope refuses connect, not bind")
    return lines


def _makes_unix_sockets(policy: Policy, call: str) -> bool:
    """Whether the filter lets it make a unix socket and then make `call` with it."""
    reachable = policy.reachable_syscalls
    whole_family_refused = any(
        r.syscall == "socket" and r.action not in ("allow", "log") and len(r.args) == 1
        and r.args[0].index == 0 and r.args[0].value == 1
        and (r.args[0].op == "eq" or (r.args[0].op == "masked_eq" and r.args[0].mask & 0xFFFFFFFF == 0xFFFFFFFF))
        for r in policy.seccomp.rules)
    return not policy.seccomp.enabled or (
        "socket" in reachable and call in reachable and not whole_family_refused
        and any(f.name == "unix" and not f.socketpair_only for f in policy.network.socket_families))


def _named_unix_sockets(policy: Policy) -> str:
    """Whether it can connect to a named unix socket: Landlock (ABI <= 7) has no right for
    that, so any listening socket its view shows is reachable, in a read-only or execute
    grant too, unless the filter refuses socket(AF_UNIX) or connect(2)."""
    if _makes_unix_sockets(policy, "connect"):
        return ("MAY connect to any named unix socket its view shows, in read-only and execute "
                "grants too (a D-Bus, ssh-agent or display socket there): Landlock has no right "
                "for connect(2) to a named socket")
    return "may not connect to a named unix socket (the filter refuses socket(AF_UNIX) or connect)"


def _runs(policy: Policy) -> frozenset[str]:
    """The syscalls that run: reachable (an unconditional rule decides its syscall, listed or
    not), and with no filter or under a `log` default every dangerous one not refused by a rule
    without args (until 12-07 `explain` listed them as refused there)."""
    reachable = policy.reachable_syscalls
    if policy.seccomp.default_action == "log" or not policy.seccomp.enabled:
        return reachable | (dangerous.DANGEROUS_SYSCALLS - policy.refused_by_rule)
    return reachable


def _processes(policy: Policy) -> list[str]:
    proc, allowed = policy.process, _runs(policy)
    lines = []
    if "execve" in allowed or "execveat" in allowed:
        lines.append("MAY run other programs (execve) where it has execute access")
    else:
        lines.append("may not run other programs (execve is not allowed)")
    if "unshare" in allowed:
        lines.append("MAY create namespaces (unshare, and clone with CLONE_NEW* flags)")
    else:
        lines.append("may not create namespaces (unshare refused; clone with CLONE_NEW* flags "
                     "answers EPERM)")
    if "ptrace" in allowed:
        lines.append("MAY trace other processes (ptrace)")
    else:
        lines.append("may not trace or read the memory of other processes")
    lines.append("is not dumpable: no core dumps, no ptrace attach by the same user"
                 if not proc.dumpable else "IS dumpable: core dumps and same-user ptrace are possible")
    lines.extend(_terminal(proc))
    if policy.scopes.signal:
        lines.append("may not signal processes outside the sandbox")
    elif policy.namespaces.pid:
        lines.append("no signal scope: its pid namespace keeps its signals in (no pid outside it "
                     "can be named, and its process group is its own)")
    else:
        lines.append("MAY signal every process of the same user outside the sandbox (no signal scope)")
    if policy.namespaces.pid:
        lines.append("sees only its own processes (pid namespace, PID 1 is a small init)")
    lines.append("keeps capabilities: " + (_grants(proc.capabilities) or "none")
                 + "; securebits locked; no_new_privs on (setuid binaries gain nothing)")
    limits = ", ".join(f"{r.name}={'unlimited' if r.soft is None else r.soft}" for r in proc.rlimits)
    lines.append(f"resource limits: {limits or 'inherited'}")
    lines.append(f"environment kept: {', '.join(proc.environment) or 'nothing'}; "
                 f"set: {', '.join(f'{k}={v}' for k, v in proc.set_environment) or 'nothing'}")
    lines.extend(code_from_written_paths(policy))
    lines.append(f"file descriptors kept: {', '.join(map(str, proc.fds))} and its IPC socket")
    if proc.die_with_parent:
        lines.append("dies with its parent")
    return lines


#: What a launched process gets on descriptors 0-2, by process.stdio.
_STDIO = {
    "pipe": "descriptors 0-2: stdin /dev/null, stdout and stderr through the launcher "
            "(control characters shown as text)",
    "null": "descriptors 0-2: /dev/null",
    "inherit": "descriptors 0-2 ARE the launcher's: a terminal there is its terminal too "
               "(it can read what is typed and set the modes, which are put back when it ends)",
}


def _terminal(proc: Process) -> list[str]:
    """The session and descriptors 0-2 of a launched process, and the reason a policy gives
    for the risky ones (a process that restricts itself keeps its own session and stdout)."""
    lines = [_STDIO.get(proc.stdio, f"descriptors 0-2: {proc.stdio}")]
    if proc.new_session:
        lines.append("launched in a session of its own (setsid): no controlling terminal")
    else:
        lines.append("STAYS in the launcher's session: the launcher's controlling terminal is its "
                     "own, and it can take the foreground from the operator's shell (job control); "
                     "TIOCSTI (typing into it) and the requests that steer it beyond the run "
                     "(line discipline, exclusive mode, size, foreground) are refused whatever the "
                     "ioctl rules say, and its modes are put back when the program ends")
    if proc.reason and (proc.dumpable or not proc.memory_deny_write_execute or proc.stdio == "inherit"
                        or not proc.new_session):
        lines.append(f"reason given for the process's risky settings: {proc.reason}")
    return lines


def _kernel(policy: Policy) -> list[str]:
    sc = policy.seccomp
    if not sc.enabled:
        return ["NO syscall filter: the whole kernel interface is reachable"]
    listed, allowed = policy.allowed_syscalls, policy.reachable_syscalls
    by_rule = sorted(policy.refused_by_rule & listed)
    added = sorted(policy.allowed_by_rule - listed)
    lines = [f"{len(allowed)} syscalls allowed (from {', '.join(g.value for g in sc.allow)}"
             + (f"; minus {', '.join(g.value for g in sc.deny)}" if sc.deny else "")
             + (f"; minus {', '.join(by_rule)}, answered by the rules below" if by_rule else "")
             + (f"; PLUS {', '.join(added)}, let through by the rules below" if added else "") + ")",
             "any other syscall: " + ("RUNS (log: it is only written to the audit log)"
                                      if sc.default_action == "log" else sc.default_action.replace('_', ' '))]
    granted = sorted(allowed & dangerous.DANGEROUS_SYSCALLS)
    if granted:
        lines.append(f"dangerous syscalls granted: {', '.join(granted)}")
    by_default = sorted((_runs(policy) - allowed) & dangerous.DANGEROUS_SYSCALLS)
    if by_default:
        lines.append(f"dangerous syscalls that RUN under the log default: {', '.join(by_default)}")
    refused = sorted(dangerous.DANGEROUS_SYSCALLS - _runs(policy))
    if refused:
        lines.append(f"refused, among others: {', '.join(refused)}")
    for rule in sc.rules:
        conds = " and ".join(f"arg{c.index} {c.op} {c.value:#x}" + (f" (mask {c.mask:#x})" if c.op == "masked_eq" else "")
                             for c in rule.args)
        lines.append(f"{rule.syscall}: {rule.action} when {conds or 'always'}"
                     + (" (runs, logged)" if rule.action == "log" else "")
                     + ("" if rule.logged else " (not in the denial log)"))
    big = [g for g in syscall_groups.GROUPS if syscall_groups.expand_group(g) <= allowed]
    if big:
        lines.append(f"whole groups allowed: {', '.join(sorted(big))}")
    lines.append("i386 and x32 syscalls kill the process; clone3 answers ENOSYS")
    return lines


def explain(policy: Policy) -> Explanation:
    """Describe a policy for a reviewer."""
    ex = Explanation(policy.name, policy.description, list(policy.files))
    ex.sections["Files"] = _files(policy)
    ex.sections["Network"] = _network(policy)
    ex.sections["Processes"] = _processes(policy)
    ex.sections["Kernel surface"] = _kernel(policy)
    comp = policy.compatibility
    ex.sections["Compatibility"] = [", ".join(f"{m} {lvl.value}" for m, lvl in comp.levels)
                                    + f"; Landlock ABI {comp.landlock_min_abi} or newer"]
    return ex
