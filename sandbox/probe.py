"""`CleanCoin-sandbox probe`: try to break out of a policy, and report what happened.

The parent prepares the plan, sets up targets outside the sandbox (a canary file and a
directory outside every granted path, a listening TCP port, a UDP port and an abstract unix
socket, its own pid, a pidfd and a network-namespace descriptor handed in over the control
socket), then forks a child that applies the whole policy by the launcher's own code path and
runs the battery inside.

Every attempt runs in its own fork inside the sandbox, with a timeout, so that a seccomp kill
(SIGSYS) or a hang ends that attempt only. Each attempt has an expectation that is computed
from the policy and the plan, not written down for one policy: reading a path is expected to
work only if a Landlock rule grants it, a TCP connect only if the port (or "any") is granted,
the inet family is allowed and there is no new network namespace, and so on. The battery is
therefore meaningful for any policy. An *escape* is an attempt the policy says is denied that
succeeded; the CLI's exit status is `bool(result.escapes)`.

With `script`, the file is read in the parent before the sandbox goes up, and executed in the
sandbox instead of the battery (in a fork, its stdout and stderr captured).
"""

from __future__ import annotations

import ctypes
import errno
import json
import linecache
import mmap
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from landlock import FSAccess

from . import control, landlock, launcher
from .model import Policy
from .plan import Plan
from .policy_spec import SOCKET_FAMILIES
from .report import Report

DEFAULT_ATTEMPT_TIMEOUT = 5.0
_MAX_SCRIPT_OUTPUT = 1 << 20

# x86_64 syscall numbers (the sandbox is x86_64 only, see docs/sandbox.md).
_NR = {"ioctl": 16, "ptrace": 101, "capget": 125, "capset": 126, "personality": 135,
       "iopl": 172, "keyctl": 250, "prlimit64": 302, "process_vm_readv": 310,
       "userfaultfd": 323, "bpf": 321, "perf_event_open": 298, "pidfd_send_signal": 424,
       "io_uring_setup": 425, "clone3": 435, "pidfd_getfd": 438}
_X32_SYSCALL_BIT = 0x40000000
_X32_GETPID = 39 | _X32_SYSCALL_BIT
# mov eax, 20 (i386 getpid); int 0x80; ret
_INT80_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"

_TIOCSTI, _TIOCSCTTY = 0x5412, 0x540E
_PTRACE_ATTACH, _PTRACE_DETACH = 16, 17
_PER_LINUX32 = 0x0008
_RLIMIT_CORE = 4
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_MNT_DETACH = 2
_KEYCTL_GET_KEYRING_ID, _KEY_SPEC_PROCESS_KEYRING = 0, -2
_BPF_MAP_CREATE, _BPF_MAP_TYPE_ARRAY = 0, 2
_PERF_TYPE_SOFTWARE, _PERF_FLAG_FD_CLOEXEC = 1, 8
_UFFD_USER_MODE_ONLY = 1
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _PR_SET_SECUREBITS = 47, 2, 28
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Capability numbers.
_CAP_SETPCAP, _CAP_NET_RAW, _CAP_SYS_RAWIO, _CAP_SYS_CHROOT = 8, 13, 17, 18
_CAP_SYS_PTRACE, _CAP_SYS_ADMIN, _CAP_SYS_RESOURCE, _CAP_MKNOD = 19, 21, 24, 27
_CAP_PERFMON, _CAP_BPF = 38, 39
_ALL_CAPS = (1 << 41) - 1
_CAP_NAMES = {_CAP_SETPCAP: "CAP_SETPCAP", _CAP_NET_RAW: "CAP_NET_RAW", _CAP_SYS_RAWIO: "CAP_SYS_RAWIO",
              _CAP_SYS_CHROOT: "CAP_SYS_CHROOT", _CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
              _CAP_SYS_ADMIN: "CAP_SYS_ADMIN", _CAP_SYS_RESOURCE: "CAP_SYS_RESOURCE",
              _CAP_MKNOD: "CAP_MKNOD", _CAP_PERFMON: "CAP_PERFMON", _CAP_BPF: "CAP_BPF"}

_READ_FILE, _READ_DIR = int(FSAccess.READ_FILE), int(FSAccess.READ_DIR)
_WRITE_FILE, _MAKE_REG = int(FSAccess.WRITE_FILE), int(FSAccess.MAKE_REG)
_MAKE_CHAR, _MAKE_SYM = int(FSAccess.MAKE_CHAR), int(FSAccess.MAKE_SYM)
_EXECUTE, _REFER = int(FSAccess.EXECUTE), int(FSAccess.REFER)
_IOCTL_DEV = int(FSAccess.IOCTL_DEV)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Attempt:
    """One escape attempt: what the policy expects, and what happened."""

    name: str
    description: str
    expected: str        # "denied" or "allowed"
    outcome: str         # "denied", "allowed" or "error"
    detail: str          # "EACCES (landlock)", "killed by SIGSYS (seccomp)", "succeeded: ..."
    reason: str = ""     # why the expectation is what it is (which mechanism should stop it)

    @property
    def escaped(self) -> bool:
        """The policy forbids it, and it worked."""
        return self.expected == "denied" and self.outcome == "allowed"

    @property
    def differs(self) -> bool:
        """The policy allows it, and it did not work (not an escape; worth a look)."""
        return self.expected == "allowed" and self.outcome != "allowed"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["escaped"] = self.escaped
        return data


@dataclass
class ProbeResult:
    """The enforcement report of the probe child and every attempt (or the script's result)."""

    report: Report
    attempts: list[Attempt]
    script_status: int | None = None     # exit status; negative: killed by that signal
    script_output: str = ""

    @property
    def escapes(self) -> list[Attempt]:
        return [a for a in self.attempts if a.escaped]

    def to_dict(self) -> dict[str, object]:
        return {"report": self.report.to_dict(),
                "attempts": [a.to_dict() for a in self.attempts],
                "escapes": [a.name for a in self.escapes],
                "script_status": self.script_status,
                "script_output": self.script_output}

    def to_text(self) -> str:
        lines: list[str] = []
        if self.attempts:
            name_w = max(len("attempt"), *(len(a.name) for a in self.attempts))
            lines.append(f"{'attempt':<{name_w}}  {'expected':<8}  {'outcome':<8}  {'verdict':<7}  detail")
            for a in self.attempts:
                mark = ("ESCAPE" if a.escaped else "error" if a.outcome == "error"
                        else "differs" if a.differs else "ok")
                lines.append(f"{a.name:<{name_w}}  {a.expected:<8}  {a.outcome:<8}  {mark:<7}  {a.detail}")
            errors = sum(1 for a in self.attempts if a.outcome == "error")
            differs = sum(1 for a in self.attempts if a.differs and a.outcome == "denied")
            summary = f"{len(self.attempts)} attempts, {len(self.escapes)} escapes"
            if differs:
                summary += f", {differs} denied although the policy allows them"
            if errors:
                summary += f", {errors} errors"
            if self.escapes:
                summary += f" (escaped: {', '.join(a.name for a in self.escapes)})"
            lines.append(summary)
        if self.script_status is not None:
            if self.script_output:
                lines.append(self.script_output.rstrip("\n"))
            lines.append(f"script {_status_words(self.script_status)}")
        return "\n".join(lines)


def _status_words(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by {name}" + (" (seccomp)" if -code == signal.SIGSYS else "")
    return f"exited with status {code}"


# ---------------------------------------------------------------------------------------------
# What the policy promises


@dataclass(frozen=True)
class _Host:
    """Facts about this machine and the parent that decide the kernel's own answers."""

    uid: int
    parent_caps: int                    # the parent's permitted capability set
    parent_inheritable: int             # and its inheritable set
    core_hard: int | None               # the parent's RLIMIT_CORE hard limit (None: unlimited)
    sysctl: Mapping[str, int | None]
    ttys: tuple[int, ...] = ()          # which of the parent's fds 0, 1, 2 are terminals

    @classmethod
    def detect(cls) -> "_Host":
        caps = {"CapPrm": 0, "CapInh": 0}
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    key = line.split(":", 1)[0]
                    if key in caps:
                        caps[key] = int(line.split()[1], 16)
        except OSError:
            pass
        hard = resource_hard_core()
        names = {"unprivileged_bpf_disabled": "/proc/sys/kernel/unprivileged_bpf_disabled",
                 "perf_event_paranoid": "/proc/sys/kernel/perf_event_paranoid",
                 "io_uring_disabled": "/proc/sys/kernel/io_uring_disabled",
                 "legacy_tiocsti": "/proc/sys/dev/tty/legacy_tiocsti",
                 "ptrace_scope": "/proc/sys/kernel/yama/ptrace_scope",
                 "max_user_namespaces": "/proc/sys/user/max_user_namespaces"}
        values: dict[str, int | None] = {}
        for key, path in names.items():
            try:
                with open(path) as handle:
                    values[key] = int(handle.read().strip())
            except (OSError, ValueError):
                values[key] = None
        ttys = tuple(fd for fd in (0, 1, 2) if os.isatty(fd))
        return cls(os.getuid(), caps["CapPrm"], caps["CapInh"], hard, values, ttys)


def resource_hard_core() -> int | None:
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


class _Why:
    """The mechanisms that should stop an attempt; none means the policy allows it."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.seccomp: str | None = None     # the seccomp action for the attempt's key syscall

    def need(self, ok: bool, what: str) -> "_Why":
        if not ok:
            self.blocks.append(what)
        return self

    @property
    def expected(self) -> str:
        return "denied" if self.blocks else "allowed"

    @property
    def reason(self) -> str:
        return "; ".join(self.blocks) if self.blocks else "nothing in the policy forbids it"


def _u64(value: int) -> int:
    return value & (2**64 - 1)


class _Judge:
    """Answers 'should this work?' from the policy and its plan, never from the BPF program.

    Deriving expectations from the compiled filter would make a compiler bug invisible; here
    they come from the policy model (allowed syscalls, rules, families) and the plan (paths,
    ports, scopes, namespaces, capabilities, rlimits), as the documentation describes them.
    """

    def __init__(self, policy: Policy, plan: Plan, host: _Host,
                 namespaces: Iterable[str] | None = None) -> None:
        self.policy, self.plan, self.host = policy, plan, host
        # Below level hard the child may enter fewer namespaces than planned; the report it
        # sends says which, and that is what the expectations follow.
        self.ns = set(plan.namespaces if namespaces is None else namespaces)
        self.mount_proc = plan.mount_proc and {"pid", "mount"} <= self.ns
        self.rules: list[tuple[str, int]] = []
        ll = plan.landlock
        if ll is not None:
            for path, rights, _optional in ll.paths:
                if not os.path.exists(path):
                    continue
                if not os.path.isdir(path):
                    rights &= landlock.FILE_RIGHTS
                self.rules.append((os.path.realpath(path), rights & ll.handled_fs))
        initial = _ALL_CAPS if "user" in self.ns else host.parent_caps
        kept = sum(1 << c for c in plan.keep_caps)
        self.caps = kept & initial
        self.inheritable = kept & (0 if "user" in self.ns else host.parent_inheritable)
        # capabilities.drop() locks the securebits (NO_CAP_AMBIENT_RAISE among them) whenever
        # the process holds CAP_SETPCAP when it drops.
        self.securebits_locked = bool(initial & (1 << _CAP_SETPCAP))

    # seccomp ----------------------------------------------------------------------------
    def seccomp_action(self, name: str, args: Mapping[int, int] | None = None) -> str:
        """What the filter should do with this call: allow, log, kill_process or errno:NAME."""
        args = {i: _u64(v) for i, v in (args or {}).items()}
        if not self.plan.seccomp_bpf:
            return "allow"
        sc = self.policy.seccomp
        if name == "clone3":
            return "errno:ENOSYS"
        rules = [r for r in sc.rules if r.syscall == name]
        for rule in rules:
            if not rule.args:
                return rule.action
        allowed = name in self.policy.allowed_syscalls
        if name in ("socket", "socketpair") and allowed:
            family, kind = args.get(0, 0), args.get(1, 0)
            for fam in self.policy.network.socket_families:
                if SOCKET_FAMILIES[fam.name] != family:
                    continue
                if name == "socketpair" and fam.name != "unix":
                    continue
                if fam.name in ("inet", "inet6") and not fam.raw:
                    if kind & 0xF in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        return "allow"
                    continue
                return "allow"
            return "errno:EAFNOSUPPORT"
        for rule in rules:
            if all(self._matches(c.op, args.get(c.index, 0), c.value, c.mask) for c in rule.args):
                return rule.action
        return "allow" if allowed else sc.default_action

    @staticmethod
    def _matches(op: str, arg: int, value: int, mask: int) -> bool:
        value = _u64(value)
        return {"eq": arg == value, "ne": arg != value, "lt": arg < value, "le": arg <= value,
                "gt": arg > value, "ge": arg >= value,
                "masked_eq": arg & _u64(mask) == value}[op]

    def sc(self, why: _Why, name: str, args: Mapping[int, int] | None = None) -> _Why:
        action = self.seccomp_action(name, args)
        if why.seccomp is None:
            why.seccomp = action
        return why.need(action in ("allow", "log"), f"seccomp: {name} -> {action}")

    @property
    def seccomp_on(self) -> bool:
        return bool(self.plan.seccomp_bpf)

    # landlock ---------------------------------------------------------------------------
    def ll_rights(self, path: str) -> int:
        """Landlock rights (handled ones only) the sandbox has on `path`; all if no Landlock."""
        if self.plan.landlock is None:
            return -1
        path = os.path.realpath(path)
        rights = 0
        for rule, mask in self.rules:
            if path == rule or path.startswith(rule.rstrip("/") + "/"):
                rights |= mask
        return rights | ~self.plan.landlock.handled_fs

    def ll_allows(self, path: str, access: int) -> bool:
        return self.ll_rights(path) & access == access

    def ll(self, why: _Why, path: str, access: int, what: str) -> _Why:
        return why.need(self.ll_allows(path, access), f"landlock: no {what} right on {path}")

    def ll_port(self, port: int, right: int) -> bool:
        ll = self.plan.landlock
        if ll is None or not ll.handled_net & right:
            return True
        return any(p == port and r & right for p, r in ll.ports)

    def scoped(self, flag: int) -> bool:
        return self.plan.landlock is not None and bool(self.plan.landlock.scoped & flag)

    # capabilities and kernel facts -------------------------------------------------------
    def has_cap(self, cap: int, *, init_ns: bool = False) -> bool:
        """The sandbox holds `cap`; with init_ns, in the initial user namespace too."""
        return bool(self.caps & (1 << cap)) and not (init_ns and "user" in self.ns)

    def ptrace_access(self, why: _Why, *, attach: bool) -> _Why:
        """The checks of ptrace_may_access() against the parent (a process outside)."""
        why.need(self.plan.landlock is None, "landlock: no ptrace access to a process outside "
                                             "the sandbox's domain")
        why.need("user" not in self.ns, "user namespace: the parent is in an ancestor user "
                                        "namespace, where the sandbox has no CAP_SYS_PTRACE")
        why.need(self.host.parent_caps & ~self.caps == 0 or self.has_cap(_CAP_SYS_PTRACE),
                 "capabilities: the parent holds capabilities the sandbox dropped")
        scope = self.host.sysctl.get("ptrace_scope")
        if attach and scope:
            why.need(scope == 1 and self.has_cap(_CAP_SYS_PTRACE, init_ns=True),
                     f"yama: ptrace_scope = {scope}")
        return why


# ---------------------------------------------------------------------------------------------
# Targets outside the sandbox


@dataclass
class _Targets:
    """Everything the battery aims at; made by the parent before fork."""

    token: str
    parent_pid: int
    outside_dir: str
    canary: str
    secret: bytes
    secret_addr: int              # address of `secret` in the parent (same in a fork)
    writable_dir: str | None
    tcp_port: int
    udp_port: int
    bind_port: int
    abstract_name: str
    true_path: str = "/bin/true"

    @property
    def created(self) -> str:
        return os.path.join(self.outside_dir, "created-by-sandbox")

    def probe_file(self, what: str) -> str:
        assert self.writable_dir is not None
        return os.path.join(self.writable_dir, f".cleancoin-probe-{self.token}-{what}")


def _choose_outside(judge: _Judge) -> str:
    """A fresh directory outside every granted path (not /tmp: a private /tmp hides it)."""
    candidates = ["/var/tmp", "/root", os.path.expanduser("~"), "/var/lib", "/tmp"]
    for base in candidates:
        if not os.path.isdir(base) or not os.access(base, os.W_OK):
            continue
        if judge.plan.landlock is None or not judge.ll_allows(
                os.path.join(base, "cleancoin-probe-x", "canary"), _READ_FILE):
            return base
    return "/var/tmp"


def _writable_dir(judge: _Judge, variables: Mapping[str, str]) -> str | None:
    """A granted writable directory for the control attempt: the datadir if it is one."""
    candidates = [variables[k] for k in ("datadir", "walletdir", "tmpdir") if variables.get(k)]
    if judge.plan.landlock is not None:
        candidates += [p for p, rights, _ in judge.plan.landlock.paths if rights & _MAKE_REG]
    for path in candidates:
        if os.path.isdir(path) and judge.ll_allows(os.path.join(path, "x"), _MAKE_REG | _WRITE_FILE):
            return path
    return None


@contextmanager
def _outside_targets(judge: _Judge, variables: Mapping[str, str]) -> Iterator[tuple[_Targets, dict[str, socket.socket]]]:
    token = secrets.token_hex(6)
    outside = os.path.realpath(os.path.join(_choose_outside(judge), f"cleancoin-probe-{token}"))
    os.mkdir(outside, 0o755)
    secret = f"cleancoin-probe-canary-{secrets.token_hex(8)}".encode()
    secret_buf = ctypes.create_string_buffer(secret, len(secret))
    listeners: dict[str, socket.socket] = {}
    targets: _Targets | None = None
    try:
        canary = os.path.join(outside, "canary")
        with open(canary, "wb") as handle:
            handle.write(secret)
        os.chmod(canary, 0o644)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listeners["tcp"] = tcp
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listeners["udp"] = udp
        udp.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
            free.bind(("127.0.0.1", 0))
            bind_port = free.getsockname()[1]
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listeners["abstract"] = unix
        abstract = f"\0cleancoin-probe-{token}"
        unix.bind(abstract)
        unix.listen(8)
        targets = _Targets(token, os.getpid(), outside, canary, secret,
                           ctypes.addressof(secret_buf), _writable_dir(judge, variables),
                           tcp.getsockname()[1], udp.getsockname()[1], bind_port, abstract)
        yield targets, listeners
    finally:
        for sock in listeners.values():
            sock.close()
        del secret_buf
        _umount_quietly(outside)
        shutil.rmtree(outside, ignore_errors=True)
        if targets is not None and targets.writable_dir is not None:
            for what in ("granted", "symlink", "hardlink", "mknod"):
                try:
                    os.unlink(targets.probe_file(what))
                except OSError:
                    pass


def _umount_quietly(path: str) -> None:
    # Only ever needed if a (weak) policy let the mount attempt through and the attempt could
    # not undo it; a failure here is the normal case.
    try:
        ctypes.CDLL(None, use_errno=True).umount2(path.encode(), _MNT_DETACH)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------
# The child side: running one attempt in its own fork


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(name_or_nr: str | int, *args: int | ctypes._CData | None) -> tuple[int, int]:
    """A raw syscall: (return value, errno)."""
    nr = _NR[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *conv)
    return ret, (ctypes.get_errno() if ret == -1 else 0)


def _errname(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


class _Out:
    """The grandchild's side of the result pipe: notes, then one result."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _send(self, **message: object) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]

    def note(self, text: str) -> None:
        """A step that worked or failed before the decisive call (kept if that call kills us)."""
        self._send(note=text)

    def if_silent(self, outcome: str, detail: str) -> None:
        """What it means if the process ends without a result (a successful execve)."""
        self._send(silent=[outcome, detail])

    def if_signal(self, sig: int, outcome: str, detail: str) -> None:
        self._send(signal=[int(sig), outcome, detail])

    def result(self, outcome: str, detail: str) -> None:
        self._send(result=[outcome, detail])


@dataclass
class _Ctx:
    """What an attempt sees inside the sandbox."""

    targets: _Targets
    fds: dict[str, int] = field(default_factory=dict)
    seccomp: str | None = None          # the policy's seccomp action for the current attempt

    def denied(self, err: OSError | int, **hints: str) -> tuple[str, str]:
        """A failure, named by errno and, where known, by the mechanism that caused it."""
        code = err.errno if isinstance(err, OSError) else err
        name = _errname(code or 0)
        if name in hints:
            return "denied", f"{name} ({hints[name]})"
        if self.seccomp == f"errno:{name}":
            return "denied", f"{name} (seccomp)"
        return "denied", f"{name} (kernel: {os.strerror(code or 0)})"


Outcome = tuple[str, str]
Runner = Callable[[_Ctx, _Out], Outcome]


def _run_isolated(run: Runner, ctx: _Ctx, timeout: float) -> Outcome:
    """Run one attempt in a fork; SIGSYS is a seccomp denial, a hang an error."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = _Out(w)
        code = 0
        try:
            out.result(*run(ctx, out))
        except BaseException as exc:  # noqa: BLE001 - reported as the attempt's error
            code = 1
            try:
                out.result("error", f"{type(exc).__name__}: {exc}")
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)
    os.close(w)
    data = b""
    timed_out = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                timed_out = True
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return _interpret(data, status, timed_out, timeout)


def _interpret(data: bytes, status: int, timed_out: bool, timeout: float) -> Outcome:
    notes: list[str] = []
    result = silent = None
    on_signal: dict[int, tuple[str, str]] = {}
    for line in data.decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "note" in message:
            notes.append(str(message["note"]))
        elif "silent" in message:
            silent = tuple(message["silent"])
        elif "signal" in message:
            sig, outcome, detail = message["signal"]
            on_signal[int(sig)] = (outcome, detail)
        elif "result" in message:
            result = tuple(message["result"])

    def joined(detail: str) -> str:
        return "; ".join([*notes, detail])

    if timed_out and result is None:
        return "error", joined(f"no answer within {timeout:g} s (killed)")
    if result is not None:
        return str(result[0]), joined(str(result[1]))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGSYS:
            return "denied", joined("killed by SIGSYS (seccomp)")
        if sig in on_signal:
            outcome, detail = on_signal[sig]
            return outcome, joined(detail)
        return "error", joined(launcher.describe_status(status))
    if silent is not None:
        return str(silent[0]), joined(f"{silent[1]} ({launcher.describe_status(status)})")
    return "error", joined(f"ended without an answer: {launcher.describe_status(status)}")


# ---------------------------------------------------------------------------------------------
# The attempts


@dataclass(frozen=True)
class _Spec:
    name: str
    description: str
    expect: Callable[[_Judge, _Targets], _Why]
    run: Runner
    needs_writable: bool = False


def _ok(detail: str) -> Outcome:
    return "allowed", f"succeeded: {detail}"


# filesystem -----------------------------------------------------------------------------------

def _fs_read(path: str, ctx: _Ctx, expect_secret: bool) -> Outcome:
    try:
        with open(path, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", ENOENT="not visible in the sandbox's mounts")
    if expect_secret and data != ctx.targets.secret:
        return "allowed", f"opened, but the content differs from the canary ({len(data)} bytes)"
    return _ok(f"read {len(data)} bytes of {path}")


def _run_read_outside(ctx: _Ctx, out: _Out) -> Outcome:
    return _fs_read(ctx.targets.canary, ctx, expect_secret=True)


def _run_read_passwd(ctx: _Ctx, out: _Out) -> Outcome:
    return _fs_read("/etc/passwd", ctx, expect_secret=False)


def _run_list_root(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        names = os.listdir("/")
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock")
    return _ok(f"listed / ({len(names)} entries)")


def _run_write_outside(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.created
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", EROFS="read-only mount")
    os.write(fd, b"escaped")
    os.close(fd)
    return _ok(f"created {path}")


def _run_modify_canary(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        fd = os.open(ctx.targets.canary, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", EROFS="read-only mount")
    os.write(fd, b"!")
    os.close(fd)
    return _ok(f"appended to {ctx.targets.canary}")


def _run_write_granted(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.probe_file("granted")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock")
    try:
        os.write(fd, b"probe")
        os.lseek(fd, 0, os.SEEK_SET)
        back = os.read(fd, 16)
    finally:
        os.close(fd)
    os.unlink(path)
    if back != b"probe":
        return "error", f"wrote 'probe' to {path} and read back {back!r}"
    return _ok(f"created, wrote, read back and removed {path}")


def _run_symlink(ctx: _Ctx, out: _Out) -> Outcome:
    link = ctx.targets.probe_file("symlink")
    try:
        os.symlink(ctx.targets.canary, link)
    except OSError as exc:
        out.note(f"symlink in the writable directory: {_errname(exc.errno or 0)}")
        return "denied", "could not plant the symlink, so the canary was not reached"
    out.note(f"planted {link} -> canary")
    try:
        with open(link, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock checks the target, not the link")
    finally:
        os.unlink(link)
    return _ok(f"read {len(data)} bytes of the canary through the symlink")


def _run_hardlink(ctx: _Ctx, out: _Out) -> Outcome:
    link = ctx.targets.probe_file("hardlink")
    try:
        os.link(ctx.targets.canary, link)
    except OSError as exc:
        return ctx.denied(exc, EXDEV="landlock refer rule, or the canary is on another mount",
                          EACCES="landlock", EPERM="kernel: protected_hardlinks")
    try:
        with open(link, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        os.unlink(link)
        return "allowed", f"linked the canary into the writable directory, reading it: {_errname(exc.errno or 0)}"
    os.unlink(link)
    return _ok(f"linked the canary into the writable directory and read {len(data)} bytes")


def _run_mknod(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.probe_file("mknod")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no make_char right",
                          EPERM="kernel: no CAP_MKNOD (or in a user namespace)")
    os.unlink(path)
    return _ok("created a character device (1:3) in the writable directory")


# programs -------------------------------------------------------------------------------------

def _run_execve(ctx: _Ctx, out: _Out) -> Outcome:
    out.if_silent("allowed", f"succeeded: execve({ctx.targets.true_path}) ran the program")
    try:
        os.execv(ctx.targets.true_path, [ctx.targets.true_path])
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no execute right", ENOENT="not visible")
    return "error", "execv returned"  # not reached


# network --------------------------------------------------------------------------------------

def _socket(family: int, kind: int, proto: int, ctx: _Ctx) -> tuple[socket.socket | None, Outcome | None]:
    try:
        return socket.socket(family, kind, proto), None
    except OSError as exc:
        return None, ctx.denied(exc, EAFNOSUPPORT="seccomp: socket family not allowed",
                                EPERM="kernel: no CAP_NET_RAW",
                                EACCES="kernel: no CAP_NET_RAW")


def _run_tcp_connect(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_INET, socket.SOCK_STREAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    sock.settimeout(3)
    try:
        sock.connect(("127.0.0.1", ctx.targets.tcp_port))
    except OSError as exc:
        if isinstance(exc, TimeoutError) or exc.errno is None:
            return "denied", "connect timed out"
        return ctx.denied(exc, EACCES="landlock: TCP port not granted",
                          ENETUNREACH="network namespace: no route to the host's loopback",
                          ECONNREFUSED="network namespace: the parent's port is not there")
    finally:
        sock.close()
    return _ok(f"connected to the parent's 127.0.0.1:{ctx.targets.tcp_port}")


def _run_tcp_bind(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_INET, socket.SOCK_STREAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    try:
        sock.bind(("0.0.0.0", ctx.targets.bind_port))
        sock.listen(1)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: TCP port not granted",
                          EADDRINUSE="kernel: port in use")
    finally:
        sock.close()
    return _ok(f"bound and listened on 0.0.0.0:{ctx.targets.bind_port}")


def _run_udp_send(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_INET, socket.SOCK_DGRAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    try:
        sock.sendto(ctx.targets.token.encode(), ("127.0.0.1", ctx.targets.udp_port))
    except OSError as exc:
        return ctx.denied(exc, ENETUNREACH="network namespace: no route to the host's loopback")
    finally:
        sock.close()
    return _ok(f"sent a datagram to the parent's 127.0.0.1:{ctx.targets.udp_port}")


def _make_socket_runner(family: int, kind: int, proto: int, what: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        sock, fail = _socket(family, kind, proto, ctx)
        if sock is None:
            return fail  # type: ignore[return-value]
        sock.close()
        return _ok(f"created {what}")
    return run


def _run_abstract_connect(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    sock.settimeout(3)
    try:
        sock.connect(ctx.targets.abstract_name)
    except OSError as exc:
        return ctx.denied(exc, EPERM="landlock: abstract unix socket scope",
                          ECONNREFUSED="network namespace: abstract names are per namespace")
    finally:
        sock.close()
    return _ok(f"connected to the parent's abstract socket @{ctx.targets.abstract_name[1:]}")


# other processes ------------------------------------------------------------------------------

_PID_HINTS = {"ESRCH": "pid namespace: the parent is not visible",
              "EPERM": "landlock or capabilities: no ptrace access to a process outside"}


def _run_ptrace(ctx: _Ctx, out: _Out) -> Outcome:
    pid = ctx.targets.parent_pid
    ret, err = _syscall("ptrace", _PTRACE_ATTACH, pid, 0, 0)
    if ret != 0:
        return ctx.denied(err, **_PID_HINTS)
    # Let the parent go at once: wait for its attach stop, detach without a signal.
    try:
        os.waitpid(pid, 0x40000000)   # __WALL
    except OSError:
        pass
    _syscall("ptrace", _PTRACE_DETACH, pid, 0, 0)
    return _ok(f"PTRACE_ATTACH to the parent (pid {pid}), then detached")


def _make_proc_runner(entry: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        path = f"/proc/{ctx.targets.parent_pid}/{entry}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            return ctx.denied(exc, ENOENT="pid namespace: a /proc without the parent",
                              EACCES="landlock: /proc not granted, or no ptrace access",
                              EPERM="no ptrace access to the parent")
        try:
            if entry == "mem":
                data = os.pread(fd, len(ctx.targets.secret), ctx.targets.secret_addr)
                if data == ctx.targets.secret:
                    return _ok(f"opened {path} and read the parent's canary from its memory")
                return _ok(f"opened {path}")
            data = os.read(fd, 4096)
            return _ok(f"opened {path} and read {len(data)} bytes")
        except OSError as exc:
            return "allowed", f"opened {path}; reading it: {_errname(exc.errno or 0)}"
        finally:
            os.close(fd)
    return run


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _run_process_vm_readv(ctx: _Ctx, out: _Out) -> Outcome:
    size = len(ctx.targets.secret)
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _IoVec(ctx.targets.secret_addr, size)
    ret, err = _syscall("process_vm_readv", ctx.targets.parent_pid, ctypes.byref(local), 1,
                        ctypes.byref(remote), 1, 0)
    if ret < 0:
        return ctx.denied(err, **_PID_HINTS)
    same = buf.raw == ctx.targets.secret
    return _ok(f"read {ret} bytes of the parent's memory" + (" (the canary)" if same else ""))


def _run_kill_parent(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.kill(ctx.targets.parent_pid, 0)
    except OSError as exc:
        return ctx.denied(exc, ESRCH="pid namespace: the parent is not visible",
                          EPERM="landlock: signal scope")
    return _ok(f"kill({ctx.targets.parent_pid}, 0) reached the parent")


def _run_kill_init(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.kill(1, 0)
    except OSError as exc:
        return ctx.denied(exc, EPERM="landlock signal scope: PID 1 is outside the domain",
                          ESRCH="no PID 1")
    return _ok("kill(1, 0) reached PID 1")


def _run_pidfd_signal(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("pidfd")
    if fd is None:
        return "error", "no pidfd of the parent was handed in"
    ret, err = _syscall("pidfd_send_signal", fd, 0, 0, 0)
    if ret != 0:
        return ctx.denied(err, EPERM="landlock: signal scope",
                          EINVAL="pid namespace: the parent is in an ancestor namespace")
    return _ok("pidfd_send_signal(parent, 0) reached the parent")


def _run_pidfd_getfd(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("pidfd")
    if fd is None:
        return "error", "no pidfd of the parent was handed in"
    ret, err = _syscall("pidfd_getfd", fd, 2, 0)
    if ret < 0:
        return ctx.denied(err, EPERM="landlock or capabilities: no ptrace access",
                          EBADF="the parent has no fd 2")
    os.close(ret)
    return _ok("took a copy of the parent's fd 2")


# namespaces, mounts, privileges ---------------------------------------------------------------

def _run_mount(ctx: _Ctx, out: _Out) -> Outcome:
    target = ctx.targets.outside_dir.encode()
    ctypes.set_errno(0)
    ret = _libc.mount(b"cleancoin-probe", target, b"tmpfs", ctypes.c_ulong(0), None)
    if ret != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="landlock denies mounts, or no CAP_SYS_ADMIN")
    _libc.umount2(target, _MNT_DETACH)
    return _ok(f"mounted a tmpfs on {ctx.targets.outside_dir} (and unmounted it)")


def _make_unshare_runner(flag: int, what: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        ctypes.set_errno(0)
        if _libc.unshare(ctypes.c_int(flag)) != 0:
            return ctx.denied(ctypes.get_errno(), EPERM="kernel: no CAP_SYS_ADMIN",
                              EUSERS="kernel: user namespace nesting limit",
                              ENOSPC="kernel: user namespace count limit")
        return _ok(f"unshare({what})")
    return run


def _run_setns(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("netns")
    what = "the parent's network namespace (fd handed in)"
    if fd is None:
        try:
            fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            what = "/proc/self/ns/net"
        except OSError as exc:
            out.note(f"open /proc/self/ns/net: {_errname(exc.errno or 0)}")
            fd, what = -1, "an invalid fd"
    ctypes.set_errno(0)
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(_CLONE_NEWNET)) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: no CAP_SYS_ADMIN over that namespace",
                          EBADF="no namespace fd to join")
    return _ok(f"setns into {what}")


def _run_chroot(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.chroot("/")
    except OSError as exc:
        return ctx.denied(exc, EPERM="kernel: no CAP_SYS_CHROOT")
    return _ok("chroot('/')")


def _run_keyctl(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("keyctl", _KEYCTL_GET_KEYRING_ID, _KEY_SPEC_PROCESS_KEYRING, 1)
    if ret < 0:
        return ctx.denied(err)
    return _ok(f"keyctl created a process keyring (id {ret})")


def _run_bpf(ctx: _Ctx, out: _Out) -> Outcome:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("IIII", attr, 0, _BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    ret, err = _syscall("bpf", _BPF_MAP_CREATE, attr, 128)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: unprivileged BPF disabled and no CAP_BPF")
    os.close(ret)
    return _ok("bpf(BPF_MAP_CREATE) made an array map")


def _run_perf(ctx: _Ctx, out: _Out) -> Outcome:
    attr = ctypes.create_string_buffer(136)
    # type, size, config (PERF_COUNT_SW_CPU_CLOCK), ..., flags: disabled | exclude_kernel | exclude_hv
    struct.pack_into("IIQ", attr, 0, _PERF_TYPE_SOFTWARE, 112, 0)
    struct.pack_into("Q", attr, 40, (1 << 0) | (1 << 5) | (1 << 6))
    ret, err = _syscall("perf_event_open", attr, 0, -1, -1, _PERF_FLAG_FD_CLOEXEC)
    if ret < 0:
        return ctx.denied(err, EACCES="kernel: perf_event_paranoid", EPERM="kernel: perf_event_paranoid")
    os.close(ret)
    return _ok("perf_event_open of a software counter on itself")


def _run_io_uring(ctx: _Ctx, out: _Out) -> Outcome:
    params = ctypes.create_string_buffer(120)
    ret, err = _syscall("io_uring_setup", 1, params)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: io_uring_disabled")
    os.close(ret)
    return _ok("io_uring_setup made a ring")


def _run_userfaultfd(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: unprivileged_userfaultfd = 0")
    os.close(ret)
    return _ok("userfaultfd (user-mode faults only)")


def _run_personality(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("personality", _PER_LINUX32)
    if ret < 0:
        return ctx.denied(err)
    return _ok(f"personality(PER_LINUX32), previous 0x{ret:x}")


def _run_tiocsti(ctx: _Ctx, out: _Out) -> Outcome:
    # The byte pointer is NULL: a kernel that lets the call through to the injection step
    # answers EFAULT, so a weak policy is detected without typing anything into a terminal.
    try:
        master, slave = os.openpty()
        os.setsid()
        ret, err = _syscall("ioctl", slave, _TIOCSCTTY, 0)
        if ret != 0:
            out.note(f"TIOCSCTTY on a new pty: {_errname(err)}")
        fd, how = slave, "a new pty"
    except OSError as exc:
        out.note(f"openpty: {_errname(exc.errno or 0)}")
        ttys = [i for i in (0, 1, 2) if os.isatty(i)]
        fd = ttys[0] if ttys else 0
        how = f"fd {fd} ({'a terminal' if ttys else 'not a terminal'})"
    ret, err = _syscall("ioctl", fd, _TIOCSTI, 0)
    if ret == 0 or err == errno.EFAULT:
        return "allowed", (f"TIOCSTI on {how} reached the injection step (EFAULT for the NULL "
                           "byte pointer; nothing was injected)")
    eperm = "seccomp" if ctx.seccomp == "errno:EPERM" else \
        "kernel: not the controlling terminal and no CAP_SYS_ADMIN"
    outcome, detail = ctx.denied(err, EPERM=eperm, EIO="kernel: dev.tty.legacy_tiocsti = 0",
                                 ENOTTY="kernel: not a terminal", EACCES="landlock: no ioctl_dev right")
    return outcome, f"{detail} on {how}"


def _run_int80(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError as exc:
        return "error", f"could not map an executable page: {_errname(exc.errno or 0)}"
    page.write(_INT80_GETPID)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    func = ctypes.CFUNCTYPE(ctypes.c_int)(address)
    out.if_signal(signal.SIGSEGV, "denied", "killed by SIGSEGV (kernel has no i386 emulation)")
    pid = func()
    return _ok(f"i386 getpid through int 0x80 returned {pid}")


def _run_x32(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall(_X32_GETPID)
    if ret < 0:
        return ctx.denied(err, ENOSYS="kernel has no x32 ABI")
    return _ok(f"x32 getpid returned {ret}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _run_capset(ctx: _Ctx, out: _Out) -> Outcome:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    ret, err = _syscall("capget", ctypes.byref(header), data)
    if ret != 0:
        out.note(f"capget: {_errname(err)}")
    data[0].effective |= 1 << _CAP_SYS_ADMIN
    data[0].permitted |= 1 << _CAP_SYS_ADMIN
    ret, err = _syscall("capset", ctypes.byref(header), data)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: not in the permitted/bounding set")
    return _ok("capset raised CAP_SYS_ADMIN")


def _run_ambient(ctx: _Ctx, out: _Out) -> Outcome:
    ctypes.set_errno(0)
    if _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_SYS_ADMIN, 0, 0) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: not permitted and inheritable, "
                                                    "or securebits forbid it")
    return _ok("raised CAP_SYS_ADMIN in the ambient set")


def _run_securebits(ctx: _Ctx, out: _Out) -> Outcome:
    ctypes.set_errno(0)
    if _libc.prctl(_PR_SET_SECUREBITS, 0, 0, 0, 0) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: locked or no CAP_SETPCAP")
    return _ok("cleared the securebits")


def _run_rlimit(ctx: _Ctx, out: _Out) -> Outcome:
    new = (ctypes.c_uint64 * 2)(1, 1)
    ret, err = _syscall("prlimit64", 0, _RLIMIT_CORE, new, 0)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: above the hard limit, no CAP_SYS_RESOURCE")
    return _ok("raised RLIMIT_CORE to 1/1")


def _run_iopl(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("iopl", 3)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: no CAP_SYS_RAWIO", ENOSYS="kernel built without iopl")
    return _ok("iopl(3)")


def _run_clone3(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("clone3", 0, 0)
    if ret == 0:
        os._exit(0)   # not reached with these arguments
    if err == errno.ENOSYS:
        return "denied", "ENOSYS (seccomp; glibc falls back to clone)"
    if err == errno.EINVAL:
        return "allowed", "reached the kernel (EINVAL for the empty argument)"
    outcome, detail = ctx.denied(err)
    return outcome, f"{detail}; not ENOSYS, so glibc will not fall back to clone"


def _run_thread(ctx: _Ctx, out: _Out) -> Outcome:
    ran = threading.Event()
    try:
        thread = threading.Thread(target=ran.set, daemon=True)
        thread.start()
    except RuntimeError as exc:
        return "denied", f"threading.Thread: {exc}"
    if not ran.wait(3):
        return "denied", "the thread did not run"
    thread.join(1)
    return _ok("a thread started and ran (clone3 ENOSYS, fallback to clone)")


# expectations ---------------------------------------------------------------------------------

def _exp_read(path_of: Callable[[_Targets], str]) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        return j.ll(w, path_of(t), _READ_FILE, "read_file")
    return expect


def _exp_list_root(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "openat")
    return j.ll(w, "/", _READ_DIR, "read_dir")


def _exp_create(path_of: Callable[[_Targets], str]) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        return j.ll(w, path_of(t), _MAKE_REG | _WRITE_FILE, "make_reg/write_file")
    return expect


def _exp_modify_canary(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "openat")
    return j.ll(w, t.canary, _WRITE_FILE, "write_file")


def _exp_symlink(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "symlinkat")
    j.ll(w, t.probe_file("symlink"), _MAKE_SYM, "make_sym")
    return j.ll(w, t.canary, _READ_FILE, "read_file")


def _exp_hardlink(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "linkat")
    if j.plan.landlock is None:
        return w
    src, dst = j.ll_rights(t.canary), j.ll_rights(t.probe_file("hardlink"))
    handled = j.plan.landlock.handled_fs
    w.need(bool(handled & _REFER) and bool(src & _REFER) and bool(dst & _REFER),
           "landlock: no refer right between the canary's directory and the writable one")
    w.need(bool(dst & _MAKE_REG), "landlock: no make_reg right in the writable directory")
    w.need((dst & ~src & handled & landlock.FILE_RIGHTS) == 0,
           "landlock: the link would gain rights the canary does not have")
    return w


def _exp_mknod(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mknodat")
    j.ll(w, t.probe_file("mknod"), _MAKE_CHAR, "make_char")
    w.need(j.has_cap(_CAP_MKNOD), "capabilities: CAP_MKNOD dropped")
    return w.need("user" not in j.ns, "user namespace: no device nodes")


def _exp_execve(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "execve")
    return j.ll(w, os.path.realpath(t.true_path), _EXECUTE, "execute")


def _inet_socket(j: _Judge, w: _Why, kind: int) -> _Why:
    return j.sc(w, "socket", {0: socket.AF_INET, 1: kind})


def _exp_tcp_connect(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    _inet_socket(j, w, socket.SOCK_STREAM)
    j.sc(w, "connect")
    w.need(j.ll_port(t.tcp_port, landlock.ACCESS_NET_CONNECT_TCP),
           f"landlock: TCP connect to port {t.tcp_port} not granted")
    return w.need("net" not in j.ns, "network namespace: the host's loopback is not there")


def _exp_tcp_bind(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    _inet_socket(j, w, socket.SOCK_STREAM)
    j.sc(w, "bind")
    return w.need(j.ll_port(t.bind_port, landlock.ACCESS_NET_BIND_TCP),
                  f"landlock: TCP bind to port {t.bind_port} not granted")


def _exp_udp(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    _inet_socket(j, w, socket.SOCK_DGRAM)
    j.sc(w, "sendto")
    return w.need("net" not in j.ns, "network namespace (Landlock has no UDP rules)")


def _exp_socket(family: int, kind: int, cap: int | None) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "socket", {0: family, 1: kind})
        if cap is not None:
            w.need(j.has_cap(cap), "capabilities: CAP_NET_RAW dropped")
        return w
    return expect


def _exp_abstract(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    j.sc(w, "connect")
    w.need(not j.scoped(landlock.SCOPE_ABSTRACT_UNIX_SOCKET), "landlock: abstract unix socket scope")
    return w.need("net" not in j.ns, "network namespace: abstract names are per namespace")


def _exp_ptrace(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "ptrace")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return j.ptrace_access(w, attach=True)


def _exp_proc(entry: str) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        w.need(not j.mount_proc, "pid namespace: its own /proc does not show the parent")
        j.ll(w, f"/proc/{t.parent_pid}/{entry}", _READ_FILE, "read_file")
        return j.ptrace_access(w, attach=entry == "mem")
    return expect


def _exp_process_vm_readv(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "process_vm_readv")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return j.ptrace_access(w, attach=True)


def _exp_kill_parent(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "kill")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_kill_init(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "kill")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_pidfd_signal(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "pidfd_send_signal")
    w.need("pid" not in j.ns, "pid namespace: the parent is in an ancestor namespace")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_pidfd_getfd(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "pidfd_getfd")
    return j.ptrace_access(w, attach=True)


def _exp_mount(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mount")
    w.need(j.plan.landlock is None, "landlock: no mounts in a Landlock domain")
    w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN dropped")
    return w.need("user" not in j.ns or "mount" in j.ns,
                  "user namespace: the mount namespace belongs to an ancestor")


def _exp_unshare_user(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "unshare")
    return w.need(j.host.sysctl.get("max_user_namespaces") != 0, "kernel: user namespaces disabled")


def _exp_unshare_mount(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "unshare")
    return w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN dropped")


def _exp_setns(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "setns")
    return w.need(j.has_cap(_CAP_SYS_ADMIN, init_ns=True),
                  "capabilities: no CAP_SYS_ADMIN over the parent's namespace")


def _exp_syscall(name: str, *, args: Mapping[int, int] | None = None, cap: int | None = None,
                 init_ns: bool = False, extra: Callable[[_Judge], tuple[bool, str]] | None = None
                 ) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, name, args)
        if cap is not None:
            w.need(j.has_cap(cap, init_ns=init_ns), f"capabilities: {_CAP_NAMES[cap]} dropped"
                   + (" (or only inside a user namespace)" if init_ns else ""))
        if extra is not None:
            w.need(*extra(j))
        return w
    return expect


def _bpf_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("unprivileged_bpf_disabled")
    ok = value == 0 or j.has_cap(_CAP_BPF, init_ns=True) or j.has_cap(_CAP_SYS_ADMIN, init_ns=True)
    return ok, f"kernel: unprivileged_bpf_disabled = {value}"


def _perf_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("perf_event_paranoid")
    ok = value is not None and value <= 2 or j.has_cap(_CAP_PERFMON, init_ns=True)
    return ok, f"kernel: perf_event_paranoid = {value}"


def _io_uring_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("io_uring_disabled")
    return not value or (value == 1 and j.has_cap(_CAP_SYS_ADMIN, init_ns=True)), \
        f"kernel: io_uring_disabled = {value}"


def _exp_tiocsti(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "ioctl", {1: _TIOCSTI})
    legacy = j.host.sysctl.get("legacy_tiocsti")
    w.need(legacy != 0 or j.has_cap(_CAP_SYS_ADMIN, init_ns=True), "kernel: dev.tty.legacy_tiocsti = 0")
    rw = _READ_FILE | _WRITE_FILE | _IOCTL_DEV
    own_pty = j.ll_allows("/dev/ptmx", rw) and j.ll_allows("/dev/pts/0", rw)
    # An inherited terminal is not the sandbox's controlling one (new session): the kernel
    # refuses TIOCSTI on it unless the sandbox holds CAP_SYS_ADMIN in the initial namespace.
    inherited = any(fd in j.plan.fds for fd in j.host.ttys) and j.has_cap(_CAP_SYS_ADMIN, init_ns=True)
    return w.need(own_pty or inherited, "landlock: no pty of its own, and no inherited terminal "
                                        "it may steer without CAP_SYS_ADMIN")


def _exp_foreign_arch(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(not j.seccomp_on, "seccomp: foreign architectures kill the process")


def _exp_capset(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "capset")
    return w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN is not in the permitted set")


def _exp_ambient(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prctl")
    w.need(not j.securebits_locked, "securebits: SECBIT_NO_CAP_AMBIENT_RAISE is locked")
    return w.need(j.has_cap(_CAP_SYS_ADMIN) and bool(j.inheritable & (1 << _CAP_SYS_ADMIN)),
                  "capabilities: CAP_SYS_ADMIN is not permitted and inheritable")


def _exp_securebits(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prctl")
    w.need(not j.securebits_locked, "securebits: locked")
    return w.need(j.has_cap(_CAP_SETPCAP), "capabilities: no CAP_SETPCAP")


def _exp_rlimit(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prlimit64")
    hard: int | None = j.host.core_hard
    for name, _number, _soft, limit_hard in j.plan.rlimits:
        if name == "core":
            hard = limit_hard
    return w.need(hard is None or hard >= 1 or j.has_cap(_CAP_SYS_RESOURCE),
                  f"rlimits: core hard limit {hard}, no CAP_SYS_RESOURCE")


def _exp_clone3(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(not j.seccomp_on, "seccomp: clone3 answers ENOSYS")


def _exp_thread(j: _Judge, t: _Targets) -> _Why:
    return j.sc(_Why(), "clone")


def _battery() -> list[_Spec]:
    return [
        _Spec("fs-read-outside", "read a canary file outside every granted path",
              _exp_read(lambda t: t.canary), _run_read_outside),
        _Spec("fs-read-etc-passwd", "read /etc/passwd", _exp_read(lambda t: "/etc/passwd"),
              _run_read_passwd),
        _Spec("fs-list-root", "list the root directory", _exp_list_root, _run_list_root),
        _Spec("fs-write-outside", "create a file in a directory outside every granted path",
              _exp_create(lambda t: t.created), _run_write_outside),
        _Spec("fs-modify-outside", "open the outside canary for writing and append to it",
              _exp_modify_canary, _run_modify_canary),
        _Spec("fs-write-granted", "control: create, write and remove a file in the granted "
              "writable directory", _exp_create(lambda t: t.probe_file("granted")), _run_write_granted,
              needs_writable=True),
        _Spec("fs-symlink-outside", "plant a symlink to the canary in the writable directory "
              "and read through it", _exp_symlink, _run_symlink, needs_writable=True),
        _Spec("fs-hardlink-outside", "hard-link the canary into the writable directory",
              _exp_hardlink, _run_hardlink, needs_writable=True),
        _Spec("fs-mknod", "create a character device (/dev/null's 1:3) in the writable directory",
              _exp_mknod, _run_mknod, needs_writable=True),
        _Spec("exec-bin-true", "execve /bin/true", _exp_execve, _run_execve),
        _Spec("net-tcp-connect", "TCP connect to the parent's listening 127.0.0.1 port",
              _exp_tcp_connect, _run_tcp_connect),
        _Spec("net-tcp-bind", "bind and listen on a TCP port", _exp_tcp_bind, _run_tcp_bind),
        _Spec("net-udp-send", "send a UDP datagram to the parent's 127.0.0.1 port",
              _exp_udp, _run_udp_send),
        _Spec("net-raw-socket", "open a raw socket (AF_INET, SOCK_RAW)",
              _exp_socket(socket.AF_INET, socket.SOCK_RAW, _CAP_NET_RAW),
              _make_socket_runner(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP,
                                  "a raw ICMP socket")),
        _Spec("net-packet-socket", "open a packet socket (AF_PACKET)",
              _exp_socket(socket.AF_PACKET, socket.SOCK_RAW, _CAP_NET_RAW),
              _make_socket_runner(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003),
                                  "an AF_PACKET socket")),
        _Spec("net-netlink-socket", "open a netlink socket (AF_NETLINK, NETLINK_ROUTE)",
              _exp_socket(socket.AF_NETLINK, socket.SOCK_RAW, None),
              _make_socket_runner(socket.AF_NETLINK, socket.SOCK_RAW, 0, "a NETLINK_ROUTE socket")),
        _Spec("net-abstract-unix", "connect to the parent's listening abstract unix socket",
              _exp_abstract, _run_abstract_connect),
        _Spec("proc-ptrace-parent", "ptrace(PTRACE_ATTACH) the parent", _exp_ptrace, _run_ptrace),
        _Spec("proc-parent-mem", "open /proc/<parent>/mem", _exp_proc("mem"), _make_proc_runner("mem")),
        _Spec("proc-parent-environ", "open /proc/<parent>/environ", _exp_proc("environ"),
              _make_proc_runner("environ")),
        _Spec("proc-vm-readv-parent", "process_vm_readv the canary out of the parent's memory",
              _exp_process_vm_readv, _run_process_vm_readv),
        _Spec("signal-parent", "kill(parent, 0): signal a process outside", _exp_kill_parent,
              _run_kill_parent),
        _Spec("signal-pid1", "kill(1, 0): signal PID 1 (outside the sandbox's Landlock domain)",
              _exp_kill_init, _run_kill_init),
        _Spec("signal-pidfd-parent", "pidfd_send_signal(parent, 0) with a pidfd handed in",
              _exp_pidfd_signal, _run_pidfd_signal),
        _Spec("pidfd-getfd-parent", "pidfd_getfd: copy fd 2 out of the parent", _exp_pidfd_getfd,
              _run_pidfd_getfd),
        _Spec("mount-tmpfs", "mount a tmpfs", _exp_mount, _run_mount),
        _Spec("unshare-user", "unshare(CLONE_NEWUSER)", _exp_unshare_user,
              _make_unshare_runner(_CLONE_NEWUSER, "CLONE_NEWUSER")),
        _Spec("unshare-mount", "unshare(CLONE_NEWNS)", _exp_unshare_mount,
              _make_unshare_runner(_CLONE_NEWNS, "CLONE_NEWNS")),
        _Spec("setns-parent-net", "setns into the parent's network namespace (fd handed in)",
              _exp_setns, _run_setns),
        _Spec("chroot", "chroot('/')", _exp_syscall("chroot", cap=_CAP_SYS_CHROOT), _run_chroot),
        _Spec("keyctl", "keyctl: create a process keyring", _exp_syscall("keyctl"), _run_keyctl),
        _Spec("bpf", "bpf(BPF_MAP_CREATE)", _exp_syscall("bpf", extra=_bpf_extra), _run_bpf),
        _Spec("perf-event-open", "perf_event_open of a software counter",
              _exp_syscall("perf_event_open", extra=_perf_extra), _run_perf),
        _Spec("io-uring-setup", "io_uring_setup", _exp_syscall("io_uring_setup", extra=_io_uring_extra),
              _run_io_uring),
        _Spec("userfaultfd", "userfaultfd (user-mode only)", _exp_syscall("userfaultfd"),
              _run_userfaultfd),
        _Spec("personality", "personality(PER_LINUX32)",
              _exp_syscall("personality", args={0: _PER_LINUX32}), _run_personality),
        _Spec("ioctl-tiocsti", "TIOCSTI: push input into a terminal", _exp_tiocsti, _run_tiocsti),
        _Spec("arch-i386-int80", "an i386 syscall through int 0x80 (getpid)", _exp_foreign_arch,
              _run_int80),
        _Spec("arch-x32", "an x32 syscall (getpid | 0x40000000)", _exp_foreign_arch, _run_x32),
        _Spec("cap-capset", "capset: raise CAP_SYS_ADMIN", _exp_capset, _run_capset),
        _Spec("cap-ambient", "prctl(PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN)", _exp_ambient, _run_ambient),
        _Spec("cap-securebits", "prctl(PR_SET_SECUREBITS, 0): unlock the securebits",
              _exp_securebits, _run_securebits),
        _Spec("iopl", "iopl(3): direct I/O port access",
              _exp_syscall("iopl", cap=_CAP_SYS_RAWIO, init_ns=True), _run_iopl),
        _Spec("rlimit-core", "raise RLIMIT_CORE above its hard limit (1/1)", _exp_rlimit, _run_rlimit),
        _Spec("clone3", "clone3 (must answer ENOSYS)", _exp_clone3, _run_clone3),
        _Spec("thread-start", "control: start a thread (glibc falls back from clone3 to clone)",
              _exp_thread, _run_thread),
    ]


# ---------------------------------------------------------------------------------------------
# The child's main function


def _receive_fds(control_fd: int) -> dict[str, int]:
    """The descriptors the parent hands in after the report (pidfd, network namespace)."""
    sock = socket.socket(fileno=os.dup(control_fd))
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 8)
    finally:
        sock.close()
    names = json.loads(data.decode()) if data else []
    return dict(zip(names, fds))


def _child_battery(control_fd: int, specs: list[_Spec], targets: _Targets,
                   seccomp: Mapping[str, str | None], timeout: float) -> int:
    try:
        fds = _receive_fds(control_fd)
    except (OSError, ValueError) as exc:
        control.send(control_fd, {"note": f"no descriptors from the parent: {exc}"})
        fds = {}
    ctx = _Ctx(targets, fds)
    for spec in specs:
        ctx.seccomp = seccomp.get(spec.name)
        try:
            outcome, detail = _run_isolated(spec.run, ctx, timeout)
        except Exception as exc:  # noqa: BLE001 - e.g. fork refused: the attempt's error
            outcome, detail = "error", f"could not run the attempt: {type(exc).__name__}: {exc}"
        control.send(control_fd, {"attempt": {"name": spec.name, "outcome": outcome,
                                              "detail": detail}})
    control.send(control_fd, {"done": True})
    return 0


def _child_script(control_fd: int, path: str, source: str) -> int:
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.close(w)
            # Fresh streams on fds 1 and 2: the inherited sys.stdout may wrap a descriptor
            # the sandbox closed (pytest's capture file, for one).
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                              closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                              closefd=False)
            try:
                sys.stdin = open(0, "r", closefd=False)
            except OSError:
                pass
            status = _exec_script(path, source)
        finally:
            os._exit(status)
    os.close(w)
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = os.read(r, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        if size < _MAX_SCRIPT_OUTPUT:
            chunks.append(chunk)
        size += len(chunk)
    os.close(r)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    output = b"".join(chunks)[:_MAX_SCRIPT_OUTPUT].decode(errors="replace")
    if size > _MAX_SCRIPT_OUTPUT:
        output += f"\n[... {size - _MAX_SCRIPT_OUTPUT} more bytes of output cut]\n"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
        output += "[the script was killed by SIGSYS: a syscall the seccomp filter forbids]\n"
    control.send(control_fd, {"script": {"status": launcher.returncode(status), "output": output}})
    return 0


def _exec_script(path: str, source: str) -> int:
    """Compile and run the script as __main__; its exit status."""
    sys.argv = [path]
    # Tracebacks read lines through linecache; the file itself may not be readable in here.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    status = 0
    try:
        code = compile(source, path, "exec")
        exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
    except SystemExit as exc:
        if exc.code is None:
            status = 0
        elif isinstance(exc.code, int):
            status = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001 - the script's own failure, reported as output
        kind, value, tb = sys.exc_info()
        # Leave out this function's own frame: the traceback starts in the script.
        traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status


# ---------------------------------------------------------------------------------------------
# The parent side


def probe(policy: Policy, variables: Mapping[str, str], script: str | None = None, *,
          attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT) -> ProbeResult:
    """Run the escape battery (or `script`) in a child sandboxed by `policy`."""
    return probe_against(policy, policy, variables, script, attempt_timeout=attempt_timeout)


def probe_against(expected: Policy, enforced: Policy, variables: Mapping[str, str],
                  script: str | None = None, *,
                  attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT) -> ProbeResult:
    """Run the battery under `enforced`, judging each attempt by what `expected` promises.

    `probe` passes the same policy twice. Two different ones compare a sandbox with a claim:
    whatever `expected` forbids that works under `enforced` is reported as an escape (this is
    how the tests show that an escape is detected, without a broken sandbox).
    """
    plan = launcher.prepare(enforced, variables)
    expected_plan = plan if expected is enforced else launcher.prepare(expected, variables)
    source = None
    if script is not None:
        with open(script, encoding="utf-8") as handle:
            source = handle.read()
    judge = _Judge(expected, expected_plan, _Host.detect())
    with _outside_targets(judge, variables) as (targets, listeners):
        specs = [s for s in _battery() if not (s.needs_writable and targets.writable_dir is None)]
        whys = {s.name: s.expect(judge, targets) for s in specs}
        if source is not None:
            assert script is not None
            path = os.path.abspath(script)
            text = source

            def target(fd: int) -> int:
                return _child_script(fd, path, text)
        else:
            seccomp = {name: why.seccomp for name, why in whys.items()}

            def target(fd: int) -> int:
                return _child_battery(fd, specs, targets, seccomp, attempt_timeout)

        child = launcher.spawn(plan, target=target)
        assert child.report is not None
        if expected is enforced and set(child.report.namespaces) != set(plan.namespaces):
            judge = _Judge(expected, expected_plan, judge.host, child.report.namespaces)
            whys = {s.name: s.expect(judge, targets) for s in specs}
        try:
            if source is None:
                _hand_in_fds(child.control)
            results, script_result, trouble = _collect(child, attempt_timeout, source is not None)
        except BaseException:
            child.kill()
            child.wait()
            raise
        if trouble:
            child.kill()
        code = child.wait()
        if source is not None:
            if script_result is None:
                return ProbeResult(child.report, [], code, trouble or
                                   f"[no result: the probe child {launcher.describe_status(child.status or 0)}]")
            return ProbeResult(child.report, [], int(script_result["status"]),  # type: ignore[call-overload]
                               str(script_result["output"]))
        _verify_from_outside(results, targets, listeners)
    missing = trouble or f"no result: the probe child {launcher.describe_status(child.status or 0)}"
    attempts = []
    for spec in specs:
        why = whys[spec.name]
        outcome, detail = results.get(spec.name, ("error", missing))
        attempts.append(Attempt(spec.name, spec.description, why.expected, outcome, detail, why.reason))
    return ProbeResult(child.report, attempts, None, "")


def _hand_in_fds(sock: socket.socket) -> None:
    names: list[str] = []
    fds: list[int] = []
    try:
        fds.append(os.pidfd_open(os.getpid()))
        names.append("pidfd")
    except (OSError, AttributeError):
        pass
    try:
        fds.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        names.append("netns")
    except OSError:
        pass
    try:
        socket.send_fds(sock, [json.dumps(names).encode()], fds)
    finally:
        for fd in fds:
            os.close(fd)


def _collect(child: launcher.SandboxedProcess, attempt_timeout: float, script: bool
             ) -> tuple[dict[str, tuple[str, str]], dict[str, object] | None, str]:
    """Read the child's messages until it is done; returns results, script result, trouble."""
    results: dict[str, tuple[str, str]] = {}
    fd = child.control.fileno()
    wait = None if script else attempt_timeout + 10
    while True:
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return results, None, f"the probe child gave no answer for {wait:g} s (killed)"
        try:
            message = control.recv(fd)
        except (OSError, ValueError) as exc:
            return results, None, f"bad message from the probe child: {exc}"
        if message is None:
            return results, None, ""
        if not isinstance(message, dict):
            continue
        if "attempt" in message:
            item = message["attempt"]
            results[str(item["name"])] = (str(item["outcome"]), str(item["detail"]))
        elif "script" in message:
            return results, dict(message["script"]), ""
        elif "done" in message:
            return results, None, ""
        elif "error" in message:
            err = message["error"]
            return results, None, f"the probe child failed at {err.get('step')}: {err.get('reason')}"


def _verify_from_outside(results: dict[str, tuple[str, str]], targets: _Targets,
                         listeners: Mapping[str, socket.socket]) -> None:
    """What the parent can see for itself overrides a child that says it was denied."""

    def seen(name: str, how: str) -> None:
        outcome, detail = results.get(name, ("error", ""))
        if outcome != "allowed":
            results[name] = ("allowed", f"{how} (the child reported: {detail or 'nothing'})")

    for key, name in (("tcp", "net-tcp-connect"), ("abstract", "net-abstract-unix")):
        sock = listeners[key]
        sock.setblocking(False)
        try:
            conn, _ = sock.accept()
            conn.close()
            seen(name, "the parent accepted a connection from the sandbox")
        except (BlockingIOError, OSError):
            pass
    udp = listeners["udp"]
    udp.setblocking(False)
    try:
        if udp.recv(64) == targets.token.encode():
            seen("net-udp-send", "the parent received the datagram")
    except (BlockingIOError, OSError):
        pass
    if os.path.exists(targets.created):
        seen("fs-write-outside", f"{targets.created} exists")
    try:
        with open(targets.canary, "rb") as handle:
            if handle.read() != targets.secret:
                seen("fs-modify-outside", "the canary was changed")
    except OSError:
        pass
