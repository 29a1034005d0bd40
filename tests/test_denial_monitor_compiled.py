"""The denial log's monitor as a compiled program (sandbox/denial_monitor.c, since 12-08) next
to the interpreter's program it replaces wherever exec is possible (denial_monitor.py, which
still runs where the monitor must be a fork: denial_log.launch's fork_only, a failed exec).

Both are a boundary: they run outside the component's sandbox and take the component's input
(its configuration before it is confined; its syscalls' arguments, a notification storm, a
hung-up channel, its signals after). Each attack runs against the real compiled program and
against the Python one, and both must write the same log lines byte for byte."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cleancoin.sandbox import capabilities, denial_log, denial_monitor, launcher, syscalls
from cleancoin.sandbox.denial_log import DenialLog
from cleancoin.sandbox.policy_loader import load_policy

pytestmark = pytest.mark.usefixtures("deadline")

KINDS = ("compiled", "python")
COMPILED = denial_log.COMPILED_PROGRAM


@pytest.fixture(params=KINDS)
def monitor_kind(request, monkeypatch) -> str:  # noqa: ANN001
    """Which monitor a launch starts: the compiled one, or (no compiled program to exec) the
    interpreter's program in a fork of the component, as launch's fork_only runs it."""
    if request.param == "python":
        monkeypatch.setattr(denial_log, "COMPILED_PROGRAM", "/nonexistent/denial-monitor")
    return str(request.param)


def _drop_privileges() -> None:
    # What denial_log does before it execs the monitor.
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    capabilities.drop(())


def _program(kind: str) -> list[str]:
    if kind == "compiled":
        return [COMPILED]
    return [sys.executable, "-I", "-S", denial_log.MONITOR_PROGRAM]


def _start(kind: str, log: int, prelaunched: bool = False) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """The monitor program, run as denial_log runs it (no_new_privs, no capability, nothing but
    its channel and the log); our end of its channel."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    arguments = [str(theirs.fileno())] + ([] if prelaunched else [str(log)])
    proc = subprocess.Popen([*_program(kind), *arguments], pass_fds=[theirs.fileno(), log],
                            preexec_fn=_drop_privileges, stdin=subprocess.DEVNULL)
    theirs.close()
    return ours, proc


def _answer(ours: socket.socket, proc: subprocess.Popen[bytes]) -> tuple[bytes, int]:
    """What the monitor said on its channel, and how it ended once hung up on."""
    ours.settimeout(20)
    try:
        reply = ours.recv(4096)
    except OSError as exc:
        reply = f"<{exc}>".encode()
    ours.close()
    return reply, proc.wait(20)


@pytest.fixture
def config(base_sandbox, sandbox_vars, write_policy) -> bytes:  # noqa: ANN001
    """A real configuration: the general test policy's refusals and the monitor's filter."""
    plan = launcher.prepare(load_policy(write_policy("")), sandbox_vars, denials=DenialLog("", label="cmp"))
    return denial_monitor.encode_config(denial_log.monitor_config(plan, os.getpid()))


def _with_length(body: bytes) -> bytes:
    return len(body).to_bytes(4, "little") + body


#: Where the label's length is in a configuration: after its length, "CCDM", the version, the
#: target, four flags, the default errno, max_kinds and lines_per_minute (4 bytes each).
LABEL_AT = 32


MALFORMED = {
    # (what the component sends, whether it then stops writing, the reason expected after "configuration: ")
    "4 GiB announced": (lambda c: b"\xff\xff\xff\xff" + c[4:], True, "4294967295 bytes, more than 1048576"),
    "not a configuration": (lambda c: _with_length(b"XXXX" + c[8:]), False, "malformed: not a monitor configuration"),
    "unknown version": (lambda c: _with_length(c[4:8] + b"\x09\x00\x00\x00" + c[12:]), False, "malformed: unknown version"),
    "truncated": (lambda c: _with_length(c[4:-7]), False, "malformed: errnos"),
    "trailing bytes": (lambda c: _with_length(c[4:] + b"\0"), False, "malformed: trailing bytes"),
    "a forged line in the label": (lambda c: c[:LABEL_AT] + b"\x03\x00\n[x" + c[LABEL_AT + 5:], False,
                                   "malformed: label"),
    "bpf longer than sent": (lambda c: _with_length(c[4:LABEL_AT + 5] + b"\xff\xff\x00\x00"), False,
                             "malformed: bpf"),
    "hung up half way": (lambda c: c[:len(c) // 2], True, "the component hung up"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("kind", KINDS)
def test_a_malformed_configuration_fails_closed_naming_the_step(config, tmp_path, kind, case):  # noqa: ANN001
    """Attack: the configuration is the only input a monitor takes before it is confined. A
    length of 4 GiB, a table that is not one, strings that would forge log lines, counts
    beyond what was sent, a component that stops half way: each gets "E", the step
    ("configuration") and why, and the monitor ends (exit 1, not a signal), never serving."""
    assert config[4:].startswith(b"CCDM")
    assert config[LABEL_AT:LABEL_AT + 5] == b"\x03\x00cmp"
    make, stop, reason = MALFORMED[case]
    with open(tmp_path / "log", "wb") as log:
        ours, proc = _start(kind, log.fileno())
    ours.sendall(make(config))
    if stop:
        ours.shutdown(socket.SHUT_WR)
    reply, status = _answer(ours, proc)
    assert (reply, status) == (f"Econfiguration: {reason}".encode(), 1)
    # The same monitor takes the configuration as sent.
    with open(tmp_path / "log", "wb") as log:
        ours, proc = _start(kind, log.fileno())
    ours.sendall(config)
    assert _answer(ours, proc) == (b"R", 0)


def _mutations(config: bytes, count: int, seed: int) -> list[bytes]:
    """`config` with bytes changed, outside its BPF (a filter that kills the monitor on its
    next call is the kernel's answer, not a crash), or cut short."""
    bpf_at = LABEL_AT + 2 + config[LABEL_AT] + 4
    bpf_end = bpf_at + int.from_bytes(config[bpf_at - 4:bpf_at], "little")
    outside = [i for i in range(4, len(config)) if not bpf_at <= i < bpf_end]
    rng = random.Random(seed)
    out = []
    for n in range(count):
        data = bytearray(config[4:])
        if n % 5 == 4:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 6)):
                data[rng.choice(outside) - 4] = rng.randrange(256)
        out.append(_with_length(bytes(data)))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_configurations_get_an_answer_never_a_crash(config, tmp_path, kind):  # noqa: ANN001
    """Attack: configurations with random bytes changed (lengths, counts, numbers, names) or
    cut short. The monitor parses them unconfined: each must end in "R" (served, then ends
    when hung up on) or "E" naming a step, exit 0 or 1, never a signal (a C parser that reads
    past its buffer dies of SIGSEGV, or worse, goes on)."""
    count = 150 if kind == "compiled" else 20         # the interpreter takes ~30 ms to start
    answers: dict[bytes, int] = {}
    with open(tmp_path / "log", "wb") as log:
        for data in _mutations(config, count, seed=1208):
            ours, proc = _start(kind, log.fileno())
            try:
                ours.sendall(data)
            except OSError:
                pass                                    # it answered and ended already
            if len(data) - 4 != int.from_bytes(data[:4], "little"):
                ours.shutdown(socket.SHUT_WR)
            reply, status = _answer(ours, proc)
            assert status in (0, 1) and reply[:1] in (b"R", b"E"), (data.hex(), reply, status)
            assert (reply[:1] == b"R") == (status == 0), (reply, status)
            step = reply[:1] + reply[1:].split(b":")[0]
            answers[step] = answers.get(step, 0) + 1
    assert answers.get(b"Econfiguration", 0) >= count // 3, answers


@pytest.mark.parametrize("kind", KINDS)
def test_a_component_that_hangs_up_ends_its_monitor(config, tmp_path, kind):  # noqa: ANN001
    """Attack: the component closes CHANNEL (a) before the configuration is whole, (b) once
    the monitor is confined, before it sends the listener, (c) prelaunched, before anything
    is sent. The monitor ends each time: it neither waits for ever nor serves without a
    listener, and an early hang-up says why (to no one: nothing is read)."""
    with open(tmp_path / "log", "wb") as log:
        ours, proc = _start(kind, log.fileno())
        ours.sendall(config[:10])
        ours.close()
        assert proc.wait(20) == 1
        ours, proc = _start(kind, log.fileno())
        ours.sendall(config)
        ours.settimeout(20)
        assert ours.recv(16) == b"R"
        ours.close()
        assert proc.wait(20) == 0
        ours, proc = _start(kind, log.fileno(), prelaunched=True)
        ours.close()
        assert proc.wait(20) == 1
    assert (tmp_path / "log").read_bytes() == b""


def _attach(pid: int) -> str:
    """Attach to `pid` from a fork with no capability and no_new_privs (any process
    of the uid: a component's fork, a compromised neighbour); "attached" or the errno."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            _drop_privileges()
            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace.restype = ctypes.c_long
            # PTRACE_SEIZE: PTRACE_ATTACH's permission check, without stopping the tracee
            # (it is let go when this process ends).
            if libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(pid), None, None) == 0:
                os.write(write_end, b"attached")
            else:
                os.write(write_end, errno.errorcode.get(ctypes.get_errno(), "?").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(child, 0)
    return answer


def _waiting(pid: int) -> None:
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "S":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_monitor_waiting_for_its_configuration_cannot_be_traced_by_its_uid(base_sandbox):  # noqa: ANN001
    """Attack: a process of the same uid, without capabilities, attaches to a prelaunched
    monitor while it waits for its configuration (CleanCoin-node starts it before its own
    imports; the wait lasts the node's whole set-up), and would then run it unconfined with
    the listener to come. The interpreter's program, exec'd from its readable file, was
    dumpable until its own step 1: the attach went through. The compiled monitor is exec'd
    from a memfd of mode 0111, which the uid cannot read: the kernel starts it not dumpable,
    and the attach is refused from its first instruction."""
    monitor = denial_log.prelaunch()
    try:
        assert monitor.helper is not None
        pid = monitor.helper.pid
        _waiting(pid)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"denial-monitor"
        assert _attach(pid) == "EPERM"
    finally:
        denial_log.discard(monitor)
    # Next to it, the interpreter's program as it was exec'd until 12-08: attached.
    ours, theirs = socket.socketpair()
    old = subprocess.Popen([sys.executable, "-I", "-S", denial_log.MONITOR_PROGRAM, str(theirs.fileno())],
                           pass_fds=[theirs.fileno()], preexec_fn=_drop_privileges)
    theirs.close()
    try:
        time.sleep(0.3)
        _waiting(old.pid)
        assert _attach(old.pid) == "attached"
    finally:
        ours.close()
        old.wait(20)


def _refusals(_control: int, storm: bool) -> int:
    """In the confined component: refusals of every shape a line describes (a family by name
    and by number, an ioctl request, clone's flags, prctl's option, a path call's arguments),
    ten and more of one kind (the count in the line), and with `storm`, kinds past the
    monitor's bound and lines past its budget."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def call(*args: int) -> None:
        libc.syscall(*[ctypes.c_ulong(a & (1 << 64) - 1) for a in args])
    call(41, socket.AF_NETLINK, socket.SOCK_RAW, 0)
    call(41, 200, socket.SOCK_STREAM, 0)
    call(53, socket.AF_INET, socket.SOCK_STREAM, 0, 0)
    read_end, _write_end = os.pipe()
    for _ in range(12):
        call(16, read_end, 0x5412, 0)                     # TIOCSTI
    for _ in range(1005 if storm else 3):
        call(56, syscalls.CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
    for i in range(300 if storm else 0):
        call(56, syscalls.CLONE_NEWUSER | signal.SIGCHLD | i << 32, 0, 0, 0, 0)
    call(157, 4, 1, 0, 0, 0)                              # PR_SET_DUMPABLE
    call(257, -100, 0, os.O_CREAT, 0o2755)                # openat, setgid mode
    call(90, 0, 0o4755)                                   # chmod, setuid mode
    return 0


def _lines(kind: str, monkeypatch, sandbox_vars, policy: str, verbose: bool, storm: bool) -> list[str]:  # noqa: ANN001
    log = Path(sandbox_vars["datadir"]) / f"{kind}-{verbose}-{time.monotonic_ns()}.log"
    monkeypatch.setattr(denial_log, "COMPILED_PROGRAM",
                        COMPILED if kind == "compiled" else "/nonexistent/denial-monitor")
    plan = launcher.prepare(load_policy(policy), sandbox_vars, denials=DenialLog(str(log), verbose=verbose, label="cmp"))
    child = launcher.spawn(plan, target=lambda control: _refusals(control, storm))
    assert child.report is not None
    assert ("its own program, confined" in child.report.to_text()) == (kind == "compiled")
    assert child.wait() == 0
    # The monitor writes its last line (what the budget left out) once the component is gone.
    deadline = time.monotonic() + 10
    while not (text := log.read_text()).endswith("\n") or (storm and "not logged" not in text):
        assert time.monotonic() < deadline, text[-500:]
        time.sleep(0.02)
    return text.splitlines()


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def test_both_monitors_write_the_same_lines(base_sandbox, sandbox_vars, write_policy, monkeypatch):  # noqa: ANN001
    """The compiled monitor's lines are the interpreter's byte for byte (but the time): every
    description, the counts, the kinds past the bound and the budget's summary, and verbose."""
    policy = write_policy("")
    for attempt in range(3):
        minute = int(time.monotonic() // 60)
        compiled = _lines("compiled", monkeypatch, sandbox_vars, policy, False, True)
        python = _lines("python", monkeypatch, sandbox_vars, policy, False, True)
        if int(time.monotonic() // 60) == minute:
            break                       # both within one minute's budget: comparable
    for line in compiled + python:
        assert STAMP.match(line) and abs(_stamp(line) - time.time()) < 120, line
    compiled, python = [line[21:] for line in compiled], [line[21:] for line in python]
    assert compiled == python
    assert "[sandbox:cmp] [cleancoin.sandbox] WARNING sandbox: refused clone(flags=0x10000011) -> EPERM (1000 times)" \
        in compiled
    assert any("more lines of refusals not logged (at most 120 lines a minute)" in line for line in compiled)
    for needle in ("socket(family=netlink, type=3) -> EAFNOSUPPORT", "socket(family=200, type=1) -> EAFNOSUPPORT",
                   "socketpair(family=inet, type=1)", "ioctl(fd=", "request=0x5412) -> EPERM",
                   "prctl(option=4, arg2=0x1) -> EPERM", "openat(...) -> EPERM", "chmod(...) -> EPERM"):
        assert any(needle in line for line in compiled), needle
    # Verbose: every refusal with its arguments and thread (fewer than a second's budget).
    thread = re.compile(r", thread \d+$")
    compiled = [thread.sub(", thread N", line[21:]) for line in _lines("compiled", monkeypatch, sandbox_vars, policy,
                                                                        True, False)]
    python = [thread.sub(", thread N", line[21:]) for line in _lines("python", monkeypatch, sandbox_vars, policy,
                                                                      True, False)]
    assert compiled == python and len(compiled) == 21, compiled
    assert any("refused openat(0xffffffffffffff9c, 0x0, 0x40, 0x5ed) -> EPERM, thread N" in line for line in compiled)


def _stamp(line: str) -> float:
    import calendar
    return calendar.timegm(time.strptime(line[:20], "%Y-%m-%dT%H:%M:%SZ"))


@pytest.mark.skipif(os.geteuid() != 0, reason="a process with capabilities is root's")
def test_the_compiled_monitor_refuses_to_serve_with_capabilities(config, tmp_path):  # noqa: ANN001
    """Step 2 checked: started with capabilities (not by denial_log, which drops them), it
    says so and ends before it takes a listener."""
    ours, theirs = socket.socketpair()
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([COMPILED, str(theirs.fileno()), str(log.fileno())],
                                pass_fds=[theirs.fileno(), log.fileno()])
    theirs.close()
    ours.sendall(config)
    reply, status = _answer(ours, proc)
    assert reply.startswith(b"Ecapabilities: capabilities still held: [") and status == 1, reply


def test_the_compiled_monitors_landlock_table_is_the_launchers() -> None:
    """The compiled monitor handles every Landlock right itself, from its own copy of the
    table by ABI: it must be landlock.py's (denial_monitor.handled is checked against it), or
    it would grant what it leaves unhandled."""
    source = (Path(__file__).resolve().parents[1] / "sandbox" / "denial_monitor.c").read_text()
    table = re.search(r"FS_BY_ABI\[\] = \{(.*?)\};", source, re.S)
    assert table is not None
    rows = re.findall(r"\{(\d), \(?1ULL << (\d+)\)?( - 1)?\}", table.group(1))
    copied = tuple((int(abi), (1 << int(shift)) - (1 if minus else 0)) for abi, shift, minus in rows)
    assert copied == denial_monitor._FS_BY_ABI  # noqa: SLF001
    assert "*net = abi >= 4 ? 3 : 0;" in source and "*scoped = abi >= 6 ? 3 : 0;" in source
    assert denial_monitor.handled(4)[1] == 3 and denial_monitor.handled(6)[2] == 3
