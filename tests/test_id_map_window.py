"""Attack: a process of the same user goes for a non-root process that keeps its memory
private (PR_SET_DUMPABLE 0, as CleanCoin-node and its zygote's forks do) while it enters its
user namespace and maps its ids. The kernel gives such a process's /proc/self files to root,
so before 12-07 it was made dumpable for its three id-map writes. In that window the attacker
stopped it, attached with ptrace, wrote its memory (code it runs later), kept /proc/PID/mem
open (the kernel checks only at open: it reads the keys the process holds afterwards),
detached and let it go on: the TracerPid check before and after the window saw nothing.

The window is held open deterministically: the first write of the id-map step waits until the
attacker is done. Everything else is real: a second uid, a real user namespace, the kernel's
ptrace and /proc/PID/mem. The control is the same attack on a process that is dumpable.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path


from cleancoin.sandbox import namespaces, syscalls
from cleancoin.sandbox.errors import EnforcementError
from functional import as_user
from same_user import SAME_USER_ATTACH

PTRACE_POKEDATA, PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 5, 17, 0x4206, 0x4207
WALL = 0x40000000

HONEST = b"ran = 'honest code'     "           # what the launched process runs after the window
INJECTED = b"ran = 'ATTACKER CODE'   "          # what the attacker writes over it (same length)
KEY = "key-" + os.urandom(12).hex()             # what the process holds once it is launched


pytestmark = SAME_USER_ATTACH


def _become(uid: int, view: bool = False) -> None:
    """Drop to `uid`; with `view`, in a mount namespace where it can run this interpreter
    (the holder process needs it; it may lie below root's 0700 home)."""
    if view:
        problem = as_user.enter_view(as_user.interpreter_paths(), uid, uid)
        assert problem is None, problem
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _attack(target: int, code_at: int, key_at: int, window_done_w: int, launched_r: int) -> dict[str, object]:
    """The attacker, run as the target's uid while the target is in the window: stop it,
    write over its code, keep its memory open, let it go; then read its key later."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    got: dict[str, object] = {}
    try:
        mem = os.open(f"/proc/{target}/mem", os.O_RDWR | os.O_CLOEXEC)
        got["mem"] = "opened"
    except OSError as exc:
        mem, got["mem"] = -1, exc.strerror
    if libc.ptrace(PTRACE_SEIZE, target, None, None) != 0:
        got["ptrace"] = os.strerror(ctypes.get_errno())
    else:
        libc.ptrace(PTRACE_INTERRUPT, target, None, None)
        os.waitpid(target, WALL)                          # stopped, inside the window
        for offset in range(0, len(INJECTED), 8):
            word = int.from_bytes(INJECTED[offset:offset + 8], "little")
            libc.ptrace(PTRACE_POKEDATA, target, ctypes.c_void_p(code_at + offset), ctypes.c_void_p(word))
        got["ptrace"] = "attached, wrote, detached" if libc.ptrace(PTRACE_DETACH, target, None, 0) == 0 else "stuck"
    os.write(window_done_w, b"d")
    if os.read(launched_r, 1) == b"l" and mem >= 0:         # the target holds its key now
        try:
            got["key"] = os.pread(mem, len(KEY), key_at).decode(errors="replace")
        except OSError as exc:
            got["key"] = exc.strerror
    return got


def _launch(uid: int, dumpable: bool) -> dict[str, object]:
    """A non-root process (not dumpable unless `dumpable`) enters a user namespace with its
    ids mapped; another process of its uid attacks it inside the window. Returns what the
    process ran afterwards, its outcome, and what the attacker got."""
    code = ctypes.create_string_buffer(HONEST, len(HONEST))        # before the forks: same address
    key = ctypes.create_string_buffer(len(KEY))
    result_r, result_w = os.pipe()
    window_r, window_w = os.pipe()          # the target: "I am in the window"
    done_r, done_w = os.pipe()              # the attacker: "done, go on"
    launched_r, launched_w = os.pipe()      # the target: "launched, I hold my key"
    attack_r, attack_w = os.pipe()          # the attacker's findings
    target = os.fork()
    if target == 0:
        report: dict[str, object] = {"outcome": "ok"}
        try:
            _become(uid, view=True)
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1 if dumpable else 0)   # 0: as the zygote's fork
            real_write = os.write

            def held_write(fd: int, data: bytes) -> int:
                os.write = real_write
                real_write(window_w, b"w")
                os.read(done_r, 1)
                return real_write(fd, data)
            os.write = held_write
            # As the "namespaces" and "id maps" steps do (sandbox/steps.py).
            _, _, mapped = namespaces.enter(["user"], "hard", uid, uid)
            if not mapped:
                namespaces.write_id_maps(uid, uid)
            report["uid_map"] = Path("/proc/self/uid_map").read_text().split()
        except EnforcementError as exc:
            report["outcome"] = f"refused: {exc.reason}"
        except BaseException as exc:  # noqa: BLE001 - the test must see it
            report["outcome"] = f"error: {exc!r}"
        scope: dict[str, object] = {}
        exec(code.value.decode(), scope)                  # the launched process's code
        report["ran"] = scope.get("ran")
        key.value = KEY.encode()
        os.write(launched_w, b"l")
        os.write(result_w, json.dumps(report).encode())
        os.read(done_r, 1)                                  # stays alive until the attacker read
        os._exit(0)
    assert os.read(window_r, 1) == b"w"
    attacker = os.fork()
    if attacker == 0:
        got: dict[str, object] = {}
        try:
            _become(uid)
            got = _attack(target, ctypes.addressof(code), ctypes.addressof(key), done_w, launched_r)
        except BaseException as exc:  # noqa: BLE001
            got = {"error": repr(exc)}
        finally:
            os.write(attack_w, json.dumps(got).encode())
            os.write(done_w, b"d")
            os._exit(0)
    try:
        report = json.loads(os.read(result_r, 65536))
        report["attacker"] = json.loads(os.read(attack_r, 65536))
        return report
    finally:
        os.waitpid(attacker, 0)
        deadline = time.monotonic() + 10
        while os.waitpid(target, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        for fd in (result_r, result_w, window_r, window_w, done_r, done_w, launched_r, launched_w, attack_r, attack_w):
            os.close(fd)


def test_a_process_of_the_same_user_gets_nothing_of_a_private_process_entering_its_user_namespace() -> None:
    uid = 3_300_000 + 2 * (os.getpid() % 100_000)
    # The control: a dumpable process. The attack works on this kernel: the attacker writes
    # the process's code and reads its key later through the /proc/PID/mem it kept.
    control = _launch(uid, dumpable=True)
    assert control["outcome"] == "ok" and control["uid_map"] == [str(uid), str(uid), "1"], control
    assert control["ran"] == "ATTACKER CODE", control
    assert control["attacker"] == {"mem": "opened", "ptrace": "attached, wrote, detached", "key": KEY}, control
    # The attack: the process that will hold the key is never dumpable, in the window neither.
    attacked = _launch(uid, dumpable=False)
    assert attacked["attacker"] == {"mem": "Permission denied", "ptrace": "Operation not permitted"}, attacked
    assert attacked["ran"] == "honest code", attacked
    assert attacked["outcome"] == "ok" and attacked["uid_map"] == [str(uid), str(uid), "1"], attacked
