"""A program that may hold the operator's terminal (kept in the launcher's session, or given its
descriptors) leaves it as it found it.

Attack tests: the real program of `CleanCoin-sandbox run`, typed at an interactive shell
(tests/functional/operator_shell.py: the pty is the shell's controlling terminal, the job has
the foreground), under examples/program with `new_session = false` and `stdio = "inherit"`.
Found 12-08 (h108), before the derived terminal rule covered more than TIOCSTI: with the
example's own ioctl rules the program took the foreground (TIOCSPGRP) and still held it when it
ended, left the terminal resized (TIOCSWINSZ), with echo and canonical input off (TCSETS), and
cleared exclusive mode (TIOCNXCL); with one `allow` rule for ioctl (which replaces the
example's refusals) it also left the line discipline N_NULL (every key typed discarded) and
the terminal exclusive (sudo's and ssh's open of /dev/tty: EBUSY). And a policy kept in the
session got the filter its new-session twin had left in the filter cache (the cache key did
not hold the derived terminal rule), without even the TIOCSTI refusal.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
SHELL = Path(__file__).parent / "functional" / "operator_shell.py"
N_TTY, N_NULL = 0, 27

#: What a compromised interactive tool does to the terminal it was given, each attempt's
#: result written to ${datadir}/got: an errno, or "done".
_STEER = """
import fcntl, json, os, signal, struct, termios
got = {}
def attempt(name, call):
    try:
        call()
        got[name] = "done"
    except (OSError, termios.error) as exc:
        got[name] = exc.args[0]
def modes():
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(0, termios.TCSANOW, attrs)
def foreground():
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpgrp())
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
attempt("size read", lambda: fcntl.ioctl(0, termios.TIOCGWINSZ, bytes(8)))
attempt("TIOCSETD", lambda: fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27)))
attempt("TIOCNXCL", lambda: fcntl.ioctl(0, termios.TIOCNXCL))
attempt("TIOCSWINSZ", lambda: fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 5, 7, 0, 0)))
attempt("TIOCSCTTY", lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 1))
attempt("TIOCLINUX", lambda: fcntl.ioctl(0, termios.TIOCLINUX, b"\\x0b"))
attempt("TCSETS", modes)
attempt("TIOCSPGRP", foreground)
attempt("TIOCEXCL", lambda: fcntl.ioctl(0, termios.TIOCEXCL))
open(os.environ["DATADIR"] + "/got", "w").write(json.dumps(got))
"""

_KEEP = ('extends = ["examples/program"]\n[process]\nnew_session = false\nstdio = "inherit"\n'
         'reason = "an interactive tool under the shell\'s job control"\n'
         'set_environment = { DATADIR = "${datadir}" }\n')
_ALLOW_IOCTL = '[[seccomp.rules]]\nsyscall = "ioctl"\naction = "allow"\n'


def _state(fd: int) -> dict[str, object]:
    """What outlives a program on the terminal: its modes, size, discipline, exclusive mode."""
    line = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCGETD, bytes(4)))[0]
    if line != N_TTY:        # N_NULL has no modes to read: put n_tty back to read the rest
        fcntl.ioctl(fd, termios.TIOCSETD, struct.pack("i", N_TTY))
    lflag = termios.tcgetattr(fd)[3]
    return {"discipline": line, "echo": bool(lflag & termios.ECHO), "icanon": bool(lflag & termios.ICANON),
            "size": struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))),
            "exclusive": struct.unpack("i", fcntl.ioctl(fd, 0x80045440, bytes(4)))[0]}   # TIOCGEXCL


def _at_a_shell_prompt(tmp_path: Path, policy_text: str) -> tuple[dict[str, object], dict[str, object], dict[str, int]]:
    """Run _STEER under the policy at an operator's shell: what it got, the terminal's state
    after the job (and before it), and the job's record (who had the foreground when it ended)."""
    import pty
    policy, data, status = tmp_path / "policy.toml", tmp_path / "data", tmp_path / "job.json"
    policy.write_text(policy_text)
    data.mkdir()
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        before = _state(slave)
        shell = subprocess.run([sys.executable, str(SHELL), os.ttyname(slave), str(status), "--", TOOL, "run",
                                "--policy", str(policy), "--datadir", str(data), "--", "/usr/bin/python3", "-c",
                                _STEER], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
        after = _state(slave)
    finally:
        os.close(slave)
        os.close(master)
    assert shell.returncode == 0
    assert before == {"discipline": N_TTY, "echo": True, "icanon": True, "size": (24, 80, 0, 0), "exclusive": 0}
    return json.loads((data / "got").read_text()), after, json.loads(status.read_text())


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
@pytest.mark.parametrize("rules", ["example", "ioctl allowed", "ioctl allowed, EPERM default"])
def test_a_program_kept_in_the_operators_session_leaves_the_terminal_as_it_found_it(tmp_path: Path, rules: str) -> None:
    """Every request that steers the terminal beyond the run answers EPERM, whatever the
    policy's ioctl rules say (a derived rule: syscalls.TERMINAL_REFUSED); the modes, which an
    interactive program must set, it sets, and the launcher puts them back when it ends. Next
    to them, reading the size works."""
    extra = {"example": "", "ioctl allowed": _ALLOW_IOCTL,
             "ioctl allowed, EPERM default": '[seccomp]\ndefault_action = "errno:EPERM"\n' + _ALLOW_IOCTL}[rules]
    got, after, job = _at_a_shell_prompt(tmp_path, _KEEP + extra)
    eperm = 1
    assert got == {"size read": "done", "TIOCSETD": eperm, "TIOCNXCL": eperm, "TIOCSWINSZ": eperm,
                   "TIOCSCTTY": eperm, "TIOCLINUX": eperm, "TCSETS": "done", "TIOCSPGRP": eperm,
                   "TIOCEXCL": eperm}, got
    assert after == {"discipline": N_TTY, "echo": True, "icanon": True, "size": (24, 80, 0, 0), "exclusive": 0}, after
    assert job["foreground"] == job["job"], job          # the job kept the foreground to its end


def test_the_filter_cache_keeps_a_kept_session_apart_from_its_new_session_twin(tmp_path: Path) -> None:
    """Two policies that differ only in `new_session` have the same rules but not the same
    filter: the kept one refuses the terminal requests. Until 12-08 (h108) the cache key left
    the derived terminal rule out, and whichever twin compiled first gave the other its filter:
    the kept one then let TIOCSTI through (here: the new-session twin compiled first, through
    the cache, as `run` does)."""
    from cleancoin.sandbox import bpf_sim, filter_cache, seccomp
    from cleancoin.sandbox.filter_spec import filter_spec
    from cleancoin.sandbox.policy_loader import load_policy
    specs = {}
    for keep in (False, True):
        path = tmp_path / f"keep-{keep}.toml"
        path.write_text('extends = ["examples/program"]\n[process]\n'
                        f'new_session = {str(not keep).lower()}\nreason = "twins"\n' + _ALLOW_IOCTL)
        specs[keep] = filter_spec(load_policy(str(path)))
    def rules(keep: bool) -> list[tuple[object, ...]]:
        return [(r.syscall, r.action, r.args) for r in specs[keep].rules]
    assert rules(False) == rules(True) and specs[True].deny_terminal_input and not specs[False].deny_terminal_input
    assert filter_cache.key(specs[False], False) != filter_cache.key(specs[True], False)
    number = seccomp.syscall_number("ioctl")
    verdicts = {}
    for keep in (False, True):                           # the new-session twin first
        bpf = seccomp.compile_filter(specs[keep], cached=True).bpf
        verdicts[keep] = {request: bpf_sim.run(bpf, number, [0, request]) for request in (0x5412, 0x5401)}
    assert verdicts[False][0x5412] == bpf_sim.RET_ALLOW                     # TIOCSTI: the policy's allow
    assert verdicts[True][0x5412] == bpf_sim.RET_ERRNO | 1                  # TIOCSTI: EPERM
    assert verdicts[True][0x5401] == verdicts[False][0x5401] == bpf_sim.RET_ALLOW   # TCGETS: allowed


def test_outside_is_exactly_the_complement_of_the_refused_requests() -> None:
    """Under an errno:EPERM default the derived rule is written as the requests that may run
    (libseccomp has no "not in"): every 32-bit value is in exactly one of the refused set and
    the union of `_outside`'s prefixes, checked on the values near each request and at random."""
    import random
    from cleancoin.sandbox.seccomp import _outside
    from cleancoin.sandbox.syscalls import TERMINAL_REFUSED
    rules = _outside(1, TERMINAL_REFUSED)
    assert all(len(conds) == 1 and conds[0].op == "masked_eq" for conds in rules)

    def runs(value: int) -> bool:
        return any(value & c[0].mask == c[0].value for c in rules)
    rng = random.Random(108)
    values = [v ^ (1 << bit) for v in TERMINAL_REFUSED for bit in range(32)]
    values += list(TERMINAL_REFUSED) + [rng.getrandbits(32) for _ in range(5000)] + list(range(0x5400, 0x5480))
    for value in values:
        assert runs(value) == (value not in TERMINAL_REFUSED), hex(value)


#: Turns echo off, ignores SIGINT (which the terminal still sends: ISIG stays on), says so and
#: waits: the operator's Ctrl-C then ends the launcher, not the program.
_ECHO_OFF_AND_WAIT = """
import signal, termios, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
attrs = termios.tcgetattr(0)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, attrs)
print("modes set", flush=True)
time.sleep(30)
"""


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
def test_the_modes_are_put_back_when_the_operator_interrupts_the_launcher(tmp_path: Path) -> None:
    """Ctrl-C at the terminal ends the launcher (KeyboardInterrupt) while the program, which
    ignores SIGINT, runs on: the launcher ended it and put the modes back only after (found
    12-08, h108: the first version put them back only when the program ended by itself, and
    echo stayed off)."""
    import pty
    import select
    import time
    policy, data = tmp_path / "policy.toml", tmp_path / "data"
    policy.write_text(_KEEP)
    data.mkdir()
    master, slave = pty.openpty()
    try:
        shell = subprocess.Popen([sys.executable, str(SHELL), os.ttyname(slave), str(tmp_path / "job.json"), "--",
                                  TOOL, "run", "--policy", str(policy), "--datadir", str(data), "--",
                                  "/usr/bin/python3", "-c", _ECHO_OFF_AND_WAIT],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        screen, deadline = b"", time.monotonic() + 60
        while b"modes set" not in screen and time.monotonic() < deadline and shell.poll() is None:
            if select.select([master], [], [], 1)[0]:
                screen += os.read(master, 4096)
        assert b"modes set" in screen, screen
        assert not _state(slave)["echo"]                  # the program's modes, while it runs
        started = time.monotonic()
        os.write(master, b"\x03")                         # Ctrl-C: SIGINT to the job
        assert shell.wait(timeout=60) == 0
        after = _state(slave)
    finally:
        os.close(slave)
        os.close(master)
    job = json.loads((tmp_path / "job.json").read_text())
    assert after["echo"] and after["icanon"], after
    assert job["status"] != 0 and time.monotonic() - started < 25, job    # interrupted, not ended by itself
