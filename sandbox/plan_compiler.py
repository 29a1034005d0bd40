"""Policy + launch variables + this kernel -> a Plan (see `plan`).

Variables are filled, paths checked, Landlock rights cut to the kernel's ABI as the
compatibility level allows, and the seccomp filter compiled; anything the kernel cannot carry
at the policy's level is refused here, in the parent, before fork.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from . import dangerous, landlock, seccomp
from .capabilities import capability_number
from .environment import scrub
from .errors import EnforcementError, PolicyError, SourceRef
from .kernel import KernelFeatures
from .model import Grant, Level, Policy, Status
from .plan import Plan
from .policy_spec import RLIMITS
from .report import MechanismReport
from .variables import default_values, substitute


def _paths(grants: tuple[Grant, ...], values: Mapping[str, str], *, writes: bool) -> list[tuple[str, Grant]]:
    out = []
    for grant in grants:
        path = substitute(grant.value, values, grant.where)
        if not os.path.isabs(path):
            raise PolicyError(grant.where, f"'{path}' is not an absolute path")
        path = os.path.normpath(path)
        if writes and dangerous.is_dangerous_write(path) and not grant.reason:
            raise PolicyError(grant.where, f"'{grant.value}' resolves to '{path}': write access "
                                           "there is a dangerous grant and needs a reason")
        if not grant.optional and not os.path.exists(path):
            raise PolicyError(grant.where, f"granted path '{path}' does not exist "
                                           "(mark it optional = true if that is expected)")
        out.append((path, grant))
    return out


def _ports(grants: tuple[Grant, ...] | None, values: Mapping[str, str]) -> list[int]:
    ports = []
    for grant in grants or ():
        text = substitute(grant.value, values, grant.where)
        if not text.isdigit() or int(text) > 65535:
            raise PolicyError(grant.where, f"'{grant.value}' = '{text}' is not a TCP port")
        ports.append(int(text))
    return ports


def _landlock(policy: Policy, values: Mapping[str, str], kernel: KernelFeatures) -> tuple[
        landlock.LandlockRules | None, MechanismReport]:
    level = policy.compatibility.level("landlock")
    report = MechanismReport(Status.FULL.value, level.value)
    fs = policy.filesystem
    rights: dict[str, int] = {}
    for grants, mask, writes in ((fs.read, landlock.READ, False), (fs.write, landlock.WRITE, True),
                                 (fs.execute, landlock.EXECUTE, False)):
        for path, _ in _paths(grants, values, writes=writes):
            rights[path] = rights.get(path, 0) | mask
    net = policy.network
    bind, connect = _ports(net.bind_tcp, values), _ports(net.connect_tcp, values)
    want_net = net.bind_tcp is not None or net.connect_tcp is not None
    want_scopes = policy.scopes.abstract_unix_socket or policy.scopes.signal
    abi = kernel.landlock_abi
    min_abi = policy.compatibility.landlock_min_abi
    if abi == 0:
        if level is not Level.BEST_EFFORT:
            raise EnforcementError("landlock", f"the kernel has no Landlock ({kernel.landlock_reason}) "
                                               f"and the policy's level is {level.value}")
        return None, MechanismReport(Status.NONE.value, level.value, ["no Landlock in this kernel"],
                                     ["Landlock"])
    if abi < min_abi and level is not Level.BEST_EFFORT:
        raise EnforcementError("landlock", f"the policy needs Landlock ABI {min_abi}, "
                                           f"the kernel has ABI {abi}")
    missing = []
    if abi < 3:
        missing.append("truncate rights (ABI 3)")
    if abi < 5:
        missing.append("ioctl rights on devices (ABI 5)")
    if want_net and abi < 4:
        missing.append("TCP bind/connect rules (ABI 4)")
    if want_scopes and abi < 6:
        missing.append("abstract unix socket and signal scopes (ABI 6)")
    if missing and level is Level.HARD:
        raise EnforcementError("landlock", f"the kernel (Landlock ABI {abi}) lacks "
                                           f"{'; '.join(missing)} and the policy's level is hard")
    handled_net = 0
    if net.bind_tcp is not None:
        handled_net |= landlock.ACCESS_NET_BIND_TCP
    if net.connect_tcp is not None:
        handled_net |= landlock.ACCESS_NET_CONNECT_TCP
    handled_net &= landlock.net_rights(abi)
    scoped = 0
    if policy.scopes.abstract_unix_socket:
        scoped |= landlock.SCOPE_ABSTRACT_UNIX_SOCKET
    if policy.scopes.signal:
        scoped |= landlock.SCOPE_SIGNAL
    scoped &= landlock.scopes(abi)
    optional = {os.path.normpath(substitute(g.value, values, g.where))
                for g in (*fs.read, *fs.write, *fs.execute) if g.optional}
    ports: dict[int, int] = {}
    for port in bind:
        ports[port] = ports.get(port, 0) | landlock.ACCESS_NET_BIND_TCP
    for port in connect:
        ports[port] = ports.get(port, 0) | landlock.ACCESS_NET_CONNECT_TCP
    rules = landlock.LandlockRules(
        abi, landlock.fs_rights(abi), handled_net, scoped,
        tuple((p, r, p in optional) for p, r in sorted(rights.items())),
        tuple((p, r & handled_net) for p, r in sorted(ports.items()) if r & handled_net))
    def tcp(ports: list[int], restricted: bool, right: int) -> str:
        if not restricted:
            return "any"
        return str(sorted(ports)) if handled_net & right else "any (rules dropped: ABI < 4)"

    report.details.append(f"ABI {abi}: {len(rules.paths)} path rules, "
                          f"TCP bind {tcp(bind, net.bind_tcp is not None, landlock.ACCESS_NET_BIND_TCP)}, "
                          f"TCP connect {tcp(connect, net.connect_tcp is not None, landlock.ACCESS_NET_CONNECT_TCP)}, "
                          f"scopes {'+'.join(n for n, f in (('abstract-unix', 1), ('signal', 2)) if scoped & f) or 'none'}")
    if missing:
        report.status = Status.PARTIAL.value
        report.missing = missing
    return rules, report


def _seccomp(policy: Policy, kernel: KernelFeatures) -> tuple[seccomp.CompiledFilter | None, MechanismReport]:
    level = policy.compatibility.level("seccomp")
    sc = policy.seccomp
    if not sc.enabled:
        return None, MechanismReport(Status.NONE.value, level.value, ["disabled by the policy"])
    if not kernel.seccomp_filter:
        if level is not Level.BEST_EFFORT:
            raise EnforcementError("seccomp", "the kernel has no seccomp filter mode and the "
                                              f"policy's level is {level.value}")
        return None, MechanismReport(Status.NONE.value, level.value, [], ["seccomp filter mode"])
    where = sc.allow[0].where if sc.allow else SourceRef(policy.files[-1], 0, "seccomp")
    compiled = seccomp.compile_filter(seccomp.FilterSpec(
        sc.default_action, policy.allowed_syscalls, sc.rules, policy.network.socket_families, where))
    details = [f"default {sc.default_action}; {compiled.allowed} syscalls allowed, "
               f"{compiled.conditional} with argument rules; {compiled.instructions} BPF instructions",
               f"socket families: {', '.join(f.name + (' (raw)' if f.raw else '') for f in policy.network.socket_families) or 'none'}",
               "foreign architectures (i386, x32) kill the process; clone3 answers ENOSYS"]
    if compiled.unresolved:
        details.append(f"{len(compiled.unresolved)} group members unknown to libseccomp "
                       f"{seccomp.libseccomp_version()} stay denied")
    return compiled, MechanismReport(Status.FULL.value, level.value, details)


def _beneath(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _hidden(policy: Policy, values: Mapping[str, str], keep_tmp: tuple[str, ...] | None) -> tuple[str, ...]:
    """The paths of `filesystem.hide`, resolved: absolute, existing (unless optional), no symlinks.

    Symlinks are resolved here because mount(2) follows them: the plan names what is really
    covered, and the report and the probe judge that. A path under /tmp that the private /tmp
    removes from view anyway (not a granted path, not above or beneath one) is left out: it
    no longer exists in the child's mount namespace, so there is nothing to cover.
    """
    out: list[str] = []
    for path, grant in _paths(policy.filesystem.hide, values, writes=False):
        if not os.path.exists(path):
            continue   # optional = true (a required one was refused by _paths)
        real = os.path.realpath(path)
        if keep_tmp is not None and _beneath(real, "/tmp") and not any(
                _beneath(real, k) or _beneath(k, real) for k in keep_tmp):
            continue
        if not os.path.isdir(real):
            raise PolicyError(grant.where, f"'{path}' is not a directory: hide covers directories "
                                           "with an empty tmpfs")
        if real == "/":
            raise PolicyError(grant.where, "hiding '/' would hide everything, the interpreter included")
        out.append(real)
    return tuple(dict.fromkeys(out))


def compile_plan(policy: Policy, variables: Mapping[str, str], kernel: KernelFeatures,
                 parent_env: Mapping[str, str] | None = None) -> Plan:
    """Resolve variables and fit the policy to the kernel; refuse what cannot be applied."""
    values = {**default_values(), **variables}
    ll_rules, ll_report = _landlock(policy, values, kernel)
    compiled, sc_report = _seccomp(policy, kernel)
    ns = policy.namespaces
    entered = ns.entered()
    ns_level = policy.compatibility.level("namespaces")
    if "user" in entered and not kernel.user_namespaces and ns_level is Level.HARD:
        raise EnforcementError("namespaces", "the kernel does not allow user namespaces "
                                             "(user.max_user_namespaces or unprivileged_userns_clone)")
    keep_tmp = None
    if ns.private_tmp:
        fs = policy.filesystem
        keep_tmp = tuple(sorted({p for p, _ in _paths((*fs.read, *fs.write, *fs.execute), values, writes=False)
                                 if p == "/tmp" or p.startswith("/tmp/")}))
    hide = _hidden(policy, values, keep_tmp)
    env = scrub(parent_env if parent_env is not None else os.environ, policy.process.environment,
                [(k, substitute(v, values, SourceRef(policy.files[-1], 0, f"process.set_environment.{k}")))
                 for k, v in policy.process.set_environment])
    mechanisms = {
        "namespaces": MechanismReport(Status.FULL.value if entered else Status.NONE.value, ns_level.value,
                                      [f"entered: {', '.join(entered) or 'none'}"
                                       + (", private /tmp" if ns.private_tmp else "")
                                       + (f", hidden: {', '.join(hide)}" if hide else "")]),
        "landlock": ll_report,
        "seccomp": sc_report,
        "capabilities": MechanismReport(Status.FULL.value, policy.compatibility.level("capabilities").value,
                                        [f"kept: {', '.join(g.value for g in policy.process.capabilities) or 'none'}; "
                                         "securebits locked; no_new_privs; "
                                         f"dumpable {'on' if policy.process.dumpable else 'off'}"]),
        "rlimits": MechanismReport(Status.FULL.value, policy.compatibility.level("rlimits").value,
                                   [", ".join(f"{r.name}={'inf' if r.soft is None else r.soft}"
                                              for r in policy.process.rlimits)]),
    }
    return Plan(
        policy=policy.name, files=policy.files, kernel=kernel.summary(),
        namespaces=entered, namespace_level=ns_level.value, private_tmp_keep=keep_tmp,
        mount_proc=ns.pid and ns.mount, hostname=ns.hostname,
        uid=os.getuid(), gid=os.getgid(),
        new_session=policy.process.new_session, die_with_parent=policy.process.die_with_parent,
        dumpable=policy.process.dumpable,
        rlimits=tuple((r.name, RLIMITS[r.name], r.soft, r.hard) for r in policy.process.rlimits),
        fds=policy.process.fds, environment=tuple(sorted(env.items())),
        keep_caps=tuple(capability_number(g.value) for g in policy.process.capabilities),
        landlock=ll_rules,
        seccomp_bpf=compiled.bpf if compiled else b"",
        seccomp_sha256=compiled.sha256 if compiled else "",
        exec_allowed=compiled is None or "execve" in policy.allowed_syscalls,
        mechanisms=mechanisms,
        hide=hide,
    )
