"""The denial log's monitor as a program of its own: a small interpreter that confines itself,
then answers and logs the refusals of one component (see denial_log.py).

Since 12-08 the monitor that is exec'd is the compiled one (denial_monitor.c: the same
protocol, configuration format, steps and log lines; tests/test_denial_monitor_compiled.py
compares them). This program runs only where the monitor must be a fork, not exec'd
(denial_log.launch's `fork_only`, or a compiled program that cannot be exec'd): its `main`
in that fork. What follows says how it ran when it was exec'd too; the compiled one does the
same.

Started as `python -I -S denial_monitor.py CHANNEL LOG` by a fork of the component before the
component's Landlock step (the interpreter must still be executable then), with no descriptor
but CHANNEL (a unix stream socket to the component) and LOG (its log), no_new_privs set and no
capability left. It imports only the standard library (no site, no cleancoin package), so it
holds none of the component's heap: a fork of a big node kept a copy-on-write image of it,
which grew as the node went on writing (10 MiB in a regtest node).

A process that restricts itself (CleanCoin-node) starts it earlier, before its own imports
and plan (`denial_log.prelaunch`), as `python -I -S denial_monitor.py CHANNEL`, from the same
double fork: no descriptor but CHANNEL, no_new_privs, no capability. Its interpreter then
starts while the component imports and plans; it waits for the configuration, which the
component's set-up code sends once its plan is made and its log opened (before the first
sandbox step), with the log's descriptor attached (SCM_RIGHTS): from then on it holds CHANNEL
and LOG, as one started later does.

A component launched by a zygote (CleanCoin-node's wallet process) gets a monitor forked by
the zygote instead (denial_log.serve_forked, since 12-07): it runs `main` prelaunched in that
fork, with no_new_privs and no capability, and is configured by the component's "denial
monitor" step, without the component's rlimits; everything below applies to it too.

Before it reads anything but the configuration the component's set-up code wrote into
CHANNEL (`encode_config`: the answer table, and the BPF of the monitor's own filter; started
early, with the log's descriptor), it confines itself, each step checked, in this order:

0. its own resource limits (`OWN_RLIMITS`, lowered only: `limit`), never the component's:
   it is started before the component's rlimits step (or prelaunched before any step), so it
   inherits none of them; until 12-07 it did (started after that step, or given them when
   prelaunched), and a policy's `fsize = 0` (the connect broker's) left it unable to write a
   single line of the log;
1. not dumpable (exec made it dumpable again), its name "denial-monitor";
2. no_new_privs, and no capability in any set (capget must show none);
3. Landlock: every filesystem and TCP right handled and none granted, abstract unix sockets
   and signals scoped (it uses only descriptors it holds already);
4. its own seccomp filter: read, write, close, recvmsg, poll, the SECCOMP_IOCTL_NOTIF_RECV
   and _SEND ioctls, memory without PROT_EXEC, signals' return, exit; everything else EPERM.

It then says b"R" on CHANNEL (with what the kernel lacked, for the report), or, run by a
fork of the component without exec (`main`'s `forked`), b"F", why, a newline and the same;
and waits for the listener. A step that fails says b"E" and why,
and the component's start fails naming the step (fail closed). The component cannot ptrace
the monitor or read its memory (it is not dumpable), nor, from Landlock ABI 6 on, signal it:
it is in a Landlock domain of its own, outside the component's, whose signal scope applies.

The same `main` runs in a fork of the component that is not exec'd (denial_log.launch's
`fork_only`: a user namespace this uid owns, where an exec'd program could be traced; or an
interpreter that cannot be executed in the view): forked at the same step, it confines itself
the same way before it takes anything but its configuration.
"""

from __future__ import annotations

import _signal
import _socket
import errno as errno_module
import fcntl
import os
import select
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:     # no typing at run time: every import is memory in each monitor
    from collections.abc import Mapping, Sequence
    from typing import Any

FIRST, EVERY, VERBOSE_PER_SECOND = 10, 1000, 100
#: Kinds of refusal remembered; beyond them a refusal counts under its syscall and errno only.
#: The component chooses the arguments: without a bound, varying the undecided bits of one
#: (clone's other flags) made each call a new kind, logged and remembered.
MAX_KINDS = 256
#: Lines a minute, all kinds together (not under -debug=sandbox, which has its own per-second
#: bound): the log stays readable and small whatever the component does. What is left out is
#: counted and said (`Limiter.summary`).
LINES_PER_MINUTE = 120
NAME = "denial-monitor"

# linux/seccomp.h (x86_64): struct seccomp_notif, seccomp_notif_resp, and the ioctls.
_NOTIF = struct.Struct("<QII iIQ6Q")          # id, pid, flags, seccomp_data(nr, arch, ip, args)
_RESP = struct.Struct("<QqiI")                # id, val, error, flags
IOCTL_NOTIF_RECV = 0xC0000000 | (_NOTIF.size << 16) | (ord("!") << 8) | 0
IOCTL_NOTIF_SEND = 0xC0000000 | (_RESP.size << 16) | (ord("!") << 8) | 1
IOCTL_NOTIF_ID_VALID = 0x40000000 | (8 << 16) | (ord("!") << 8) | 2

# Copies of syscalls.py's and landlock.py's numbers (this program imports nothing of the
# package); tests/test_denial_monitor.py checks the Landlock table against landlock.py.
_PR_SET_DUMPABLE, _PR_SET_NAME, _PR_SET_NO_NEW_PRIVS, _PR_GET_NO_NEW_PRIVS = 4, 15, 38, 39
_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
_SYS_CAPGET, _SYS_SECCOMP = 125, 317
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_RESTRICT_SELF = 444, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
# Every filesystem right by ABI (1: 13 rights, 2: refer, 3: truncate, 5: ioctl_dev), TCP
# bind and connect (ABI 4), abstract unix and signal scopes (ABI 6).
_FS_BY_ABI = ((1, (1 << 13) - 1), (2, 1 << 13), (3, 1 << 14), (5, 1 << 15))


def handled(abi: int) -> tuple[int, int, int]:
    """Every filesystem right, TCP right and scope the kernel knows at this Landlock ABI (what
    landlock.fs_rights, net_rights and scopes give the components)."""
    fs = 0
    for level, rights in _FS_BY_ABI:
        if abi >= level:
            fs |= rights
    return fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0


# ------------------------------------------------------------------ answering and logging

def _holds(cond: Sequence[Any], args: tuple[int, ...]) -> bool:
    index, op, value, mask = cond
    arg = args[index]
    return {"eq": arg == value, "ne": arg != value, "lt": arg < value, "le": arg <= value,
            "gt": arg > value, "ge": arg >= value, "masked_eq": arg & mask == value}[op]


def decide(config: Mapping[str, Any], nr: int, args: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
    """The errno the policy's filter gives this syscall (the rule that matches, else the
    default), and which of the policy's decisions gave it: (syscall, index of its rule), the
    index -1 for the default. The policy, not the component, bounds the decisions: a number
    the monitor has no name for counts as one syscall, -1."""
    for index, (code, conds) in enumerate(config["rules"].get(str(nr), [])):
        if all(_holds(c, args) for c in conds):
            return int(code), (nr, index)
    default = config.get("default")
    return (int(default) if default is not None else errno_module.EPERM,
            (nr if str(nr) in config["names"] else -1, -1))


def answer(config: Mapping[str, Any], nr: int, args: tuple[int, ...]) -> int:
    """The errno the policy's filter gives this syscall (the rule that matches, else the default)."""
    return decide(config, nr, args)[0]


def describe(config: Mapping[str, Any], nr: int, args: tuple[int, ...], verbose: bool) -> str:
    """The syscall in words: its name, and the arguments that decided."""
    name = config["names"].get(str(nr)) or f"syscall {nr}"
    if name in ("socket", "socketpair"):
        family = config["families"].get(str(args[0] & 0xFFFFFFFF), str(args[0]))
        return f"{name}(family={family}, type={args[1] & 0xF})"
    if name == "ioctl":
        return f"ioctl(fd={args[0] & 0xFFFFFFFF}, request={args[1] & 0xFFFFFFFF:#x})"
    if name in ("clone", "unshare"):
        return f"{name}(flags={args[0]:#x})"
    if name == "prctl":
        return f"prctl(option={args[0]}, arg2={args[1]:#x})"
    return f"{name}(" + (", ".join(f"{a:#x}" for a in args[:4]) if verbose else "...") + ")"


class Limiter:
    """What is logged: the first ones of each kind, then every 1000th, at most
    LINES_PER_MINUTE lines a minute (verbose: all, at most VERBOSE_PER_SECOND a second); at
    most MAX_KINDS kinds are remembered. The lines a budget left out are counted.

    Past every budget, the first refusal by each of the policy's decisions (`decide`) is still
    written: the component chooses what spends the budget, and a budget spent on decoys (clone
    with ever new flag bits) hid the TIOCSTI that followed. There are as many such lines as the
    policy has rules and syscalls, however the component varies its arguments."""

    def __init__(self, verbose: bool, max_kinds: int = MAX_KINDS,
                 lines_per_minute: int = LINES_PER_MINUTE) -> None:
        self.verbose = verbose
        self.max_kinds, self.lines_per_minute = max_kinds, lines_per_minute
        self.counts: dict[tuple[int, int, str], int] = {}
        self.window = self.in_window = 0
        self.left_out = 0
        self.decisions: set[tuple[int, int]] = set()

    def count(self, key: tuple[int, int, str]) -> int:
        if key not in self.counts and len(self.counts) >= self.max_kinds:
            key = (key[0], key[1], "")
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def allows(self, n: int, decision: tuple[int, int] | None = None) -> bool:
        first = False
        if decision is not None and decision not in self.decisions:
            self.decisions.add(decision)
            first = True
        if not first and not self.verbose and not (n <= FIRST or n % EVERY == 0):
            return False
        # The budget: per second under verbose, per minute otherwise.
        span, budget = (1, VERBOSE_PER_SECOND) if self.verbose else (60, self.lines_per_minute)
        window = int(time.monotonic() // span)
        if window != self.window:
            self.window, self.in_window = window, 0
        if self.in_window >= budget and not first:
            self.left_out += 1
            return False
        self.in_window += 1
        return True

    def summary(self) -> str | None:
        """The line that says how many lines the budget left out since it last said so (None
        if none), and starts counting again."""
        if not self.left_out:
            return None
        text = (f"sandbox: {self.left_out} more lines of refusals not logged (at most "
                + (f"{VERBOSE_PER_SECOND} lines a second)" if self.verbose
                   else f"{self.lines_per_minute} lines a minute)"))
        self.left_out = 0
        return text


def line(who: str, text: str) -> bytes:
    """A log line in the components' format, `who` the component's label or pid. No strftime:
    it may look for the time zone's file, which the confined monitor cannot open."""
    t = time.gmtime()
    stamp = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
    return f"{stamp}Z [sandbox:{who}] [cleancoin.sandbox] WARNING {text}\n".encode()


def _who(config: Mapping[str, Any], target: int) -> str:
    """How a line names the component: its label, or its pid."""
    return config.get("label") or str(target)


def log_line(config: Mapping[str, Any], limiter: Limiter, target: int, nr: int, args: tuple[int, ...],
             thread: int, code: int, decision: tuple[int, int] | None = None) -> bytes | None:
    """The log line for a notification answered with `code` (None: rate-limited away);
    `decision` is `decide`'s, whose first refusal no budget leaves out."""
    # Counted per syscall, errno and deciding argument (the family, the request).
    short = describe(config, nr, args, False)
    # Past MAX_KINDS a refusal counts under its decision's syscall: a number the policy does
    # not name is -1, so that unnamed numbers (an errno default) cannot grow the table either.
    seen = limiter.count((decision[0] if decision is not None else nr, code, short))
    if not limiter.allows(seen, decision):
        return None
    what = describe(config, nr, args, limiter.verbose)
    tail = f" ({seen} times)" if seen > FIRST and not limiter.verbose else ""
    who = f", thread {thread}" if limiter.verbose else ""
    label = _who(config, target)
    left_out = limiter.summary()
    return ((line(label, left_out) if left_out else b"")
            + line(label, f"sandbox: refused {what} -> {errno_module.errorcode.get(code, code)}{who}{tail}"))


class LogWriter:
    """Appends lines to the log and survives a write that fails: a full disk (which a
    component that may write to the same filesystem can cause at will) or a log that cannot
    grow must not stop the monitor, after which the kernel would answer ENOSYS and nothing would
    be logged again. Lines that could not be written whole are counted and said in the next
    line that can be."""

    def __init__(self, out: int, who: str) -> None:
        self.out, self.who = out, who
        self.lost, self.why = 0, ""
        self._mid_line = False          # a short write left a line without its end

    def write(self, text: bytes) -> None:
        notice = (line(self.who, f"sandbox: {self.lost} lines of refusals could not be written to this "
                                 f"log ({self.why})") if self.lost else b"")
        data = (b"\n" if self._mid_line else b"") + notice + text
        try:
            written = os.write(self.out, data)
        except OSError as exc:
            self.lost += text.count(b"\n")
            self.why = os.strerror(exc.errno) if exc.errno else str(exc)
            return
        if written < len(data):
            self._mid_line = data[written - 1:written] != b"\n" if written else self._mid_line
            self.why = "the log stopped growing"
        else:
            self._mid_line = False
        if written < len(data) - len(text):       # the notice did not go out whole: it stands
            self.lost += text.count(b"\n")
        else:
            self.lost = data[written:].count(b"\n")


def serve(listener: int, out: int, config: Mapping[str, Any], target: int) -> None:
    """Answer and log notifications until the filter has no process left. Never returns."""
    recv = bytearray(_NOTIF.size)
    # The bounds come with the configuration only so that a test can show what probe's
    # denial-log-flood catches without them; denial_log never sets them.
    limiter = Limiter(bool(config.get("verbose")), int(config.get("max_kinds", MAX_KINDS)),
                      int(config.get("lines_per_minute", LINES_PER_MINUTE)))
    writer = LogWriter(out, _who(config, target))
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        for _fd, mask in poller.poll():
            if mask & select.POLLIN:
                recv[:] = bytes(_NOTIF.size)       # the kernel refuses a buffer that is not zero
                try:
                    fcntl.ioctl(listener, IOCTL_NOTIF_RECV, recv, True)
                except OSError as exc:
                    if exc.errno in (errno_module.ENOENT, errno_module.EINTR):
                        continue               # withdrawn: the thread got a signal, or died
                    raise
                nid, thread, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(recv)
                code, decision = decide(config, nr, tuple(args))
                try:
                    fcntl.ioctl(listener, IOCTL_NOTIF_SEND, _RESP.pack(nid, 0, -code, 0))
                except OSError as exc:
                    if exc.errno != errno_module.ENOENT:   # withdrawn meanwhile
                        raise
                # Described after the answer: the refused thread does not wait for its log line.
                text = log_line(config, limiter, target, nr, tuple(args), thread, code, decision)
                if text is not None:
                    writer.write(text)
            elif mask & (select.POLLHUP | select.POLLERR):
                left_out = limiter.summary()
                if left_out or writer.lost:
                    writer.write(line(writer.who, left_out) if left_out else b"")
                os._exit(0)


# ------------------------------------------------------------------ the program

class ConfineError(Exception):
    """A confinement step failed: (step, reason)."""


def _lowered(current: int, wanted: int | None, infinity: int) -> int:
    if wanted is None:
        return current
    return wanted if current == infinity else min(current, wanted)


#: The monitor's own resource limits (name, resource, soft, hard): no core file of what it
#: holds (the component's syscall arguments), a few descriptors (its channel, the log, the
#: listener; its filter lets it open nothing), and 1 GiB of address space (the program maps
#: 13 MiB; a fork of a zygote's component, where it is not exec'd, about 40 MiB). Not the
#: component's: their file size limit is for the component's files (the connect broker's is
#: 0), not for the log the monitor writes.
OWN_RLIMITS = (("core", 4, 0, 0), ("nofile", 7, 16, 16),            # RLIMIT_CORE, RLIMIT_NOFILE
               ("as", 9, 1 << 30, 1 << 30))                          # RLIMIT_AS


def limit(rlimits: Sequence[Sequence[Any]]) -> None:
    """Resource limits (name, resource, soft, hard; None is unlimited: OWN_RLIMITS), each
    lowered to at most the given one, never raised, which needs no privilege."""
    if not rlimits:
        return
    import resource
    inf = resource.RLIM_INFINITY
    for name, number, soft, hard in rlimits:
        old_soft, old_hard = resource.getrlimit(int(number))
        new_hard = _lowered(old_hard, hard, inf)
        new_soft = _lowered(old_soft, soft, inf)
        if new_hard != inf and (new_soft == inf or new_soft > new_hard):
            new_soft = new_hard
        try:
            resource.setrlimit(int(number), (new_soft, new_hard))
        except (ValueError, OSError) as exc:
            raise ConfineError("rlimits", f"{name}: {exc}") from None


def _libc() -> Any:
    import ctypes
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def _call(result: int, step: str, what: str) -> int:
    if result < 0:
        import ctypes
        raise ConfineError(step, f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def confine(bpf: bytes, mdwe: bool, landlock_needed: bool) -> list[str]:
    """Confine this process for good (the module docstring's steps); returns notes."""
    import ctypes
    libc = _libc()
    ul = ctypes.c_ulong
    notes: list[str] = []
    _call(libc.prctl(_PR_SET_DUMPABLE, ul(0), ul(0), ul(0), ul(0)), "dumpable", "prctl(PR_SET_DUMPABLE)")
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(NAME.encode()), ul(0), ul(0), ul(0))
    _call(libc.prctl(_PR_SET_NO_NEW_PRIVS, ul(1), ul(0), ul(0), ul(0)), "no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_GET_NO_NEW_PRIVS, ul(0), ul(0), ul(0), ul(0)) != 1:
        raise ConfineError("no_new_privs", "not set")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)          # _LINUX_CAPABILITY_VERSION_3, self
    data = (ctypes.c_uint32 * 6)()                           # effective, permitted, inheritable x2
    _call(libc.syscall(_SYS_CAPGET, header, data), "capabilities", "capget")
    if any(data):
        raise ConfineError("capabilities", f"capabilities still held: {list(data)}")
    if mdwe:
        if libc.prctl(_PR_SET_MDWE, ul(_PR_MDWE_REFUSE_EXEC_GAIN), ul(0), ul(0), ul(0)) < 0:
            notes.append("no memory-deny-write-execute (kernel before 6.3)")
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        if landlock_needed:
            raise ConfineError("landlock", "the kernel has no Landlock")
        notes.append("no Landlock (the kernel lacks it, as the component's plan says)")
    else:
        fs, net, scoped = handled(abi)
        attr = (ctypes.c_uint64 * 3)(fs, net, scoped)
        size = 24 if scoped else 16 if net else 8
        ruleset = _call(libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint32(0)),
                        "landlock", "landlock_create_ruleset")
        try:
            _call(libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_long(ruleset), ctypes.c_uint32(0)),
                  "landlock", "landlock_restrict_self")
        finally:
            os.close(ruleset)
    if not bpf or len(bpf) % 8:
        raise ConfineError("seccomp", f"malformed BPF program of {len(bpf)} bytes")
    buf = ctypes.create_string_buffer(bpf, len(bpf))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _call(libc.syscall(_SYS_SECCOMP, ctypes.c_long(1), ctypes.c_long(0), ctypes.byref(prog)),
          "seccomp", "seccomp(SET_MODE_FILTER)")
    return notes


#: The configuration's format (`encode_config`), which the compiled monitor
#: (denial_monitor.c) reads too, and its bounds there.
MAGIC, VERSION, MAX_CONFIG = b"CCDM", 1, 1 << 20
_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "masked_eq")
_MAX_STR, _MAX_LABEL, _MAX_NR, _MAX_KINDS_CAP = 63, 255, 1024, 1 << 20


def _text(value: str, limit: int, what: str) -> bytes:
    data = value.encode()
    if len(data) > limit or not all(0x20 <= b <= 0x7E for b in data):
        raise ValueError(f"denial monitor configuration: {what} {value!r} is not printable ASCII of at most "
                         f"{limit} bytes")
    return len(data).to_bytes(2, "little") + data


def encode_config(config: Mapping[str, Any]) -> bytes:
    """The monitor's configuration (denial_log.monitor_config's table) as the compiled
    monitor and `decode_config` read it, with its length first: fixed-width little-endian
    numbers and length-prefixed strings (the format is in denial_monitor.c's header)."""
    u32, i32 = struct.Struct("<I").pack, struct.Struct("<i").pack
    default = config.get("default")
    out = [MAGIC, u32(VERSION), u32(int(config["target"])),
           bytes([bool(config.get("verbose")), bool(config.get("mdwe")), bool(config.get("landlock")),
                  default is not None]),
           i32(int(default) if default is not None else 0),
           u32(int(config.get("max_kinds", MAX_KINDS))), u32(int(config.get("lines_per_minute", LINES_PER_MINUTE))),
           _text(str(config.get("label") or ""), _MAX_LABEL, "label")]
    bpf = bytes(config["bpf"])
    out += [u32(len(bpf)), bpf, u32(len(config["rules"]))]
    codes = {int(default)} if default is not None else set()
    for nr, rules in config["rules"].items():
        out += [i32(int(nr)), u32(len(rules))]
        for code, conds in rules:
            codes.add(int(code))
            out += [i32(int(code)), u32(len(conds))]
            for index, op, value, mask in conds:
                out += [bytes([int(index), _OPS.index(op)]),
                        struct.pack("<QQ", int(value) & (1 << 64) - 1, int(mask or 0) & (1 << 64) - 1)]
    out.append(u32(len(config["names"])))
    for nr, name in config["names"].items():
        out += [i32(int(nr)), _text(name, _MAX_STR, "syscall name")]
    out.append(u32(len(config["families"])))
    for number, name in config["families"].items():
        out += [u32(int(number)), _text(name, _MAX_STR, "family")]
    names = {code: errno_module.errorcode[code] for code in sorted(codes) if code in errno_module.errorcode}
    out.append(u32(len(names)))
    for code, name in names.items():
        out += [i32(code), _text(name, _MAX_STR, "errno")]
    body = b"".join(out)
    if len(body) > MAX_CONFIG:
        raise ValueError(f"denial monitor configuration of {len(body)} bytes, more than {MAX_CONFIG}")
    return len(body).to_bytes(4, "little") + body


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.at:
            raise ConfineError("configuration", f"malformed: {what}")
        self.at += n
        return self.data[self.at - n:self.at]

    def number(self, fmt: str, what: str) -> int:
        return int(struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0])

    def text(self, limit: int, what: str) -> str:
        data = self.take(self.number("<H", what), what)
        if len(data) > limit or not all(0x20 <= b <= 0x7E for b in data):
            raise ConfineError("configuration", f"malformed: {what}")
        return data.decode()


def decode_config(data: bytes) -> dict[str, Any]:
    """`encode_config`'s table back (without its length), checked as the compiled monitor
    checks it: anything malformed raises ConfineError("configuration", ...)."""
    r = _Reader(data)
    if r.take(4, "magic") != MAGIC:
        raise ConfineError("configuration", "malformed: not a monitor configuration")
    if r.number("<I", "version") != VERSION:
        raise ConfineError("configuration", "malformed: unknown version")
    config: dict[str, Any] = {"target": r.number("<I", "target")}
    flags = r.take(4, "flags")
    config["verbose"], config["mdwe"], config["landlock"] = bool(flags[0]), bool(flags[1]), bool(flags[2])
    default = r.number("<i", "default")
    config["default"] = default if flags[3] else None
    config["max_kinds"], config["lines_per_minute"] = r.number("<I", "max_kinds"), r.number("<I", "lines_per_minute")
    config["label"] = r.text(_MAX_LABEL, "label")
    config["bpf"] = r.take(r.number("<I", "bpf"), "bpf")
    if config["max_kinds"] > _MAX_KINDS_CAP:
        raise ConfineError("configuration", "malformed: max_kinds")
    if flags[3] and not 0 < default <= 4095:
        raise ConfineError("configuration", "malformed: default")
    rules: dict[str, list[list[Any]]] = {}
    count = 0
    for _ in range(r.number("<I", "rules")):
        nr, n = r.number("<i", "rules"), r.number("<I", "rules")
        count += n
        if count > 4096:
            raise ConfineError("configuration", "malformed: too many rules")
        group = rules.setdefault(str(nr), [])
        for _ in range(n):
            code, nconds = r.number("<i", "rules"), r.number("<I", "rules")
            if not 0 < code <= 4095 or nconds > 6:
                raise ConfineError("configuration", "malformed: rule")
            conds = []
            for _ in range(nconds):
                index, op = r.take(2, "condition")
                value, mask = struct.unpack("<QQ", r.take(16, "condition"))
                if index > 5 or op >= len(_OPS):
                    raise ConfineError("configuration", "malformed: condition")
                conds.append([index, _OPS[op], value, mask])
            group.append([code, conds])
    config["rules"] = rules
    names = {}
    for _ in range(r.number("<I", "names")):
        nr, name = r.number("<i", "names"), r.text(_MAX_STR, "names")
        if not 0 <= nr < _MAX_NR or not name:
            raise ConfineError("configuration", "malformed: names")
        names[str(nr)] = name
    config["names"] = names
    config["families"] = {str(r.number("<I", "families")): r.text(_MAX_STR, "families")
                          for _ in range(r.number("<I", "families"))}
    config["errnos"] = {r.number("<i", "errnos"): r.text(_MAX_STR, "errnos") for _ in range(r.number("<I", "errnos"))}
    if r.at != len(data):
        raise ConfineError("configuration", "malformed: trailing bytes")
    return config


def read_config(channel: int, data: bytes = b"") -> dict[str, Any]:
    """The configuration the component wrote before the fork (or, started early, once its
    plan was made): length (4 bytes), then `encode_config`'s bytes. `data`: what was read of
    it already."""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "little"):
        if len(data) >= 4 and int.from_bytes(data[:4], "little") > MAX_CONFIG:
            raise ConfineError("configuration", f"{int.from_bytes(data[:4], 'little')} bytes, more than {MAX_CONFIG}")
        chunk = os.read(channel, 1 << 16)
        if not chunk:
            raise ConfineError("configuration", "the component hung up")
        data += chunk
    return decode_config(data[4:4 + int.from_bytes(data[:4], "little")])


def _receive_listener(sock: _socket.socket) -> int | None:
    fds = struct.Struct("i")
    try:
        _msg, ancillary, _flags, _addr = sock.recvmsg(16, _socket.CMSG_SPACE(fds.size))
    except OSError:
        return None
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= fds.size:
            return int(fds.unpack_from(data)[0])
    return None


def read_config_and_log(sock: _socket.socket) -> tuple[dict[str, Any], int]:
    """A monitor started early (`denial_log.prelaunch`): the configuration as `read_config`
    reads it, with the log's descriptor on its first bytes (SCM_RIGHTS). Exactly one
    descriptor is taken; anything else that came along is closed."""
    fds = struct.Struct("i")
    try:
        data, ancillary, _flags, _addr = sock.recvmsg(1 << 16, _socket.CMSG_SPACE(4 * fds.size))
    except OSError as exc:
        raise ConfineError("configuration", f"recvmsg: {exc.strerror}") from None
    received = [fd for level, kind, raw in ancillary
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
                for (fd,) in fds.iter_unpack(raw[:len(raw) - len(raw) % fds.size])]
    for extra in received[1:]:
        os.close(extra)
    if not data:
        raise ConfineError("configuration", "the component hung up")
    if not received:
        raise ConfineError("configuration", "no log descriptor came with it")
    return read_config(sock.fileno(), data), received[0]


def main(argv: Sequence[str], forked: str = "") -> int:
    """`denial_monitor.py CHANNEL LOG`: confine, say ready, serve. Exits 0 when the component
    is gone, 1 on an error (the kernel answers ENOSYS without a monitor: still refused).
    `forked`: run by a fork of the component, not exec'd, and why (said with the answer).

    `denial_monitor.py CHANNEL` (started early: `denial_log.prelaunch`): the configuration
    and the log's descriptor come over CHANNEL, sent by the component's set-up code once its
    plan is made; nothing else is taken before the monitor is confined."""
    channel, out = int(argv[0]), (int(argv[1]) if len(argv) > 1 else -1)
    # A terminal's or a supervisor's signal to the component's process group is the
    # component's to handle: the monitor ends when the filter has no process left, so that
    # refusals during the component's shutdown are still answered with their errno.
    for sig in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGHUP, _signal.SIGTERM, _signal.SIGUSR1,
                _signal.SIGUSR2):
        _signal.signal(sig, _signal.SIG_IGN)
    try:
        # Everything that opens a file or asks about the socket happens before confinement.
        sock = _socket.socket(fileno=channel)
        # Imported before the configuration is waited for: started early, the interpreter's
        # imports overlap the component's set-up, and confine() then has nothing to load.
        import ctypes  # noqa: F401
        if out < 0:
            config, out = read_config_and_log(sock)
        else:
            config = read_config(channel)
        limit(OWN_RLIMITS)
        notes = confine(bytes(config["bpf"]), bool(config.get("mdwe")), bool(config.get("landlock")))
    except ConfineError as exc:
        step, reason = exc.args
        os.write(channel, f"E{step}: {reason}".encode())
        return 1
    except Exception as exc:  # noqa: BLE001 - the component must learn why, in one line
        os.write(channel, f"Esetup: {type(exc).__name__}: {exc}".encode())
        return 1
    # Confined: from here on, what arrives is the component's and is only parsed as numbers.
    answer = f"F{forked}\n" if forked else "R"
    os.write(channel, (answer + "; ".join(notes)).encode())
    listener = _receive_listener(sock)
    sock.close()
    if listener is None:
        return 0
    try:
        serve(listener, out, config, int(config["target"]))
    except BaseException as exc:  # noqa: BLE001 - the kernel answers ENOSYS without us: still refused
        try:
            os.write(out, line(_who(config, int(config["target"])), f"sandbox: the denial monitor stopped "
                                                      f"({type(exc).__name__}: {exc}); refusals now "
                                                      "answer ENOSYS, unlogged"))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
