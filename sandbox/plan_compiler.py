"""Policy + launch variables + this kernel -> a Plan (see `plan`).

Variables are filled; grant paths are resolved to real paths without following any symlink
the confined side could have planted (`paths.resolve`) and checked on what they really are;
the filesystem view is laid out; Landlock rights are cut to the kernel's ABI as the
compatibility level allows; the seccomp filter is compiled. Anything the kernel cannot carry
at the policy's level is refused here, before anything has changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from . import dangerous, landlock, paths, seccomp
from .capabilities import capability_number
from .environment import scrub
from .errors import EnforcementError, PolicyError, SourceRef
from .kernel import KernelFeatures
from .mechanisms import MECHANISMS, PROCESS
from .model import Grant, Level, Policy
from .plan import MechanismPlan, Mount, Plan
from .filter_spec import filter_spec
from .policy_refs import require_values
from .records import Record, record
from .rlimits import RLIMITS
from .variables import default_values, substitute


@record
class _Path(Record):
    """A grant path after variables and resolution."""

    path: str            # real path (or, for a path on a tmpfs of the view, as written)
    grant: Grant
    exists: bool


def _substituted(grant: Grant, values: Mapping[str, str]) -> str:
    path = substitute(grant.value, values, grant.where)
    if not os.path.isabs(path):
        raise PolicyError(grant.where, f"'{path}' is not an absolute path")
    return os.path.normpath(path)


def _on_tmpfs(path: str, tmpfs: Iterable[str]) -> bool:
    return any(path == t for t in tmpfs)


def _resolve(grants: tuple[Grant, ...], values: Mapping[str, str], untrusted: list[str],
             tmpfs: tuple[str, ...], links: dict[str, str]) -> list[_Path]:
    """Resolve each grant, refusing symlinks in writable places (see `paths`)."""
    out = []
    for grant in grants:
        written = _substituted(grant, values)
        if _on_tmpfs(written, tmpfs):
            out.append(_Path(written, grant, True))     # the fresh tmpfs itself
            continue
        try:
            real = paths.resolve(written, untrusted)
        except paths.SymlinkRefused as exc:
            raise PolicyError(grant.where, str(exc)) from None
        except OSError as exc:
            raise PolicyError(grant.where, f"'{written}': {exc.strerror or exc}") from None
        _record_links(written, real, links)
        exists = os.path.lexists(real)
        if not exists and not grant.optional:
            raise PolicyError(grant.where, f"granted path '{written}' does not exist "
                                           "(mark it optional = true if that is expected)")
        out.append(_Path(real, grant, exists))
    return out


def _record_links(written: str, real: str, links: dict[str, str]) -> None:
    """Symlinks on the way to a grant (followed because nothing confined could have made
    them, like /etc/localtime): the view recreates them so that the written path works."""
    if written == real:
        return
    current = "/"
    for part in [p for p in written.split("/") if p]:
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            links[candidate] = os.readlink(candidate)
            current = os.path.realpath(candidate)
        else:
            current = candidate


def _ports(grants: tuple[Grant, ...] | None, values: Mapping[str, str]) -> list[int]:
    ports = []
    for grant in grants or ():
        text = substitute(grant.value, values, grant.where)
        if not text.isdigit() or int(text) > 65535:
            raise PolicyError(grant.where, f"'{grant.value}' = '{text}' is not a TCP port")
        ports.append(int(text))
    return ports


@record
class _Filesystem(Record):
    """The resolved filesystem grants: Landlock rights per path, and the mount view."""

    rights: dict[str, int]
    optional: set[str]
    mounts: tuple[Mount, ...]
    untrusted: tuple[str, ...]      # where a symlink could have been planted (paths.resolve)


def _filesystem(policy: Policy, values: Mapping[str, str], writable_roots: Iterable[str]) -> _Filesystem:
    fs = policy.filesystem
    tmpfs_grants = (*fs.tmpfs, *((Grant("/tmp", _where(policy, "namespaces.private_tmp")),)
                                 if policy.namespaces.private_tmp else ()))
    tmpfs = tuple(dict.fromkeys(_substituted(g, values) for g in tmpfs_grants))
    for path, grant in zip(tmpfs, tmpfs_grants):
        if path == "/":
            raise PolicyError(grant.where, "a tmpfs on '/' would hide everything, the interpreter included")
    # Where the confined side can write, and so where a symlink may have been planted: the
    # caller's roots, then each write grant once resolved, parents first, so that a grant
    # inside another (a wallet's tmp inside its wallet directory) is resolved against it.
    untrusted = [os.path.realpath(r) for r in writable_roots]
    links: dict[str, str] = {}
    rights: dict[str, int] = {}
    optional: set[str] = set()
    writes = sorted(fs.write, key=lambda g: _depth(_substituted(g, values)))
    for grants, mask, is_write in ((writes, landlock.WRITE, True), (fs.read, landlock.READ, False),
                                   (fs.execute, landlock.EXECUTE, False)):
        for grant in grants:
            [item] = _resolve((grant,), values, untrusted, tmpfs, links)
            if is_write and dangerous.is_dangerous_write(item.path) and not item.grant.reason:
                raise PolicyError(item.grant.where, f"'{item.grant.value}' resolves to '{item.path}': "
                                                    "write access there is a dangerous grant and "
                                                    "needs a reason")
            if is_write and item.path not in tmpfs:
                untrusted.append(item.path)
            if not item.exists:
                optional.add(item.path)
                continue
            rights[item.path] = rights.get(item.path, 0) | mask
            if item.grant.optional:
                optional.add(item.path)
    hidden = []
    for item in _resolve(fs.hide, values, untrusted, (), links):
        if not item.exists:
            continue
        if not os.path.isdir(item.path):
            raise PolicyError(item.grant.where, f"'{item.path}' is not a directory: hide covers "
                                                "directories with an empty tmpfs")
        if item.path == "/":
            raise PolicyError(item.grant.where, "hiding '/' would hide everything, the interpreter included")
        hidden.append(item.path)
    mounts = _view(policy, rights, tmpfs, hidden, links) if policy.namespaces.mount else ()
    return _Filesystem(rights, optional, mounts, tuple(untrusted))


def _where(policy: Policy, key: str) -> SourceRef:
    return SourceRef(policy.files[-1], 0, key)


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _view(policy: Policy, rights: dict[str, int], tmpfs: tuple[str, ...], hidden: list[str],
          links: dict[str, str]) -> tuple[Mount, ...]:
    """The component's filesystem view: an empty root with exactly its grants in it.

    Binds are made parents first; a bind whose nearest enclosing entry is a bind with the
    same flags adds nothing (its parent's clone already holds it, submounts included) and is
    left out. Hidden directories come after the binds that show them; symlinks last.
    """
    entries: list[Mount] = []
    for path in tmpfs:
        entries.append(Mount("tmpfs", path, writable=True))
    for path, mask in rights.items():
        if path in tmpfs:
            continue
        entries.append(Mount("bind", path, writable=bool(mask & landlock.WRITE & ~landlock.READ),
                             executable=bool(mask & landlock.FS_EXECUTE)))
    # A /proc is always there (fresh in a pid namespace, else the host's read-only): Landlock
    # decides what the component may read in it, which is nothing unless granted.
    entries.append(Mount("proc", "/proc"))
    entries.sort(key=lambda m: (_depth(m.path), m.path))
    kept: list[Mount] = []
    for entry in entries:
        enclosing = [k for k in kept if k.kind in ("bind", "tmpfs") and paths.beneath(entry.path, k.path)]
        parent = max(enclosing, key=lambda k: len(k.path)) if enclosing else None
        if (entry.kind == "bind" and parent is not None and parent.kind == "bind"
                and (parent.writable, parent.executable) == (entry.writable, entry.executable)):
            continue
        kept.append(entry)
    binds = [k for k in kept if k.kind in ("bind", "tmpfs")]
    for path in sorted(hidden, key=lambda p: (_depth(p), p)):
        if any(paths.beneath(path, b.path) for b in binds):
            kept.append(Mount("hide", path))
        # else: nothing of it is in the view, so there is nothing to cover
    for link, target in sorted(_top_level_links(binds).items()) + sorted(links.items()):
        if not any(paths.beneath(link, b.path) for b in binds) and not any(
                k.kind == "symlink" and k.path == link for k in kept):
            kept.append(Mount("symlink", link, target=target))
    return tuple(kept)


def _top_level_links(binds: list[Mount]) -> dict[str, str]:
    """The root's own symlinks into the view (/lib64 -> usr/lib64 on merged-/usr systems):
    the dynamic loader of a program run in the sandbox is looked up through them."""
    out = {}
    try:
        names = os.listdir("/")
    except OSError:
        return out
    for name in names:
        link = "/" + name
        if os.path.islink(link):
            real = os.path.realpath(link)
            if any(paths.beneath(real, b.path) for b in binds if b.path != "/"):
                out[link] = os.readlink(link)
    return out


def _landlock(policy: Policy, values: Mapping[str, str], kernel: KernelFeatures,
              fs: _Filesystem) -> tuple[landlock.LandlockRules | None, MechanismPlan]:
    level = policy.compatibility.level("landlock")
    net = policy.network
    bind, connect = _ports(net.bind_tcp, values), _ports(net.connect_tcp, values)
    want_net = net.bind_tcp is not None or net.connect_tcp is not None
    want_scopes = policy.scopes.abstract_unix_socket or policy.scopes.signal
    abi = kernel.landlock_abi
    min_abi = policy.compatibility.landlock_min_abi
    if not policy.process.new_session and abi < 6:
        # The loader asks for the signal scope with new_session = false; whatever the
        # policy's level, a kernel without it cannot keep kill(0) in the sandbox.
        raise EnforcementError("landlock", f"new_session = false needs Landlock's signal scope "
                                           f"(ABI 6), and the kernel has ABI {abi}: in the launcher's "
                                           "process group the program's kill(0) would reach the "
                                           "operator's job outside the sandbox")
    if abi == 0:
        if level is not Level.BEST_EFFORT:
            raise EnforcementError("landlock", f"the kernel has no Landlock ({kernel.landlock_reason}) "
                                               f"and the policy's level is {level.value}")
        return None, MechanismPlan(level.value, ("no Landlock in this kernel",), ("Landlock",))
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
    ports: dict[int, int] = {}
    for port in bind:
        ports[port] = ports.get(port, 0) | landlock.ACCESS_NET_BIND_TCP
    for port in connect:
        ports[port] = ports.get(port, 0) | landlock.ACCESS_NET_CONNECT_TCP
    rules = landlock.LandlockRules(
        abi, landlock.fs_rights(abi), handled_net, scoped,
        tuple((p, r, p in fs.optional) for p, r in sorted(fs.rights.items())),
        tuple((p, r & handled_net) for p, r in sorted(ports.items()) if r & handled_net))

    def tcp(ports: list[int], restricted: bool, right: int) -> str:
        if not restricted:
            return "any"
        return str(sorted(ports)) if handled_net & right else "any (rules dropped: ABI < 4)"

    detail = (f"ABI {abi}: {len(rules.paths)} path rules, "
              f"TCP bind {tcp(bind, net.bind_tcp is not None, landlock.ACCESS_NET_BIND_TCP)}, "
              f"TCP connect {tcp(connect, net.connect_tcp is not None, landlock.ACCESS_NET_CONNECT_TCP)}, "
              f"scopes {'+'.join(n for n, f in (('abstract-unix', 1), ('signal', 2)) if scoped & f) or 'none'}")
    return rules, MechanismPlan(level.value, (detail,), tuple(missing))


def _seccomp(policy: Policy, kernel: KernelFeatures,
             notify_errno: bool = False) -> tuple[seccomp.CompiledFilter | None, MechanismPlan]:
    level = policy.compatibility.level("seccomp")
    sc = policy.seccomp
    if not sc.enabled:
        return None, MechanismPlan(level.value, disabled=sc.reason or "turned off by the policy")
    if not kernel.seccomp_filter:
        if level is not Level.BEST_EFFORT:
            raise EnforcementError("seccomp", "the kernel has no seccomp filter mode and the "
                                              f"policy's level is {level.value}")
        return None, MechanismPlan(level.value, (), ("seccomp filter mode",))
    # The one `export` writes out too; with `notify_errno` the denial log's form (same rules,
    # same counts: refusals with an errno go to the monitor, which answers that errno).
    compiled = seccomp.compile_filter(filter_spec(policy), notify_errno=notify_errno)
    details = [f"default {sc.default_action}; {compiled.allowed} syscalls allowed, "
               f"{compiled.conditional} with argument rules; {compiled.instructions} BPF instructions",
               f"socket families: {', '.join(f.name + (' (raw)' if f.raw else '') + ('' if f.datagram else ' (stream only)') + (' (socketpair only)' if f.socketpair_only else '') for f in policy.network.socket_families) or 'none'}",
               "foreign architectures (i386, x32) kill the process; clone3 answers ENOSYS"]
    if "unshare" not in policy.reachable_syscalls:
        details.append("clone with namespace flags answers EPERM (as unshare is denied)")
    if not policy.process.dumpable:
        details.append("prctl(PR_SET_DUMPABLE, non-zero) answers EPERM")
    details.append("set-user-ID and set-group-ID bits in a mode answer EPERM (chmod, fchmod, open "
                   "with O_CREAT, ...)")
    if compiled.unresolved:
        details.append(f"{len(compiled.unresolved)} group members unknown to libseccomp "
                       f"{seccomp.libseccomp_version()} stay denied")
    return compiled, MechanismPlan(level.value, tuple(details))


def _namespaces(policy: Policy, kernel: KernelFeatures, mounts: tuple[Mount, ...]) -> MechanismPlan:
    ns = policy.namespaces
    entered = ns.entered()
    level = policy.compatibility.level("namespaces")
    if "user" in entered and not kernel.user_namespaces and level is Level.HARD:
        raise EnforcementError("namespaces", "the kernel does not allow user namespaces "
                                             "(user.max_user_namespaces or unprivileged_userns_clone)")
    if not entered:
        return MechanismPlan(level.value, disabled=ns.reason or "no namespace in the policy")
    kinds = {k: sum(1 for m in mounts if m.kind == k) for k in ("bind", "tmpfs", "hide", "symlink")}
    details = []
    if mounts:
        details.append(f"filesystem view on an empty root: {kinds['bind']} bound grants, "
                       f"{kinds['tmpfs']} tmpfs ({', '.join(m.path for m in mounts if m.kind == 'tmpfs') or 'none'}), "
                       f"hidden: {', '.join(m.path for m in mounts if m.kind == 'hide') or 'none'}")
    return MechanismPlan(level.value, tuple(details))


def _mdwe(policy: Policy, kernel: KernelFeatures) -> MechanismPlan:
    level = policy.compatibility.level("mdwe")
    if not policy.process.memory_deny_write_execute:
        return MechanismPlan(level.value, disabled=policy.process.reason or "turned off by the policy")
    if not kernel.mdwe:
        if level is Level.HARD:
            raise EnforcementError("mdwe", "the kernel lacks PR_SET_MDWE (Linux 6.3) and the "
                                           "policy's level is hard")
        return MechanismPlan(level.value, (), ("PR_SET_MDWE (Linux 6.3)",))
    return MechanismPlan(level.value, ("no memory may become both writable and executable",))


def compile_plan(policy: Policy, variables: Mapping[str, str], kernel: KernelFeatures,
                 parent_env: Mapping[str, str] | None = None,
                 writable_roots: Iterable[str] = (), notify_errno: bool = False) -> Plan:
    """Resolve variables and fit the policy to the kernel; refuse what cannot be applied.

    `writable_roots` are directories some other confined process can write (the node's
    datadir for its wallet): a symlink found there on the way to a grant is refused too.
    `notify_errno`: the filter is compiled in the denial log's form (`seccomp.compile_filter`),
    for `denial_log.plan_with_denials(..., compiled_notifying=True)`.
    """
    values = {**default_values(), **variables}
    require_values(policy, values)    # every missing variable in one error, before the first
    fs = _filesystem(policy, values, writable_roots)
    ll_rules, ll_plan = _landlock(policy, values, kernel, fs)
    compiled, sc_plan = _seccomp(policy, kernel, notify_errno)
    ns_plan = _namespaces(policy, kernel, fs.mounts)
    proc = policy.process
    env = scrub(parent_env if parent_env is not None else os.environ, proc.environment,
                [(k, substitute(v, values, SourceRef(policy.files[-1], 0, f"process.set_environment.{k}")))
                 for k, v in proc.set_environment])
    levels = {m: policy.compatibility.level(m).value for m in MECHANISMS}
    rlimit_text = ", ".join(f"{r.name}={'inf' if r.soft is None else r.soft}" for r in proc.rlimits)
    mechanisms = {
        "namespaces": ns_plan,
        "landlock": ll_plan,
        "seccomp": sc_plan,
        "capabilities": MechanismPlan(levels["capabilities"],
                                      (f"kept: {', '.join(g.value for g in proc.capabilities) or 'none'}; "
                                       "securebits locked",)),
        "mdwe": _mdwe(policy, kernel),
        "rlimits": MechanismPlan(levels["rlimits"], (rlimit_text,)),
        PROCESS: MechanismPlan("hard", (f"stdio {proc.stdio}; no_new_privs; dumpable "
                                        f"{'on' if proc.dumpable else 'off'}; new session "
                                        f"{'yes' if proc.new_session else 'no'}",)),
    }
    return Plan(
        policy=policy.name, files=policy.files, kernel=kernel.summary(),
        namespaces=policy.namespaces.entered(), hostname=policy.namespaces.hostname,
        uid=os.getuid(), gid=os.getgid(),
        new_session=proc.new_session, die_with_parent=proc.die_with_parent,
        stdio=proc.stdio, mounts=fs.mounts,
        dumpable=proc.dumpable,
        memory_deny_write_execute=proc.memory_deny_write_execute and kernel.mdwe,
        rlimits=tuple((r.name, RLIMITS[r.name], r.soft, r.hard) for r in proc.rlimits),
        fds=proc.fds, environment=tuple(sorted(env.items())),
        keep_caps=tuple(capability_number(g.value) for g in proc.capabilities),
        landlock=ll_rules,
        seccomp_bpf=compiled.bpf if compiled else b"",
        seccomp_sha256=compiled.sha256 if compiled else "",
        exec_allowed=compiled is None or policy.may_run("execve"),
        mechanisms=mechanisms,
        untrusted=fs.untrusted,
    )
