"""The denial log: refusals with an errno reach the log (seccomp user notification, answered
with the same errno by a monitor), rate-limited; a SIGSYS death is named from the kernel log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
PYTHON = "/usr/bin/python3"

# 15 inet sockets, one netlink socket, TIOCSTI on a pipe: all refused with an errno.
REFUSED = """
import fcntl, os, socket, termios
for _ in range(15):
    try:
        socket.socket(socket.AF_INET)
    except OSError as e:
        assert e.errno == 97
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except OSError as e:
    assert e.errno == 97
r, w = os.pipe()
try:
    fcntl.ioctl(r, termios.TIOCSTI, b"x")
except OSError as e:
    assert e.errno == 1
print("done")
"""


def _run(tmp_path: Path, *extra: str, code: str = REFUSED) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, "run", *extra, "--policy", "examples/program", "--datadir", str(tmp_path),
                           "--", PYTHON, "-c", code], capture_output=True, text=True, timeout=60)


def _refused(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "sandbox: refused" in line]


def test_refusals_are_answered_as_before_and_logged_rate_limited(tmp_path: Path) -> None:
    quiet = _run(tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "done\n" and _refused(quiet.stderr) == []
    logged = _run(tmp_path, "--denials", "log")
    # The program saw the same answers (its asserts hold) ...
    assert logged.returncode == 0 and logged.stdout == "done\n", logged.stderr
    lines = _refused(logged.stderr)
    inet = [line for line in lines if "socket(family=inet, type=1) -> EAFNOSUPPORT" in line]
    assert len(inet) == 10                                  # the first 10, then every 1000th
    assert any("socket(family=netlink, type=3) -> EAFNOSUPPORT" in line for line in lines)
    assert any("ioctl(fd=" in line and "request=0x5412) -> EPERM" in line for line in lines)
    verbose = _refused(_run(tmp_path, "--denials", "verbose").stderr)
    assert len([line for line in verbose if "family=inet" in line]) == 15
    assert all(", thread " in line for line in verbose)


def test_the_report_says_where_refusals_go(tmp_path: Path) -> None:
    result = _run(tmp_path, "--denials", "log", "--report", code="pass")
    assert "refusals with an errno are answered by a monitor and logged to stderr" in result.stderr
    # examples/program's view has no Python: until 12-08 the monitor was then a fork of the
    # component (the report said so). The compiled monitor is exec'd from a memfd and needs
    # only the view's C library: its own program, confined.
    assert "a monitor answers and logs refusals with an errno (its own program, confined" in result.stderr, result.stderr


def test_the_fallback_monitor_has_a_filter_of_its_own(tmp_path: Path) -> None:
    """The fork that monitors where the small program cannot run parses what the component
    puts in its syscalls' arguments. It had no filter at all (confined like the component,
    without the component's filter): a monitor compromised that way could make every call the
    component's filter refuses. Now it applies the small monitor's own steps: read from
    outside, /proc/PID/status says seccomp filter mode and no_new_privs."""
    proc = subprocess.Popen([TOOL, "run", "--denials", "log", "--policy", "examples/program", "--datadir",
                             str(tmp_path), "--", PYTHON, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        monitors = [pid for pid in _descendants(proc.pid) if _status(pid).get("Name") == "denial-monitor"]
        assert len(monitors) == 1, monitors
        status = _status(monitors[0])
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", status
        assert int(status["Seccomp_filters"]) >= 1
    finally:
        proc.kill()
        proc.wait(10)


#: Attacker code in the component: signal every other process of its pid namespace (its
#: monitor is one), SIGKILL each that takes a signal, then make a refused call.
_KILL_THE_MONITOR = """
import os, signal, socket, time
me, parent = os.getpid(), os.getppid()
for pid in range(1, 64):
    if pid in (me, parent):
        continue
    try:
        os.kill(pid, 0)
    except OSError:
        continue
    os.kill(pid, signal.SIGKILL)
    print("killed", pid)
time.sleep(0.3)
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except OSError as exc:
    print("refused:", exc.errno)
"""


def test_the_fallback_monitor_is_out_of_the_components_reach(require, base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """Attack: a program under examples/program (whose @system-service allows kill) kills its
    denial monitor, then makes a refused call. Until 12-07 the monitor that is a fork of the
    component (here: the view holds no interpreter to exec) was forked at the seccomp step,
    inside the component's Landlock domain: the kill went through, and the refused call
    answered ENOSYS and went unlogged. Now it is forked at the "denial monitor" step, before
    the component's Landlock step, and confines itself in a domain of its own: the signal
    scope refuses the kill (EPERM), the call is answered EAFNOSUPPORT and logged."""
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (signal scope)")
    result = _run(tmp_path, "--denials", "log", code=_KILL_THE_MONITOR)
    assert result.returncode == 0, result.stderr
    assert "killed" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == "refused: 97", result.stdout
    assert any("socket(family=netlink, type=3) -> EAFNOSUPPORT" in line for line in _refused(result.stderr)), result.stderr


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in handle)}
    except OSError:
        return {}


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _status(int(entry)).get("PPid")
            if ppid:
                parents[int(entry)] = int(ppid)
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
        found.extend(frontier)
    return found


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="the kernel log is not readable here")
def test_a_sigsys_death_names_the_syscall(tmp_path: Path) -> None:
    result = _run(tmp_path, code="import ctypes; ctypes.CDLL(None).syscall(272, 0x10000000)")
    assert result.returncode == 128 + 31
    assert "killed by SIGSYS" in result.stderr
    if "says the kernel log" in result.stderr:              # the kernel may suppress audit records
        assert "unshare (number 272)" in result.stderr


def test_syscall_names_come_from_one_lookup() -> None:
    from cleancoin.sandbox import seccomp
    assert seccomp.syscall_name(0) == "read" and seccomp.syscall_name(272) == "unshare"
    # A number libseccomp does not name (a newer kernel's syscall) still has a name to print.
    assert seccomp.syscall_name(100000) == "#100000"


def test_every_syscall_name_goes_to_the_monitor_only_under_an_errno_default(base_sandbox, sandbox_vars,
                                                                             write_policy) -> None:
    """The monitor has no libseccomp: it is given the names of what it can be asked about. A
    policy whose default kills notifies only its errno rules (the table was once all ~370
    names on every launch); one whose default is an errno can have any syscall refused, and
    the log still names it."""
    import ctypes

    from cleancoin.sandbox import launcher
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.policy_loader import load_policy
    killing = launcher.prepare(load_policy(write_policy("")), sandbox_vars, denials=DenialLog(""))
    names = set(killing.denials["names"].values())
    assert "socket" in names                            # an errno rule of the base (families)
    assert "read" not in names and "personality" not in names, sorted(names)
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    errno_default = write_policy("""
        [policy]
        name = "errno-default"

        [filesystem]
        write = ["${datadir}"]

        [seccomp]
        default_action = "errno:EPERM"
        allow = ["@system-service"]
        deny = ["@keyring", "@privileged", "@setuid", "execve", "execveat", "unshare", "setns", "kcmp",
                "process_vm_readv", "process_vm_writev", "pidfd_getfd", "io_uring_setup", "io_uring_enter",
                "io_uring_register", "userfaultfd", "personality", "name_to_handle_at", "open_tree"]
    """, extends=False)
    plan = launcher.prepare(load_policy(errno_default), sandbox_vars, denials=DenialLog(str(log)))
    assert plan.denials["names"]["135"] == "personality"

    def call_personality(_control: int) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        # personality(0xffffffff) only reads the persona: refused here by the default.
        failed = libc.syscall(ctypes.c_long(135), ctypes.c_ulong(0xFFFFFFFF)) == -1
        return 0 if failed and ctypes.get_errno() == 1 else 1

    assert launcher.spawn(plan, target=call_personality).wait() == 0
    assert "sandbox: refused personality(...) -> EPERM" in log.read_text()


def test_a_rule_with_log_false_refuses_as_before_and_stays_out_of_the_log(base_sandbox, sandbox_vars,
                                                                           write_policy) -> None:
    """`log = false` on an errno rule: the call is refused with the same errno, by the filter
    itself (no notification), and no line is written; the rule beside it, logged, still is.
    The shipped node and wallet policies mark SQLite's fchown as root so."""
    import ctypes

    from cleancoin.sandbox import launcher
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.policy_loader import load_policy
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    policy = write_policy("""
        [policy]
        name = "quiet-rule"

        [[seccomp.rules]]
        syscall = "fchown"
        action = "errno:EPERM"
        log = false

        [[seccomp.rules]]
        syscall = "fchmod"
        action = "errno:EACCES"
    """)
    plan = launcher.prepare(load_policy(policy), sandbox_vars, denials=DenialLog(str(log)))
    assert "93" not in plan.denials["rules"] and "91" in plan.denials["rules"]   # fchown, fchmod

    def call_both(_control: int) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        answers = []
        for number in (93, 91):              # fchown(0, 0, 0), fchmod(0, 0o600)
            failed = libc.syscall(ctypes.c_long(number), 0, ctypes.c_long(0o600 if number == 91 else 0), 0) == -1
            answers.append(ctypes.get_errno() if failed else 0)
        return 0 if answers == [1, 13] else 1

    assert launcher.spawn(plan, target=call_both).wait() == 0
    text = log.read_text()
    assert "refused fchmod(" in text and "-> EACCES" in text, text
    assert "fchown" not in text, text


def test_log_false_is_refused_on_a_rule_that_refuses_nothing(write_policy) -> None:
    from cleancoin.sandbox.errors import PolicyErrors
    from cleancoin.sandbox.policy_loader import load_policy
    path = write_policy("""
        [policy]
        name = "bad-quiet"

        [[seccomp.rules]]
        syscall = "fchown"
        action = "allow"
        log = false
    """)
    with pytest.raises(PolicyErrors) as caught:
        load_policy(path)
    message = str(caught.value)
    assert f"{path}:" in message and "seccomp.rules[0].log" in message
    assert "log = false is for errno:NAME rules" in message


def test_a_sigsys_record_of_an_earlier_process_is_not_named(tmp_path: Path) -> None:
    """The kernel log holds every SIGSYS kill by pid, and pids are reused: `run` named the
    newest record for its child's pid in the whole log, which is an earlier process's when the
    child's own record is not written yet or was suppressed (seen in a full run: "capset
    (number 126)" for a child killed in unshare). Only records written since the launch count."""
    from cleancoin.sandbox.kernel_log import position, seccomp_kill
    mark = position()
    if mark is None:
        pytest.skip("the kernel log cannot be read here")
    try:
        result = _run(tmp_path, code="import ctypes; ctypes.CDLL(None).syscall(272, 0x10000000)")
        assert result.returncode == 128 + 31
        if "says the kernel log" not in result.stderr:
            pytest.skip("the kernel did not log this kill (audit records are rate-limited)")
        pid = None
        with open("/dev/kmsg", "rb", buffering=0) as kmsg:    # the newest unshare kill: this one
            os.lseek(kmsg.fileno(), 0, os.SEEK_DATA)
            os.set_blocking(kmsg.fileno(), False)
            while True:
                try:
                    record = kmsg.read(8192)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                if not record:
                    break
                found = re.search(rb"type=1326 .*?\bpid=(\d+)\b.*?\bsyscall=272\b", record)
                if found:
                    pid = int(found.group(1))
        assert pid is not None
        assert seccomp_kill(pid, wait=0, after=mark) == "unshare (number 272)"   # since the mark
        later = position()
        assert later is not None
        try:
            assert seccomp_kill(pid, wait=0, after=later) is None    # a process launched afterwards
        finally:
            os.close(later)
        assert seccomp_kill(pid, wait=0) == "unshare (number 272)"   # the whole log: still there
    finally:
        os.close(mark)
