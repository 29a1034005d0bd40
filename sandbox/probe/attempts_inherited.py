"""Attempts on what a sandbox could inherit or have redirected: descriptors opened before it
went up, a terminal, its launcher's memory, a named unix socket outside its grants, a grant
path swapped for a symlink between two launches, and its launcher's output relay.

Most run inside like every other attempt. Some need the parent to set the scene in a way a
careless launcher would, or to watch the launcher's side, so they run in the parent
(`PARENT_RUNS`): descriptors left open across the launch and across a self-restriction, a
terminal left open, a grant swapped by one launch before the next, output without newlines
that a line-by-line relay (the zygote's) could be made to hold, a denial log the
component could reach to erase the record of its refusals, and another process of the same
uid tracing the processes of a sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import os
import socket
import stat
import struct
import termios
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import launcher, stdio, steps, syscalls
from .judge import _Judge, _Why
from .kernel_abi import _NR, _errname, _libc, _syscall
from .runner import Outcome, _Ctx, _interpret, _ok, _Out
from .targets import _Targets

if TYPE_CHECKING:
    from ..plan import Plan

_MAX_FD = 4096


# inside -----------------------------------------------------------------------------------

def _walk_out(targets: _Targets) -> list[str]:
    """Every open descriptor tried as a directory to walk from to the outside canary."""
    found = []
    relative = [os.path.relpath(targets.canary, base) for base in ("/", targets.outside_dir)]
    for fd in range(3, _MAX_FD):
        try:
            os.fstat(fd)
        except OSError:
            continue
        for rel in relative:
            try:
                handle = os.open(rel, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            try:
                if os.read(handle, 4096) == targets.secret:
                    found.append(f"fd {fd} leads to the canary ({rel})")
            finally:
                os.close(handle)
    return found


def _run_fd_walk(ctx: _Ctx, out: _Out) -> Outcome:
    found = _walk_out(ctx.targets)
    if found:
        return _ok("; ".join(found[:3]))
    return "denied", "no open descriptor leads outside (descriptor allowlist)"


def _run_named_socket(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:        # a filter that refuses the family with an errno
        return ctx.denied(exc)
    sock.settimeout(3)
    try:
        sock.connect(ctx.targets.unix_socket)
    except OSError as exc:
        return ctx.denied(exc, ENOENT="not in the sandbox's filesystem view",
                          EACCES="landlock", ECONNREFUSED="kernel: nobody listens there")
    finally:
        sock.close()
    return _ok(f"connected to {ctx.targets.unix_socket}")


def _run_launcher_memory(ctx: _Ctx, out: _Out) -> Outcome:
    """Is the launcher's secret at the address where the launcher holds it? write(2) from an
    unmapped address fails with EFAULT instead of crashing, so this is safe to ask."""
    # Any pair of connected descriptors will do: a socket pair where the policy allows one
    # (the wallet's refuses pipe2), else a pipe.
    try:
        first, second = socket.socketpair()
        r, w = first.detach(), second.detach()
    except OSError:
        r, w = os.pipe()
    try:
        size = 32
        ctypes.set_errno(0)
        written = _libc.write(w, ctypes.c_void_p(ctx.targets.memory_addr), ctypes.c_size_t(size))
        if written != size:
            err = ctypes.get_errno()
            return "denied", f"{_errname(err)}: nothing mapped at the launcher's address (a fresh process)"
        data = os.read(r, size)
    finally:
        os.close(r)
        os.close(w)
    if hashlib.sha256(data).hexdigest() == ctx.targets.memory_hash:
        return _ok("the launcher's secret is in this process's memory, at the launcher's address")
    return "denied", "the address holds something else (not a copy of the launcher's memory)"


def _exclusive(fd: int) -> str:
    # Undone at once: while it holds, a later open of the terminal fails with EBUSY.
    fcntl.ioctl(fd, syscalls.TIOCEXCL, 0)
    kept = struct.unpack("i", fcntl.ioctl(fd, syscalls.TIOCGEXCL, bytes(4)))[0]
    fcntl.ioctl(fd, syscalls.TIOCNXCL, 0)
    return "" if kept else ", not kept"


def _break_line(fd: int) -> None:
    fcntl.ioctl(fd, syscalls.TIOCSBRK, 0)
    fcntl.ioctl(fd, syscalls.TIOCCBRK, 0)


def _read_typed(fd: int) -> bool:
    os.set_blocking(fd, False)
    return bool(os.read(fd, 64))


#: What a process could do to a terminal on its descriptors, each with the terminal's own
#: state (its modes, size, line discipline; output on), so that nothing changes if it passes:
#: (what it did, the request; a result of False means it did nothing, a string is added).
#: Since 12-07 also the requests that steer a terminal without changing its modes, and the
#: rest of what the base filter's allow-list keeps out.
_TERMINAL_REQUESTS: tuple[tuple[str, Callable[[int], object]], ...] = (
    ("changed fd {fd}'s terminal modes (TCSETS)",
     lambda fd: termios.tcsetattr(fd, termios.TCSANOW, termios.tcgetattr(fd))),
    ("pushed input into fd {fd}'s terminal (TIOCSTI)", lambda fd: fcntl.ioctl(fd, termios.TIOCSTI, b"#")),
    ("resized fd {fd}'s terminal (TIOCSWINSZ)",
     lambda fd: fcntl.ioctl(fd, termios.TIOCSWINSZ, fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))),
    ("restarted fd {fd}'s terminal's output (TCXONC)", lambda fd: termios.tcflow(fd, termios.TCOON)),
    ("made fd {fd}'s terminal exclusive (TIOCEXCL{})", _exclusive),
    ("set fd {fd}'s terminal's line discipline (TIOCSETD)",
     lambda fd: fcntl.ioctl(fd, syscalls.TIOCSETD, fcntl.ioctl(fd, syscalls.TIOCGETD, bytes(4)))),
    ("set fd {fd}'s terminal's break line (TIOCSBRK)", _break_line),
    ("read what was typed on fd {fd}'s terminal", _read_typed),
)


def _terminal_ops(fd: int) -> list[str]:
    done = []
    for what, request in _TERMINAL_REQUESTS:
        try:
            result = request(fd)
        except (OSError, termios.error):
            continue
        if result is not False:
            done.append(what.format(result if isinstance(result, str) else "", fd=fd))
    return done


def _run_terminal(ctx: _Ctx, out: _Out) -> Outcome:
    ttys = []
    for fd in range(0, _MAX_FD):
        try:
            if stat.S_ISCHR(os.fstat(fd).st_mode) and os.isatty(fd):
                ttys.append(fd)
        except OSError:
            continue
    if not ttys:
        return "denied", "no terminal descriptor reached the sandbox"
    out.note(f"terminal descriptors: {ttys}")
    done = [op for fd in ttys for op in _terminal_ops(fd)]
    if done:
        return _ok("; ".join(done))
    return "denied", f"terminal descriptors {ttys} are open, but nothing could be done with them"


# run by the parent --------------------------------------------------------------------------

def _attempt_child(run: Callable[[_Out], Outcome]) -> Callable[[int], int]:
    """A target that runs `run` and writes its notes and result as the battery's JSON lines."""
    def target(control_fd: int) -> int:
        out = _Out(control_fd)
        try:
            out.result(*run(out))
        except BaseException as exc:  # noqa: BLE001
            out.result("error", f"{type(exc).__name__}: {exc}")
        return 0
    return target


def _spawned_outcome(child: launcher.SandboxedProcess, timeout: float) -> Outcome:
    import select
    fd = child.control.fileno()
    data = b""
    ready, _, _ = select.select([fd], [], [], timeout)
    timed_out = not ready
    while ready:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
        ready, _, _ = select.select([fd], [], [], timeout)
    if timed_out:
        child.kill()
    return _interpret(data, child.wait(), timed_out, timeout)


def _run_fd_inherited(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """A launcher that leaves descriptors open (no CLOEXEC) to / and to the outside
    directory when it starts the sandbox."""
    leaked = [os.open("/", os.O_PATH), os.open(t.outside_dir, os.O_PATH)]
    try:
        for fd in leaked:
            os.set_inheritable(fd, True)
        child = launcher.spawn(judge.plan, target=_attempt_child(lambda out: _run_fd_walk(_Ctx(t), out)),
                               relay=False)
    except launcher.SpawnError as exc:
        return "error", f"the sandbox did not start: {exc}"
    finally:
        for fd in leaked:
            os.close(fd)
    return _spawned_outcome(child, timeout)


def _run_fd_self(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """A running process with descriptors to / and the outside directory open (as pycapnp's
    schema loader leaves them) restricts itself with the policy, then walks out from them."""
    plan = judge.plan
    # An unconfined child that then confines itself (restrict_self's own steps), keeping
    # only its result pipe.
    read_end, write_end = os.pipe()

    def self_target(control_fd: int) -> int:
        out = _Out(write_end)
        try:
            held = [os.open("/", os.O_PATH), os.open(t.outside_dir, os.O_PATH)]
            ctx = steps.Context(plan, steps.Entry.SELF, {write_end})
            steps.run(ctx)
            found = _walk_out(t)
            del held
            out.result(*(_ok("; ".join(found[:3])) if found else
                         ("denied", "no descriptor opened before the restriction leads outside "
                                    "(they point at /dev/null)")))
        except BaseException as exc:  # noqa: BLE001
            out.result("error", f"{type(exc).__name__}: {exc}")
        return 0

    child = launcher.spawn(None, target=self_target, pass_fds=[write_end])
    os.close(write_end)
    import select
    data = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            child.kill()
            os.close(read_end)
            return _interpret(data, child.wait(), True, timeout)
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    return _interpret(data, child.wait(), False, timeout)


#: Every request that sets a terminal's modes (echo, canonical input, ...): termios, the old
#: termio, termios2; and the line discipline. (name, request, get request, struct size).
TERMINAL_MODE_SETTERS = (
    ("TCSETS", syscalls.TCSETS, 0x5401, 60), ("TCSETSW", syscalls.TCSETSW, 0x5401, 60),
    ("TCSETSF", syscalls.TCSETSF, 0x5401, 60), ("TCSETA", syscalls.TCSETA, 0x5405, 18),
    ("TCSETAW", syscalls.TCSETAW, 0x5405, 18), ("TCSETAF", syscalls.TCSETAF, 0x5405, 18),
    ("TCSETS2", 0x402C542B, 0x802C542A, 44), ("TCSETSW2", 0x402C542C, 0x802C542A, 44),
    ("TCSETSF2", 0x402C542D, 0x802C542A, 44), ("TIOCSETD", 0x5423, 0x5424, 4),
)


def _set_modes(fd: int) -> list[str]:
    """Each request of TERMINAL_MODE_SETTERS with the terminal's own current value (nothing
    changes if it is allowed): the names of those the kernel took."""
    taken = []
    for name, request, get, size in TERMINAL_MODE_SETTERS:
        try:
            current = fcntl.ioctl(fd, get, bytes(size))
            fcntl.ioctl(fd, request, current)
        except OSError:
            continue
        taken.append(name)
    return taken


def _run_terminal_modes_self(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """As terminal-self-restriction, then set the terminal's modes through fd 1 (a pipe to
    the relay since 12-06; before, the terminal reopened write-only, which stops reads, not
    ioctls)."""
    return _run_terminal_self(judge, t, plan_of, timeout, modes=True)


#: What terminal-escape-self-restriction writes: OSC 52 (set the desktop's clipboard), then a
#: marker that ends the parent's wait for it.
_CLIPBOARD = b"\x1b]52;c;cHJvYmU=\x07"
_ESCAPE_MARKER = b"end-of-probe-output"


def _run_terminal_escape_self(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """As terminal-self-restriction, then write an escape sequence to stdout and stderr; the
    parent reads the terminal: the sequence arriving raw is the way out."""
    return _run_terminal_self(judge, t, plan_of, timeout, escape=True)


def _run_terminal_self(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float,
                       modes: bool = False, escape: bool = False) -> Outcome:
    """A running process on a terminal (1 and 2 the one description a shell opened for
    reading and writing) restricts itself with the policy, then reads what the user typed
    through stdout and stderr (restrict_self keeps them, or relays them since 12-06), sets
    the terminal's modes (`modes`) or writes an escape sequence to it (`escape`)."""
    plan = judge.plan
    master, slave = os.openpty()
    read_end, write_end = os.pipe()

    def self_target(control_fd: int) -> int:
        out = _Out(write_end)
        try:
            os.dup2(slave, 1)
            os.dup2(slave, 2)
            steps.run(steps.Context(plan, steps.Entry.SELF, {write_end}))
            if escape:
                for fd in (1, 2):
                    os.write(fd, _CLIPBOARD + _ESCAPE_MARKER + b"\n")
                out.result("denied", "wrote OSC 52 to stdout and stderr (judged by what reached the terminal)")
                return 0
            if modes:
                taken = _set_modes(1)
                out.result(*(_ok(f"set the terminal's modes through fd 1: {', '.join(taken)}") if taken else
                             ("denied", "every request that sets a terminal's modes refused")))
                return 0
            typed: list[str] = []
            for fd in (1, 2):
                try:
                    os.set_blocking(fd, False)
                    data = os.read(fd, 100)
                except OSError as exc:
                    out.note(f"read fd {fd}: {_errname(exc.errno or 0)}")
                    continue
                if data:
                    typed.append(f"read {data!r} through fd {fd}")
            out.result(*(_ok("; ".join(typed)) if typed else
                         ("denied", "stdout and stderr are no terminal this process can read")))
        except BaseException as exc:  # noqa: BLE001
            out.result("error", f"{type(exc).__name__}: {exc}")
        return 0

    try:
        os.write(master, b"typed by the user\n")
        child = launcher.spawn(None, target=self_target, pass_fds=[write_end, slave])
    finally:
        os.close(write_end)
        os.close(slave)
    import select
    data = b""
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], timeout)
            if not ready:
                child.kill()
                return _interpret(data, child.wait(), True, timeout)
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
        outcome = _interpret(data, child.wait(), False, timeout)
        if escape and outcome[0] == "denied":
            shown = _terminal_output(master, _ESCAPE_MARKER, timeout)
            if _CLIPBOARD in shown:
                return _ok("OSC 52 reached the terminal raw: " + repr(shown[:80]))
            if _ESCAPE_MARKER not in shown:
                return "error", f"the output never reached the terminal: {shown[:200]!r}"
            return "denied", "the escape sequence reached the terminal as text: " + repr(shown[:80])
        return outcome
    finally:
        os.close(read_end)
        os.close(master)


def _terminal_output(master: int, marker: bytes, timeout: float) -> bytes:
    """What reached the terminal, until `marker` arrived twice (stdout's and stderr's line:
    a relay passes them on after the writer is gone) or `timeout`."""
    import select
    import time
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(marker) < 2:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([master], [], [], max(left, 0))
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:         # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _run_terminal_left_open(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """A launcher with a terminal open (not CLOEXEC) when it starts the sandbox."""
    master, slave = os.openpty()
    try:
        os.set_inheritable(slave, True)
        os.write(master, b"typed by the user\n")
        child = launcher.spawn(judge.plan, target=_attempt_child(lambda out: _run_terminal(_Ctx(t), out)),
                               relay=False)
        return _spawned_outcome(child, timeout)
    except launcher.SpawnError as exc:
        return "error", f"the sandbox did not start: {exc}"
    finally:
        os.close(slave)
        os.close(master)


def _run_socket_in_read_grant(judge: _Judge, t: _Targets, plan_of: Callable[..., object],
                              timeout: float) -> Outcome:
    """A fake ssh-agent listens in a directory outside the view; a launch with that directory
    added as a read-only grant connects to it. Landlock (ABI <= 7) has no right for connect(2)
    to a named socket, and the view shows what is granted: only the filter can refuse it."""
    where = os.path.join(t.outside_dir, "agent")
    os.mkdir(where, 0o755)
    path = os.path.join(where, "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        server.setblocking(False)
        try:
            plan = plan_of(where, "read")
        except Exception as exc:  # noqa: BLE001
            return "error", f"cannot plan the extra grant {where}: {exc}"
        ctx = _Ctx(dataclasses.replace(t, unix_socket=path),
                   seccomp=judge.seccomp_action("socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM}))
        child = launcher.spawn(plan, target=_attempt_child(lambda out: _run_named_socket(ctx, out)), relay=False)
        outcome = _spawned_outcome(child, timeout)
        if outcome[0] == "allowed":
            try:
                server.accept()[0].close()
            except BlockingIOError:
                return "error", f"the child says it connected to {path}; the listener saw nobody"
            return _ok(f"connected to a listener in a read-only grant ({path})")
        return outcome
    finally:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(where)


def _run_symlink_swap(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """Launch 1 swaps a directory it may write (a grant of its own, inside another) for a
    symlink to /; launch 2 (with the plan made before, as a zygote restarts a component) and a
    fresh plan (as a restarted node makes one) must not follow it."""
    assert t.writable_dir is not None
    sub = os.path.join(t.writable_dir, f".cleancoin-probe-{t.token}-grant")
    os.mkdir(sub, 0o700)
    try:
        try:
            plan = plan_of(sub)
        except Exception as exc:  # noqa: BLE001
            return "error", f"cannot plan the extra grant {sub}: {exc}"

        def swap(out: _Out) -> Outcome:
            try:
                os.rmdir(sub)
                os.symlink("/", sub)
            except OSError as exc:
                return "denied", f"could not swap {sub}: {_errname(exc.errno or 0)}"
            return "allowed", f"swapped {sub} for a symlink to /"

        first = _spawned_outcome(launcher.spawn(plan, target=_attempt_child(swap), relay=False), timeout)
        if first[0] != "allowed":
            return first
        through = os.path.join(sub, os.path.relpath(t.canary, "/"))

        def read_through(out: _Out) -> Outcome:
            try:
                with open(through, "rb") as handle:
                    data = handle.read(4096)
            except OSError as exc:
                return "denied", f"reading through the swapped grant: {_errname(exc.errno or 0)}"
            return (_ok(f"read the canary through the swapped grant {sub}") if data == t.secret
                    else ("denied", "read something else"))

        notes = [first[1]]
        try:
            second = _spawned_outcome(launcher.spawn(plan, target=_attempt_child(read_through),
                                                     relay=False), timeout)
        except launcher.SpawnError as exc:
            second = ("denied", f"relaunch with the old plan refused: {exc.reason}")
        if second[0] == "allowed":
            return second[0], "; ".join([*notes, second[1]])
        notes.append(second[1])
        try:
            fresh = plan_of(sub)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"a fresh plan refused: {exc}")
            return "denied", "; ".join(notes)
        third = _spawned_outcome(launcher.spawn(fresh, target=_attempt_child(read_through), relay=False), timeout)
        notes.append(third[1])
        return third[0], "; ".join(notes)
    finally:
        if os.path.islink(sub):
            os.unlink(sub)
        elif os.path.isdir(sub):
            os.rmdir(sub)


#: What the flooding child writes without a newline, and what the relay may hold of it.
_FLOOD_BYTES = 8 << 20
_FLOOD_HELD_LIMIT = 1 << 20


def _run_output_flood(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """The child writes 8 MiB to stdout without a newline while its launcher relays its
    output line by line with a prefix, as a zygote does (the launcher is unconfined: what
    it holds, the host pays). Escape: the relay kept back more than 1 MiB of the line."""
    def flood(out: _Out) -> Outcome:
        chunk = b"A" * 65536
        for _ in range(_FLOOD_BYTES // len(chunk)):
            os.write(1, chunk)
        return "allowed", f"wrote {_FLOOD_BYTES >> 20} MiB to stdout without a newline"

    try:
        child = launcher.spawn(judge.plan, target=_attempt_child(flood), relay=False)
    except launcher.SpawnError as exc:
        return "error", f"the sandbox did not start: {exc}"
    if child.output is None:
        child.kill()
        child.wait()
        return "denied", "the policy relays no output (process.stdio is not \"pipe\")"
    import select
    devnull = os.open(os.devnull, os.O_WRONLY)
    relay = stdio.Relay(child.output.pipes, prefix=b"[probe] ", targets=(devnull, devnull))
    control = child.control.fileno()
    open_fds, data, peak = set(relay.fds()), b"", 0
    try:
        while open_fds or control >= 0:
            ready, _, _ = select.select([*open_fds, *([control] if control >= 0 else [])], [], [], timeout)
            if not ready:
                child.kill()
                return _interpret(data, child.wait(), True, timeout)
            for fd in ready:
                if fd == control:
                    chunk = os.read(control, 65536)
                    data += chunk
                    control = control if chunk else -1
                elif not relay.pump(fd):
                    open_fds.discard(fd)
                peak = max(peak, relay.held())
    finally:
        os.close(devnull)
    verdict, note = _interpret(data, child.wait(), False, timeout)
    if verdict != "allowed":
        return verdict, note
    if peak > _FLOOD_HELD_LIMIT:
        return _ok(f"{note}; the launcher's relay held {peak} bytes of it, waiting for the line's end")
    return "denied", (f"{note}; the launcher's relay held at most {peak} bytes (a long line goes "
                      f"on in pieces of {stdio.MAX_LINE})")


def _run_denial_log_reach(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """The policy with a denial log kept outside every grant (as CleanCoin-node keeps its
    wallet's in the node's debug log): the child makes a refused call, then tries to reach the
    log to erase that record, by its path and through any descriptor it holds."""
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-denials.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    if not plan.denials:
        return "denied", "no denial log for this policy (it refuses nothing with an errno, or " \
                         "cannot hand a monitor its listener)"

    with open(log, "ab"):
        pass        # made now, so that the child can tell a descriptor of it by its identity
    known = os.stat(log)
    ident = (known.st_dev, known.st_ino)

    def reach(out: _Out) -> Outcome:
        done = []
        try:
            with open(log, "r+b") as handle:
                handle.truncate(0)
            done.append(f"truncated {log} by its path")
        except OSError as exc:
            out.note(f"by its path: {_errname(exc.errno or 0)}")
        for fd in range(3, _MAX_FD):
            try:
                held = os.fstat(fd)
            except OSError:
                continue
            if (held.st_dev, held.st_ino) == ident:
                done.append(f"fd {fd} is the denial log")
        return _ok("; ".join(done)) if done else ("denied", "the denial log is out of reach: not in "
                                                             "the view, no descriptor of it")

    try:
        child = launcher.spawn(plan, target=_attempt_child(reach), relay=False)
    except launcher.SpawnError as exc:
        return "error", f"the sandbox did not start: {exc}"
    return _outcome_then_remove(child, timeout, log)


def _outcome_then_remove(child: launcher.SandboxedProcess, timeout: float, log: str) -> Outcome:
    """The child's outcome; its denial log `log` removed once it is known."""
    try:
        return _spawned_outcome(child, timeout)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log)


#: Refused calls the flooding child makes, and the lines the denial log may have for them.
_DENIAL_FLOOD_CALLS = 20_000
_DENIAL_FLOOD_LINES = 1_000
#: The flood's deadline, in attempt timeouts.
_DENIAL_FLOOD_TIME = 6


def _run_denial_log_flood(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """With a denial log, the child makes 20,000 refused clone calls, each with CLONE_NEWUSER
    (what the filter refuses) and other flag bits that differ, so that every call looks new.
    Escape: the log got more than 1,000 lines, so a confined process could bury the record of
    its refusals, fill the disk, and grow its monitor until it dies."""
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-flood.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    if not plan.denials or str(_NR["clone"]) not in plan.denials.get("rules", {}):
        return "denied", "no refusal with an errno to flood with (no denial log, or clone is " \
                         "not refused with one: the policy kills or allows it)"

    def flood(out: _Out) -> Outcome:
        refused = 0
        for i in range(_DENIAL_FLOOD_CALLS):
            ret, _err = _syscall("clone", syscalls.CLONE_NEWUSER | (i << 32), 0, 0, 0, 0)
            refused += ret == -1
        return "allowed", f"{refused} refused clone calls, each with other flag bits"

    # 20,000 refusals take seconds where the kernel audits each one (7.6 s here once its audit
    # backlog had filled, against a 5 s attempt timeout): the flood gets a longer deadline, a
    # hang still ends it.
    verdict, note, record = _run_with_denial_log(plan, flood, log, timeout * _DENIAL_FLOOD_TIME)
    if verdict != "allowed":
        return verdict, note
    lines = record.count(b"\n")
    if lines > _DENIAL_FLOOD_LINES:
        return _ok(f"{note}: the denial log got {lines} lines")
    return "denied", f"{note}: the denial log got {lines} lines (kinds and lines a minute are bounded)"


#: Decoy refusals the burying child makes first: more than the 120 lines a minute the log takes.
_DENIAL_BURY_DECOYS = 150
_TIOCSTI_REQUEST = 0x5412


def _run_denial_log_bury(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """With a denial log, the child spends its budget of lines on 150 decoy refusals (clone
    with CLONE_NEWUSER, each with other flag bits: a new kind each time), then makes the call
    it wants nobody to read about: TIOCSTI. Escape: the log does not name the TIOCSTI (only
    "N more lines of refusals not logged"), so a confined process that first makes noise can
    hide what it really tried."""
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-bury.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    rules = plan.denials.get("rules", {}) if plan.denials else {}
    if str(_NR["clone"]) not in rules or str(_NR["ioctl"]) not in rules:
        return "denied", "no two refusals with an errno to bury one under the other (no denial " \
                         "log, or clone or TIOCSTI is not refused with one)"

    def bury(out: _Out) -> Outcome:
        for i in range(_DENIAL_BURY_DECOYS):
            _syscall("clone", syscalls.CLONE_NEWUSER | ((i + 1) << 32), 0, 0, 0, 0)
        ret, err = _syscall("ioctl", 0, _TIOCSTI_REQUEST, 0)
        return "allowed", (f"{_DENIAL_BURY_DECOYS} decoy clone refusals, then TIOCSTI "
                           f"({'refused: ' + os.strerror(err) if ret == -1 else 'not refused'})")

    verdict, note, record = _run_with_denial_log(plan, bury, log, timeout)
    if verdict != "allowed":
        return verdict, note
    if f"request={_TIOCSTI_REQUEST:#x}".encode() not in record:
        return _ok(f"{note}: the denial log does not name the TIOCSTI")
    return "denied", f"{note}: the denial log names the TIOCSTI (each decision's first " \
                     "refusal is written past the budget)"


#: The size of the log that cannot grow (a sparse file), and the file size limit its monitor
#: starts with.
_LOG_LIMIT = 1 << 20


def _run_denial_log_fails(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """With a denial log that cannot grow, the child makes a refused call (whose line the
    monitor cannot write), then another. The monitor starts before the component's rlimits
    step with its launcher's limits (never the component's: until 12-07 it inherited those,
    and a policy's fsize = 0 left it unable to write at all), so the launcher's own file size
    limit is set to the log's size for the spawn: every append fails with EFBIG, as one fails
    with ENOSPC on a full disk, which a component that writes to the log's filesystem can
    cause at will. Escape: the second refusal is answered ENOSYS, the kernel's answer once
    the monitor is gone: it stopped (SIGXFSZ, or an unhandled error), and no refusal is
    logged again."""
    import resource
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-full.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    if not plan.denials or str(_NR["clone"]) not in plan.denials.get("rules", {}):
        return "denied", "no refusal with an errno to make (no denial log, or clone is not refused " \
                         "with one: the policy kills or allows it)"

    def refuse_twice(out: _Out) -> Outcome:
        errors = []
        for _ in range(2):
            ret, err = _syscall("clone", syscalls.CLONE_NEWUSER, 0, 0, 0, 0)
            errors.append(_errname(err) if ret == -1 else "none")
            time.sleep(0.3)           # the monitor tries to write its line meanwhile
        if errors[1] == "ENOSYS":
            return _ok(f"refused clone answered {errors[0]}, then ENOSYS: the denial monitor stopped "
                       "when its log could not grow")
        return "denied", f"refused clone answered {errors[0]}, then {errors[1]}: the monitor went on"

    with open(log, "wb") as handle:
        handle.truncate(_LOG_LIMIT)  # sparse: no disk space used
    saved = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (min(_LOG_LIMIT, saved[1]) if saved[1] != resource.RLIM_INFINITY
                                                   else _LOG_LIMIT, saved[1]))
        try:
            child = launcher.spawn(plan, target=_attempt_child(refuse_twice), relay=False)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, saved)
    except launcher.SpawnError as exc:
        with contextlib.suppress(OSError):
            os.unlink(log)
        return "error", f"the sandbox did not start: {exc}"
    return _outcome_then_remove(child, timeout, log)


def _run_with_denial_log(plan: Plan, fn: Callable[[_Out], Outcome], log: str,
                         timeout: float) -> tuple[str, str, bytes]:
    """Run `fn` in a child under `plan`, whose refusals go to `log`: its verdict and note,
    and the log once it stopped growing (empty unless the child's verdict is "allowed").
    The log is removed afterwards."""
    try:
        child = launcher.spawn(plan, target=_attempt_child(fn), relay=False)
    except launcher.SpawnError as exc:
        return "error", f"the sandbox did not start: {exc}", b""
    try:
        verdict, note = _spawned_outcome(child, timeout)
        if verdict != "allowed":
            return verdict, note, b""
        _settled_lines(log)
        with open(log, "rb") as handle:
            return verdict, note, handle.read()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log)


def _settled_lines(log: str, timeout: float = 5.0) -> int:
    """The log's lines once it stopped growing: the monitor writes its last line as the
    child's filter loses its last process."""
    deadline, size = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        now = os.stat(log).st_size
        if now and now == size:
            break
        size = now
        time.sleep(0.2)
    with open(log, "rb") as handle:
        return handle.read().count(b"\n")


def _run_same_user_trace(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """Launched as a zygote launches (by a process that keeps its memory private), under the
    policy with a denial log, the component and every process of its sandbox (its pid
    namespace's waiters, its denial monitor) are attached to with ptrace by another process
    of the same uid once the sandbox is up. Escape: one attach went through (until 12-07 the
    denial monitor, a program exec'd in the component's user namespace, which that uid owns).
    Root's CAP_SYS_PTRACE traces anything: as root there is nothing to judge."""
    if os.geteuid() == 0:
        return "denied", "not judged as root (CAP_SYS_PTRACE traces any process): it is the same " \
                         "user's reach, judged when the probe runs as that user"
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-trace.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()          # its end of file ends the component and the launcher
    launcher_pid = os.fork()
    if launcher_pid == 0:
        try:
            os.close(ready_r)
            os.close(hold_w)
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)          # as CleanCoin-node's zygote
            child = launcher.spawn(plan, target=lambda _control: len(os.read(hold_r, 1)), pass_fds=[hold_r],
                                   relay=False)
            os.write(ready_w, b"r")
            os.read(hold_r, 1)
            child.kill()
            child.wait()
        except BaseException as exc:  # noqa: BLE001 - said to the parent
            with contextlib.suppress(OSError):
                os.write(ready_w, f"e{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        import select
        ready, _, _ = select.select([ready_r], [], [], timeout)
        answer = os.read(ready_r, 4096) if ready else b""
        if answer != b"r":
            return "error", f"the sandbox did not start: {answer[1:].decode(errors='replace') or 'no answer'}"
        sandbox, pending = [], list(_children_of(launcher_pid))
        while pending:
            pid = pending.pop()
            sandbox.append(pid)
            pending += _children_of(pid)
        names = {pid: _comm(pid) for pid in sandbox}
        sandbox = [pid for pid in sandbox if names[pid] != "gone"]     # a double fork's middle
        attached = _traced_by_the_same_user(sandbox)
    finally:
        os.close(hold_w)
        os.close(ready_r)
        os.waitpid(launcher_pid, 0)
        with contextlib.suppress(OSError):
            os.unlink(log)
    if attached:
        return _ok("attached with ptrace to " + ", ".join(f"{names[p]} ({p})" for p in attached))
    return "denied", (f"ptrace refused for all {len(sandbox)} processes of the sandbox ("
                      + ", ".join(sorted({names[pid] for pid in sandbox})) + ")")


def _run_denial_monitor_early_trace(judge: _Judge, t: _Targets, plan_of: Callable[..., object],
                                    timeout: float) -> Outcome:
    """A monitor started before the steps (`denial_log.prelaunch`, as CleanCoin-node starts its
    own, before its imports) waits for its configuration for the whole of the process's
    set-up; another process of the same uid, without capabilities (so that root's
    CAP_SYS_PTRACE does not decide), attaches to it with ptrace meanwhile. Escape: attached:
    the tracer could have it skip its confinement and answer the component's refused calls
    once it has the listener (until 12-08 the monitor was the interpreter's program, exec'd
    from its readable file: dumpable until its own first step)."""
    from .. import denial_log
    if not denial_log.notifies(judge.policy):
        return "denied", "no denial log for this policy: no monitor"
    monitor = denial_log.prelaunch()
    try:
        pid = monitor.helper.pid if monitor.helper is not None else 0
        deadline = time.monotonic() + timeout
        while _state(pid) not in ("S", "gone"):          # waiting for its configuration
            if time.monotonic() > deadline:
                return "error", f"the prelaunched monitor ({pid}) never waited for its configuration"
            time.sleep(0.005)
        attached = _traced_by_the_same_user([pid], drop_capabilities=True)
    finally:
        denial_log.discard(monitor)
    if attached:
        return _ok(f"attached with ptrace to the prelaunched denial monitor ({pid}) while it waited "
                   "for its configuration")
    return "denied", "ptrace refused: the prelaunched monitor is not dumpable from its exec"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _run_denial_monitor_kill(judge: _Judge, t: _Targets, plan_of: Callable[..., object], timeout: float) -> Outcome:
    """Launched as a zygote launches (by a process that keeps its memory private: as a
    non-root user its denial monitor is then a fork, not exec'd), under the policy with a
    denial log, the child sends SIGKILL to every other process of its pid namespace that
    takes a signal (its monitor is one; PID 1 and its parent are left alone), then makes a
    refused call. Escape: a kill went through, and refusals are answered ENOSYS and go
    unlogged from then on (until 12-07 a monitor that is a fork was made at the seccomp
    step, inside the component's Landlock domain, whose signal scope let the component reach
    it). Only inside a pid namespace: outside it the pids are the host's."""
    if "pid" not in judge.ns:
        return "denied", "not tried: no pid namespace (every pid is the host's)"
    from .. import denial_log
    log = os.path.join(t.outside_dir, f".cleancoin-probe-{t.token}-kill.log")
    plan = denial_log.plan_with_denials(judge.plan, judge.policy, denial_log.DenialLog(log))
    if not plan.denials:
        return "denied", "no denial log for this policy: no monitor to kill"

    def kill_the_others(out: _Out) -> Outcome:
        import signal
        me, parent = os.getpid(), os.getppid()
        killed = []
        for pid in range(2, 64):
            if pid in (me, parent):
                continue
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.3)
        ret, err = _syscall("clone", syscalls.CLONE_NEWUSER, 0, 0, 0, 0)
        answer = _errname(err) if ret == -1 else "none"
        if killed:
            return _ok(f"killed pid {', '.join(map(str, killed))} of the sandbox; a refused clone then answered {answer}")
        return "denied", f"no other process of the sandbox took a signal; a refused clone answered {answer}"

    result_r, result_w = os.pipe()
    launcher_pid = os.fork()
    if launcher_pid == 0:
        try:
            os.close(result_r)
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)          # as CleanCoin-node's zygote
            try:
                child = launcher.spawn(plan, target=_attempt_child(kill_the_others), relay=False)
                verdict, note = _spawned_outcome(child, timeout)
            except launcher.SpawnError as exc:
                verdict, note = "error", f"the sandbox did not start: {exc}"
            os.write(result_w, f"{verdict}\n{note}".encode()[:4000])
        finally:
            os._exit(0)
    os.close(result_w)
    try:
        import select
        ready, _, _ = select.select([result_r], [], [], timeout + 5)
        answer = os.read(result_r, 4096).decode(errors="replace") if ready else ""
    finally:
        os.close(result_r)
        os.waitpid(launcher_pid, 0)
        with contextlib.suppress(OSError):
            os.unlink(log)
    verdict, _, note = answer.partition("\n")
    if verdict not in ("allowed", "denied", "error"):
        return "error", f"no outcome from the launching process: {answer[:200]!r}"
    return verdict, note


def _children_of(pid: int) -> list[int]:
    from .. import helpers
    return helpers.children(pid)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "gone"


def _traced_by_the_same_user(pids: list[int], drop_capabilities: bool = False) -> list[int]:
    """The pids a fork of this process (the same uid, not root; or, `drop_capabilities`,
    with no capability left) attached to with PTRACE_SEIZE; it ends at once, which detaches
    it."""
    read_end, write_end = os.pipe()
    tracer = os.fork()
    if tracer == 0:
        try:
            os.close(read_end)
            if drop_capabilities:
                from .. import capabilities
                syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
                capabilities.drop(())
            got = [pid for pid in pids if _syscall("ptrace", 0x4206, pid, 0, 0, 0)[0] == 0]
            os.write(write_end, " ".join(map(str, got)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = b""
        while chunk := os.read(read_end, 65536):
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(tracer, 0)
    return [int(p) for p in data.split()]


# expectations ------------------------------------------------------------------------------

def _exp_never(reason: str) -> Callable[[_Judge, _Targets], _Why]:
    return lambda j, t: _Why().need(False, reason)


def _exp_named_socket(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    j.sc(w, "connect")
    # Landlock (ABI <= 7) has no rule for connect(2) to a named socket: only the view can.
    return w.need(j.visible(t.unix_socket), f"view: {t.unix_socket} is not in the sandbox's "
                                            "filesystem view")


#: What terminal-left-open tries besides reading: set the modes, resize, restart the output,
#: make it exclusive, set its line discipline and its break line.
TERMINAL_LEFT_OPEN_REQUESTS = (("TCSETS", syscalls.TCSETS), ("TIOCSWINSZ", syscalls.TIOCSWINSZ),
                               ("TCXONC", syscalls.TCXONC), ("TIOCEXCL", syscalls.TIOCEXCL),
                               ("TIOCSETD", syscalls.TIOCSETD), ("TIOCSBRK", syscalls.TIOCSBRK))


def _exp_socket_in_read_grant(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    # Landlock (ABI <= 7) has no right for connect(2) to a named socket, and the grant puts
    # the socket in the view: a read-only grant does not stop it; the filter alone can.
    return j.sc(w, "connect")


def _exp_terminal(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    inherited = j.plan.stdio == "inherit" and bool(j.host.ttys)
    w.need(inherited, "descriptors and stdio: no terminal reaches the sandbox (only the "
                      "allowlist survives, stdio is /dev/null and pipes)")
    for name, request in TERMINAL_LEFT_OPEN_REQUESTS:
        action = j.seccomp_action("ioctl", {1: request})
        if action in ("allow", "log"):
            w.seccomp = action
            return w
    return j.sc(w, "ioctl", {1: syscalls.TCSETS})


def _exp_terminal_modes_self(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    for name, request, _, _ in TERMINAL_MODE_SETTERS:
        action = j.seccomp_action("ioctl", {1: request})
        if action in ("allow", "log"):
            return w.need(True, f"seccomp: ioctl {name} -> {action}")
    return w.need(False, "seccomp: every request that sets a terminal's modes answers EPERM")


def _exp_terminal_self(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(j.plan.stdio == "inherit", "stdio: restrict_self puts pipes to a relay on 1 "
                                                  "and 2 when either is a terminal")


def _exp_terminal_escape_self(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(j.plan.stdio == "inherit", "stdio: restrict_self relays 1 and 2 to a "
                                                  "terminal with control characters made visible")


def _exp_fd_self(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(False, "descriptors: those not on the list point at /dev/null after "
                              "restrict_self")


PARENT_RUNS: Mapping[str, Callable[[_Judge, _Targets, Callable[..., object], float], Outcome]] = {
    "fd-inherited": _run_fd_inherited,
    "fd-before-self-restriction": _run_fd_self,
    "terminal-self-restriction": _run_terminal_self,
    "terminal-modes-self-restriction": _run_terminal_modes_self,
    "terminal-escape-self-restriction": _run_terminal_escape_self,
    "terminal-left-open": _run_terminal_left_open,
    "grant-symlink-swap": _run_symlink_swap,
    "unix-socket-in-read-grant": _run_socket_in_read_grant,
    "output-flood": _run_output_flood,
    "denial-log-reach": _run_denial_log_reach,
    "denial-log-flood": _run_denial_log_flood,
    "denial-log-fails": _run_denial_log_fails,
    "denial-log-bury": _run_denial_log_bury,
    "same-user-trace": _run_same_user_trace,
    "denial-monitor-kill": _run_denial_monitor_kill,
    "denial-monitor-early-trace": _run_denial_monitor_early_trace,
}
