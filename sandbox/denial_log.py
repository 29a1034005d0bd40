"""The denial log: refused syscalls in the component's own log, with the syscall and why.

A refusal with an errno (an argument rule such as TIOCSTI -> EPERM, a socket family the
policy does not list -> EAFNOSUPPORT, clone with namespace flags, an errno default) lets the
component go on, and so goes unnoticed unless someone says it happened. With a denial log the
filter sends those syscalls to a monitor (SECCOMP_RET_USER_NOTIF) instead of answering them
itself; the monitor answers the very same errno (the syscall never runs: the notification is
the refusal) and writes a line to the log. If the monitor is gone, the kernel answers ENOSYS:
still refused. Refusals that kill (kill_process) stay in the filter, untouched: the component's
launcher reports the SIGSYS, with the syscall where the kernel's audit log is readable
(`kernel_log`). clone3's ENOSYS, a fixed part of every filter, is not logged.

The monitor is forked by the component at its seccomp step, after Landlock and the capability
drop (it is confined like the component, and may write what it may write: its log), and
receives the listener over a socket pair: that needs sendmsg and close to be allowed, which
every CleanCoin policy allows; a policy that does not gets no denial log (the report says so).

Lines are rate-limited: the first 10 of each syscall and errno, then every 1000th with its
count. Verbose (-debug=sandbox) logs every refusal with its arguments, at most 100 a second.
"""

from __future__ import annotations

import dataclasses
import errno as errno_module
import os
import select
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import notify, syscalls
from .errors import EnforcementError
from .plan import Plan

_FIRST, _EVERY, _VERBOSE_PER_SECOND = 10, 1000, 100


@dataclass(frozen=True)
class DenialLog:
    """Where a component's refusals are logged: a file (appended), or "" for its stderr."""

    log: str = ""
    verbose: bool = False


def plan_with_denials(plan: Plan, policy: Any, config: DenialLog) -> Plan:
    """The plan with a notifying filter and the monitor's table; unchanged (with a note in the
    report) where a denial log cannot be set up."""
    from . import seccomp
    from .filter_spec import filter_spec
    if plan.learn or not plan.seccomp_bpf or not policy.seccomp.enabled:
        return plan
    missing = [n for n in ("sendmsg", "close") if n not in policy.allowed_syscalls]
    if missing:
        return _noted(plan, f"no denial log: the policy does not allow {', '.join(missing)}, which "
                            "hand the filter's listener to the monitor")
    spec = filter_spec(policy)
    table = seccomp.rule_table(spec)
    default_errno = _errno(table.default_action)
    rules: dict[int, list[list[Any]]] = {}
    names: dict[int, str] = {}
    for rule in table.rules:
        number = seccomp.syscall_number(rule.syscall)
        code = _errno(rule.action)
        if number is None or number < 0 or code is None or rule.syscall == "clone3":
            continue
        names[number] = rule.syscall
        conds = [[c.index, c.op, c.value, c.mask] for c in rule.args]
        rules.setdefault(number, []).append([code, conds])
    compiled = seccomp.compile_filter(spec, notify_errno=True)
    notified = bool(rules) or default_errno is not None
    if not notified:
        return plan
    denials = {"log": config.log, "verbose": config.verbose, "rules": {str(k): v for k, v in rules.items()},
               "default": default_errno, "names": {str(k): v for k, v in names.items()},
               "families": {}}
    from .families import BY_NUMBER
    denials["families"] = {str(k): v for k, v in BY_NUMBER.items()}
    return _noted(dataclasses.replace(plan, seccomp_bpf=compiled.bpf, seccomp_sha256=compiled.sha256,
                                      denials=denials),
                  "refusals with an errno are answered by a monitor and logged"
                  + (f" to {config.log}" if config.log else " to stderr")
                  + (" (verbose)" if config.verbose else " (rate-limited)"))


def _errno(action: str) -> int | None:
    if action.startswith("errno:"):
        return int(getattr(errno_module, action.split(":", 1)[1]))
    return None


def _noted(plan: Plan, note: str) -> Plan:
    mechanisms = dict(plan.mechanisms)
    old = mechanisms.get("seccomp")
    if old is not None:
        mechanisms["seccomp"] = dataclasses.replace(old, details=(*old.details, note))
    return dataclasses.replace(plan, mechanisms=mechanisms)


# ------------------------------------------------------------------------ in the component

def start(plan: Plan) -> str:
    """The seccomp step with a denial log: fork the monitor, load the filter, hand it over."""
    config = plan.denials
    try:
        if config["log"]:
            out = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        else:
            out = os.dup(2)
    except OSError as exc:
        raise EnforcementError("seccomp", f"denial log {config['log'] or 'stderr'}: {exc.strerror}") from None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    target = os.getpid()
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                from . import descriptors
                ours.close()
                descriptors.keep_only({out, theirs.fileno()})
                syscalls.set_name("denial-monitor")
                _serve(theirs, out, config, target)
        finally:
            os._exit(0)
    theirs.close()
    os.waitpid(middle, 0)
    os.close(out)
    listener = notify.load_with_listener(plan.seccomp_bpf)
    # From here on every syscall is filtered: sendmsg and close are allowed (checked when planned).
    socket.send_fds(ours, [b"L"], [listener])
    os.close(listener)
    ours.close()
    return "denial log: a monitor answers and logs refusals with an errno"


def _holds(cond: Sequence[Any], args: tuple[int, ...]) -> bool:
    index, op, value, mask = cond
    arg = args[index]
    return {"eq": arg == value, "ne": arg != value, "lt": arg < value, "le": arg <= value,
            "gt": arg > value, "ge": arg >= value, "masked_eq": arg & mask == value}[op]


def answer(config: Mapping[str, Any], nr: int, args: tuple[int, ...]) -> int:
    """The errno the policy's filter gives this syscall (the rule that matches, else the default)."""
    for code, conds in config["rules"].get(str(nr), []):
        if all(_holds(c, args) for c in conds):
            return int(code)
    default = config.get("default")
    return int(default) if default is not None else errno_module.EPERM


def describe(config: Mapping[str, Any], nr: int, args: tuple[int, ...], verbose: bool) -> str:
    """The syscall in words: its name, and the arguments that decided."""
    name = config["names"].get(str(nr)) or _name(nr)
    if name in ("socket", "socketpair"):
        family = config["families"].get(str(args[0] & 0xFFFFFFFF), str(args[0]))
        text = f"{name}(family={family}, type={args[1] & 0xF})"
    elif name == "ioctl":
        text = f"ioctl(fd={args[0] & 0xFFFFFFFF}, request={args[1] & 0xFFFFFFFF:#x})"
    elif name in ("clone", "unshare"):
        text = f"{name}(flags={args[0]:#x})"
    elif name == "prctl":
        text = f"prctl(option={args[0]}, arg2={args[1]:#x})"
    else:
        text = f"{name}(" + (", ".join(f"{a:#x}" for a in args[:4]) if verbose else "...") + ")"
    return text


def _name(nr: int) -> str:
    from . import seccomp
    lib = seccomp._lib()  # noqa: SLF001
    try:
        name = lib.resolve_syscall(lib.Arch.NATIVE, nr)
    except ValueError:
        return f"syscall {nr}"
    return name.decode() if isinstance(name, bytes) else str(name)


class _Limiter:
    """What is logged: the first ones of each kind, then every 1000th (verbose: all, bounded)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.counts: dict[tuple[int, int, str], int] = {}
        self.second = 0
        self.in_second = 0

    def count(self, key: tuple[int, int, str]) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def allows(self, n: int) -> bool:
        if self.verbose:
            now = int(time.monotonic())
            if now != self.second:
                self.second, self.in_second = now, 0
            self.in_second += 1
            return self.in_second <= _VERBOSE_PER_SECOND
        return n <= _FIRST or n % _EVERY == 0


def _line(pid: int, text: str) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return f"{stamp}Z [sandbox:{pid}] [cleancoin.sandbox] WARNING {text}\n".encode()


def _serve(channel: socket.socket, out: int, config: Mapping[str, Any], target: int) -> None:
    """The monitor: never returns."""
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(channel, 16, 1)
        channel.close()
        if not fds:
            os._exit(0)
        listener = notify.Listener(fds[0])
        limiter = _Limiter(bool(config.get("verbose")))
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)
        while True:
            for _fd, mask in poller.poll():
                if mask & select.POLLIN:
                    n = listener.receive()
                    if n is None:
                        continue
                    code = answer(config, n.nr, n.args)
                    listener.fail(n.id, code)
                    # Counted per syscall, errno and deciding argument (the family, the request).
                    short = describe(config, n.nr, n.args, False)
                    seen = limiter.count((n.nr, code, short))
                    if limiter.allows(seen):
                        what = describe(config, n.nr, n.args, limiter.verbose)
                        tail = f" ({seen} times)" if seen > _FIRST and not limiter.verbose else ""
                        thread = f", thread {n.pid}" if limiter.verbose else ""
                        os.write(out, _line(target, f"sandbox: refused {what} -> "
                                                    f"{errno_module.errorcode.get(code, code)}{thread}{tail}"))
                elif mask & (select.POLLHUP | select.POLLERR):
                    os._exit(0)
    except BaseException:  # noqa: BLE001 - the kernel answers ENOSYS without us: still refused
        os._exit(1)
