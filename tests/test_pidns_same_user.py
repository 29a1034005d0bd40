"""The pid namespace's waiting processes stay out of reach of the other processes of their
uid, and why a compiled waiter is exec'd where it is (issue #16: since 12-07 the waiter and
PID 1 are a small compiled program, sandbox/pidns_waiter.c, instead of two forks of the
launcher's interpreter).

A process of the launching uid (not root) goes for the waiter and PID 1 of a sandbox's pid
namespace: it may neither attach to them with ptrace, nor open their memory, nor open their
namespace files (with those it could setns into the component's user and pid namespaces: the
uid owns the user namespace, so it holds every capability there). The program is exec'd from
a memfd of mode 0111 before the launched child enters the sandbox's user namespace: its memory
(the kernel's mm->user_ns) belongs to the launcher's namespace, where this uid has no
CAP_SYS_PTRACE, and it is not dumpable from its first instruction; joining the sandbox's user
namespace later (setns) does not change that. The control: a program exec'd inside the same
user namespace and not dumpable either, as the naive compiled waiter would have been, is
attached to and its memory and namespaces are opened, by the same attacker on this kernel.

Everything is real: a second uid, the holder-made user namespace, the pid step of
sandbox/pidns.py with the installed compiled waiter, the kernel's ptrace and /proc checks.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path


from cleancoin.sandbox import namespaces, pidns, syscalls
from functional import as_user
from same_user import SAME_USER_ATTACH

PTRACE_ATTACH, PTRACE_DETACH = 16, 17


pytestmark = SAME_USER_ATTACH

#: The control: what a compiled waiter exec'd in the namespace would be (not dumpable, waiting).
_EXECED = "import ctypes, os; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); os.write(1, b'r'); os.read(0, 1)"


def _become(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _sandboxed(uid: int, ready_w: int, release_r: int) -> None:
    """As a zygote's fork of that uid: not dumpable, the pid namespace waiter, namespace and pid
    namespace steps (sandbox/steps.py), then, in the component, a program exec'd there (the
    control). Never returns (this process becomes the compiled waiter)."""
    try:
        problem = as_user.enter_view(as_user.interpreter_paths(), uid, uid)    # the holder runs it
        assert problem is None, problem
        _become(uid)
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        waiter = pidns.start_waiter("test component", 0)   # this pid execs the waiter; a fork goes on
        namespaces.enter(["user", "mount", "net"], "hard", uid, uid)
        pidns.split(waiter, in_user_namespace=True, own_group=True)      # returns in the component only
        execed_r, execed_w = os.pipe()
        hold_r, hold_w = os.pipe()
        execed = os.fork()
        if execed == 0:
            os.dup2(hold_r, 0)
            os.dup2(execed_w, 1)
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _EXECED])
        assert os.read(execed_r, 1) == b"r"
        # Pids as the attacker (outside) sees them: the last of each NSpid line is ours.
        os.write(ready_w, json.dumps({"execed_inner": execed}).encode())
        os.read(release_r, 1)
        os.close(hold_w)
        os.waitpid(execed, 0)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - the test must see it
        os.write(ready_w, json.dumps({"error": repr(exc)}).encode())
        os._exit(1)


def _outer_pid(root: int, inner: int) -> int:
    """The pid (as we see it) of `root`'s descendant whose innermost pid is `inner`."""
    pending = [root]
    while pending:
        pid = pending.pop()
        nspid = next(line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith("NSpid:"))
        if pid != root and int(nspid[-1]) == inner and len(nspid) > 1:
            return pid
        pending += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    raise AssertionError(f"no descendant of {root} is {inner} inside")


def _attack(uid: int, targets: dict[str, int], result_w: int) -> None:
    """As the same uid, outside every namespace: open each target's namespace files, attach."""
    got: dict[str, dict[str, str]] = {}
    try:
        _become(uid)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        for name, pid in targets.items():
            got[name] = {}
            for ns in ("user", "pid", "mnt", "net"):
                try:
                    os.close(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY))
                    got[name][ns] = "opened"
                except OSError as exc:
                    got[name][ns] = exc.strerror or str(exc)
            try:
                os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))
                got[name]["mem"] = "opened"
            except OSError as exc:
                got[name]["mem"] = exc.strerror or str(exc)
            if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
                os.waitpid(pid, 0x40000000)                # __WALL: stopped
                libc.ptrace(PTRACE_DETACH, pid, None, None)
                got[name]["ptrace"] = "attached"
            else:
                got[name]["ptrace"] = os.strerror(ctypes.get_errno())
    except BaseException as exc:  # noqa: BLE001
        got["error"] = {"error": repr(exc)}
    os.write(result_w, json.dumps(got).encode())
    os._exit(0)


def test_the_same_user_cannot_reach_the_compiled_waiter_or_pid_1_but_would_reach_a_program_execd_inside() -> None:
    uid = 3_400_000 + 2 * (os.getpid() % 100_000)
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    result_r, result_w = os.pipe()
    waiter = os.fork()
    if waiter == 0:
        _sandboxed(uid, ready_w, release_r)
    attacker = 0
    try:
        ready = json.loads(os.read(ready_r, 65536))
        assert "error" not in ready, ready
        targets = {"waiter": waiter, "init": _outer_pid(waiter, 1), "execed": _outer_pid(waiter, ready["execed_inner"])}
        attacker = os.fork()
        if attacker == 0:
            _attack(uid, targets, result_w)
        got = json.loads(os.read(result_r, 65536))
    finally:
        os.write(release_w, b"x")
        if attacker:
            os.waitpid(attacker, 0)
        deadline = time.monotonic() + 20
        while os.waitpid(waiter, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(waiter, signal.SIGKILL)
            time.sleep(0.01)
        for fd in (ready_r, ready_w, release_r, release_w, result_r, result_w):
            os.close(fd)
    denied = {"user": "Permission denied", "pid": "Permission denied", "mnt": "Permission denied",
              "net": "Permission denied", "mem": "Permission denied", "ptrace": "Operation not permitted"}
    # The control first: the attack works on this kernel against a program exec'd inside. (Its
    # /proc/PID/mem is refused anyway: a file of a process that is not dumpable belongs to the
    # root of its namespace, which the 1:1 map leaves unmapped. Attached, the attacker reads
    # and writes its memory all the same.)
    assert got["execed"] == {"user": "opened", "pid": "opened", "mnt": "opened", "net": "opened",
                             "mem": "Permission denied", "ptrace": "attached"}, got
    assert got["waiter"] == denied, got
    assert got["init"] == denied, got
