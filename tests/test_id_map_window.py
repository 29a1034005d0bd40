"""Attack: a process of the same user attaches with ptrace while a non-root process that keeps
its memory private is dumpable for the few microseconds of its id-map writes
(sandbox/namespaces.write_id_maps; the kernel gives such a process's /proc/self files to
root, so it must be dumpable to write them). The kernel checks dumpable only when a tracer
attaches: one that got in stays for the component's life and could read its keys later.

The race is made deterministic by holding the window open: the first of the three writes
waits until the attacker says it is attached. Everything else is real: a second uid, a real
user namespace, the kernel's ptrace. The control is the same launch without an attacker.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import pytest

from cleancoin.sandbox import namespaces, syscalls
from cleancoin.sandbox.errors import EnforcementError

PTRACE_SEIZE = 0x4206


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys/kernel", name).read_text().strip()
    except OSError:
        return None


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="takes a second uid (setresuid): needs root"),
    pytest.mark.skipif(_sysctl("unprivileged_userns_clone") == "0" or _sysctl("user/max_user_namespaces") == "0",
                       reason="unprivileged user namespaces are off here"),
    pytest.mark.skipif((_sysctl("yama/ptrace_scope") or "0") != "0",
                       reason="Yama lets no process of the same user attach to a non-descendant here"),
]


def _become(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _launch(uid: int, attack: bool) -> tuple[str, bool]:
    """A non-root, non-dumpable process enters a user namespace and writes its id maps; with
    `attack`, another process of its uid attaches with ptrace inside the window. Returns the
    process's outcome and whether the attacker got attached."""
    result_r, result_w = os.pipe()
    window_r, window_w = os.pipe()      # the target: "I am in the window"
    go_r, go_w = os.pipe()              # the test: "go on"
    target = os.fork()
    if target == 0:
        outcome = "ok"
        try:
            _become(uid)
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)      # as CleanCoin-node's zygote's fork
            namespaces.unshare(["user"])
            if attack:
                real_write = os.write

                def held_write(fd: int, data: bytes) -> int:
                    os.write = real_write
                    real_write(window_w, b"w")
                    os.read(go_r, 1)
                    return real_write(fd, data)
                os.write = held_write
            namespaces.write_id_maps(uid, uid)
        except EnforcementError as exc:
            outcome = f"refused: {exc.reason}"
        except BaseException as exc:  # noqa: BLE001 - the test must see it
            outcome = f"error: {exc!r}"
        os.write(result_w, outcome.encode())
        os._exit(0)
    attacker = -1
    attached = False
    extra: list[int] = []
    try:
        if attack:
            assert os.read(window_r, 1) == b"w"
            told_r, told_w = os.pipe()
            stay_r, stay_w = os.pipe()
            extra += [told_r, told_w, stay_r, stay_w]
            attacker = os.fork()
            if attacker == 0:
                got = False
                try:
                    _become(uid)
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
                    got = libc.ptrace(PTRACE_SEIZE, target, None, None) == 0
                finally:
                    os.write(told_w, b"1" if got else b"0")
                    os.read(stay_r, 1)           # stays attached until the test is done
                    os._exit(0)
            attached = os.read(told_r, 1) == b"1"
        os.write(go_w, b"g")
        outcome = os.read(result_r, 4096).decode()
        return outcome, attached
    finally:
        if attacker > 0:
            os.write(stay_w, b"x")
            os.waitpid(attacker, 0)
        deadline = time.monotonic() + 10
        while os.waitpid(target, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        for fd in (result_r, result_w, window_r, window_w, go_r, go_w, *extra):
            os.close(fd)


def test_a_tracer_that_attached_in_the_id_map_window_stops_the_launch() -> None:
    uid = 3_300_000 + 2 * (os.getpid() % 100_000)
    outcome, attached = _launch(uid, attack=False)
    assert outcome == "ok", outcome                       # the control: nobody attached
    outcome, attached = _launch(uid, attack=True)
    assert attached, "the attacker did not get attached in the window: the test proves nothing"
    assert outcome.startswith("refused: a process attached with ptrace"), outcome
