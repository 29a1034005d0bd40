"""The denial log's monitor as a program of its own (sandbox/denial_monitor.py): it confines
itself (its own Landlock domain granting nothing, its own seccomp filter, no capability, not
dumpable) and a confined component can neither signal it, nor read its memory, nor reach its
descriptors; the refusals are still answered with the policy's errno and logged."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cleancoin.sandbox import capabilities, denial_log, denial_monitor, launcher, syscalls
from cleancoin.sandbox.denial_log import DenialLog
from cleancoin.sandbox.errors import EnforcementError
from cleancoin.sandbox.policy_loader import load_policy

pytestmark = pytest.mark.usefixtures("deadline")


@pytest.fixture(params=("compiled", "python"))
def monitor_kind(request, monkeypatch) -> str:  # noqa: ANN001
    """Which monitor a launch starts: the compiled one (denial_monitor.c), or the interpreter's
    program in a fork of the component, where no compiled program can be exec'd (as
    launch's fork_only runs it). Attacks on the monitor run against both."""
    if request.param == "python":
        monkeypatch.setattr(denial_log, "COMPILED_PROGRAM", "/nonexistent/denial-monitor")
    return str(request.param)

# Runs in `python -I -S` (as the monitor does): loads the monitor's module by path, confines
# itself with the BPF given in hex, then tries what it must not do and what it must.
CONFINED = r"""
import _socket, ctypes, errno, fcntl, importlib.util, json, mmap, os, sys
spec = importlib.util.spec_from_file_location("denial_monitor", sys.argv[1])
monitor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(monitor)
bpf = bytes.fromhex(sys.argv[2])
log = int(sys.argv[3])
a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
# A real notification listener of its own (a filter that notifies a syscall nobody makes),
# to try the SECCOMP_IOCTL_NOTIF_* requests on once confined.
notifying = ctypes.create_string_buffer(bytes.fromhex(sys.argv[4]))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Prog(len(notifying.raw) // 8, ctypes.cast(notifying, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
listener = libc.syscall(ctypes.c_long(317), ctypes.c_long(1), ctypes.c_long(8), ctypes.byref(prog))
try:
    notes = monitor.confine(bpf, False, True)
except monitor.ConfineError as exc:
    print(json.dumps({"confine_error": list(exc.args)}))
    sys.exit(0)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
attempt("open", lambda: os.close(os.open("/etc/hostname", os.O_RDONLY)))
attempt("socket", lambda: _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM).close())
attempt("signal parent", lambda: os.kill(os.getppid(), 0))
attempt("exec mapping", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC))
attempt("write log", lambda: os.write(log, b"a line\n"))
attempt("socket pair", lambda: (os.write(a.fileno(), b"x"), b.recvmsg(1, 64)))
attempt("memory", lambda: bytearray(8 << 20))
if listener >= 0:
    # Nothing is pending and the ids are made up: a request the filter lets through gets the
    # kernel's answer (RECV: EINVAL for a buffer that is not zero, before it would wait;
    # SEND and ID_VALID: ENOENT), one it refuses gets EPERM.
    attempt("notif recv", lambda: fcntl.ioctl(listener, monitor.IOCTL_NOTIF_RECV, bytearray(b"\1" * monitor._NOTIF.size), True))
    attempt("notif send", lambda: fcntl.ioctl(listener, monitor.IOCTL_NOTIF_SEND, monitor._RESP.pack(12345, 0, -1, 0)))
    attempt("notif id_valid", lambda: fcntl.ioctl(listener, monitor.IOCTL_NOTIF_ID_VALID, (12345).to_bytes(8, "little")))
os.write(log, (json.dumps(out) + "\n").encode())
"""


def _drop_privileges() -> None:
    # What denial_log does before it execs the monitor: nothing but no_new_privs and no
    # capability reaches the program.
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    capabilities.drop(())


def _confined(bpf: bytes, tmp_path: Path, drop: bool = True) -> dict[str, str]:
    log = tmp_path / "log"
    with open(log, "wb") as handle:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", CONFINED, denial_log.MONITOR_PROGRAM,
                               bpf.hex(), str(handle.fileno()), _notify_filter().hex()],
                              pass_fds=[handle.fileno()], preexec_fn=_drop_privileges if drop else None,
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.strip():
        return json.loads(proc.stdout)       # type: ignore[no-any-return]
    lines = log.read_text().splitlines()
    assert lines[0] == "a line", lines
    return json.loads(lines[1])              # type: ignore[no-any-return]


def _notify_filter() -> bytes:
    """Allows everything, notifies vhangup (which nothing calls): only there for its listener."""
    from cleancoin.sandbox import seccomp
    lib = seccomp._lib()  # noqa: SLF001
    flt = lib.SyscallFilter(lib.ALLOW)
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    flt.add_rule(lib.NOTIFY, "vhangup")
    return seccomp._export(flt, "export_bpf")  # noqa: SLF001


def _allow_all() -> bytes:
    from cleancoin.sandbox import seccomp
    lib = seccomp._lib()  # noqa: SLF001
    flt = lib.SyscallFilter(lib.ALLOW)
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    return seccomp._export(flt, "export_bpf")  # noqa: SLF001


def test_the_monitor_program_refuses_files_and_sockets_once_confined(base_sandbox, require, tmp_path):
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (signal scope)")
    result = _confined(denial_log.monitor_filter(), tmp_path)
    # Its own filter: everything it does not need is EPERM, an executable mapping too.
    assert result["open"] == "EPERM" and result["socket"] == "EPERM"
    assert result["signal parent"] == "EPERM" and result["exec mapping"] == "EPERM"
    # ... next to what it needs: its log, its socket, memory.
    assert result["write log"] == "ok" and result["socket pair"] == "ok" and result["memory"] == "ok"


def test_the_monitors_filter_lets_through_only_the_notification_ioctls_it_makes(base_sandbox, require, tmp_path):
    """The monitor receives and answers notifications (RECV, SEND) and never asks whether one
    is still valid: SECCOMP_IOCTL_NOTIF_ID_VALID is refused like any other ioctl."""
    require(base_sandbox.landlock_abi >= 1, "Landlock")
    result = _confined(denial_log.monitor_filter(), tmp_path)
    assert result["notif recv"] == "EINVAL" and result["notif send"] == "ENOENT", result
    assert result["notif id_valid"] == "EPERM", result
    # Without the monitor's filter the same request reaches the kernel: the EPERM is the filter's.
    assert _confined(_allow_all(), tmp_path)["notif id_valid"] == "ENOENT"


def test_the_monitors_landlock_domain_grants_nothing_even_without_its_filter(base_sandbox, require, tmp_path):
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (signal scope)")
    result = _confined(_allow_all(), tmp_path)
    # With a filter that allows every syscall, Landlock alone refuses the file and the signal
    # to a process outside the monitor's domain.
    assert result["open"] == "EACCES" and result["signal parent"] == "EPERM"
    assert result["write log"] == "ok" and result["socket"] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="a process with capabilities is root's")
def test_the_monitor_refuses_to_serve_with_capabilities(tmp_path):
    result = _confined(denial_log.monitor_filter(), tmp_path, drop=False)
    assert result["confine_error"][0] == "capabilities", result


# ----------------------------------------------------------------- inside a real component

def _attack_the_monitor(channel: int) -> int:
    """In the confined component: learn the monitor's pid (as this pid namespace numbers it),
    try to kill it and to read its memory, then make a refused call that it must still log."""
    data = os.read(channel, 64)
    pid = int(data)
    results = {}
    try:
        os.kill(pid, signal.SIGKILL)
        results["kill"] = "killed"
    except OSError as exc:
        results["kill"] = errno.errorcode.get(exc.errno or 0, "?")
    for what in ("mem", "environ", "fd"):
        try:
            if what == "fd":
                results[what] = "listed: " + ",".join(os.listdir(f"/proc/{pid}/fd"))
            else:
                fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY)
                os.close(fd)
                results[what] = "opened"
        except OSError as exc:
            results[what] = errno.errorcode.get(exc.errno or 0, "?")
    time.sleep(0.2)
    # clone with a namespace flag: EPERM by the filter (as unshare is denied), through the monitor.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(56, syscalls.CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0) < 0:
        results["clone"] = errno.errorcode.get(ctypes.get_errno(), "?")
    else:
        results["clone"] = "cloned"
    os.write(channel, json.dumps(results).encode())
    os.read(channel, 1)          # the test has looked at the processes, and signalled the monitor
    libc.syscall(56, syscalls.CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)     # logged again
    return 0


def test_a_confined_component_cannot_kill_or_read_its_monitor(base_sandbox, require, sandbox_vars, tmp_path,
                                                             write_policy, proc, monitor_kind):
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (signal scope)")
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    policy = write_policy("""
        [filesystem]
        write = ["${datadir}"]
    """)
    plan = launcher.prepare(load_policy(policy), sandbox_vars, denials=DenialLog(str(log)))
    ours, theirs = socket.socketpair()
    child = launcher.spawn(plan, target=lambda _control: _attack_the_monitor(theirs.fileno()),
                           pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        assert child.report is not None
        text = child.report.to_text()
        assert ("its own program, confined" if monitor_kind == "compiled" else
                "a fork of the component, confined by the monitor's own filter") in text, text
        monitors = proc.monitors(session_of=child.pid)
        assert len(monitors) == 1, monitors
        monitor = monitors[0]
        fields = proc.status(monitor)
        assert (fields["Seccomp"], fields["NoNewPrivs"], int(fields["CapEff"], 16), int(fields["CapPrm"], 16),
                int(fields["CapBnd"], 16)) == ("2", "1", 0, 0, 0), fields
        # Its descriptors: the filter's listener and the log, nothing of the component's (once
        # it has taken the listener and closed its channel: spawn returns as the listener is sent).
        expected = sorted(["anon_inode:seccomp notify", str(log)])
        deadline = time.monotonic() + 10
        while (links := sorted(os.readlink(f"/proc/{monitor}/fd/{fd}")
                               for fd in os.listdir(f"/proc/{monitor}/fd"))) != expected:
            assert time.monotonic() < deadline, links
            time.sleep(0.02)
        # The component holds neither the listener nor the monitor's socket any more.
        component = child.component_pid()
        held = [os.readlink(f"/proc/{component}/fd/{fd}") for fd in os.listdir(f"/proc/{component}/fd")]
        assert "anon_inode:seccomp notify" not in held and str(log) not in held, held
        inner = fields["NSpid"].split()[-1]        # the monitor as the component's pid namespace numbers it
        ours.sendall(inner.encode())
        ours.settimeout(20)
        results = json.loads(ours.recv(4096))
        assert results["kill"] == "EPERM", results          # Landlock's signal scope
        assert results["mem"] in ("EACCES", "EPERM", "ENOENT"), results
        assert results["environ"] in ("EACCES", "EPERM", "ENOENT"), results
        assert not results["fd"].startswith("listed"), results
        assert results["clone"] == "EPERM", results
        assert os.path.exists(f"/proc/{monitor}")
        # Signals to the component's process group (a terminal's Ctrl-C, a supervisor's TERM)
        # are the component's: the monitor stays until the filter has no process left.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(monitor, sig)
        time.sleep(0.2)
        assert proc.status(monitor)["State"][0] in "SR", proc.status(monitor)
        ours.sendall(b"x")
    finally:
        ours.close()
    assert child.wait() == 0
    lines = [line for line in log.read_text().splitlines() if "sandbox: refused" in line]
    clones = [line for line in lines if "refused clone(flags=0x10000011) -> EPERM" in line]
    assert len(clones) == 2, lines


def test_a_monitor_that_cannot_confine_itself_stops_the_start(base_sandbox, sandbox_vars, write_policy):
    import base64
    import dataclasses
    plan = launcher.prepare(load_policy(write_policy("")), sandbox_vars, denials=DenialLog(""))
    broken = dataclasses.replace(plan, denials={**plan.denials, "monitor_bpf": base64.b64encode(b"1234567").decode()})
    with pytest.raises(launcher.SpawnError) as caught:
        launcher.spawn(broken, target=lambda _control: 0)
    assert caught.value.step == "denial monitor"
    assert "could not confine itself: seccomp: malformed BPF program of 7 bytes" in str(caught.value)
    # The same plan with the real filter starts.
    child = launcher.spawn(plan, target=lambda _control: 0)
    assert child.wait() == 0


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_a_denial_log_planted_by_an_earlier_run_is_not_followed(base_sandbox, sandbox_vars, write_policy,
                                                                 tmp_path, planted):
    """The denial log is opened before Landlock (the monitor starts before it), by the
    component's launcher, at a path inside what the component may write (a node's
    <netdatadir>/debug.log): a confined run could have left a link there to a file outside its
    grants, or a FIFO that blocks the open. Neither is followed: the start fails, naming the
    step, and the file outside is neither created nor written."""
    outside = tmp_path / "outside" / "secret-target"
    outside.parent.mkdir()
    log = Path(sandbox_vars["datadir"]) / "debug.log"
    if planted == "link":
        log.symlink_to(outside)
    else:
        os.mkfifo(log)
    # No filesystem view: only the open itself stands between the link and the host's files
    # (in a view, a target outside the grants is not there to be reached at all).
    policy = write_policy("""
        [filesystem]
        write = ["${datadir}"]
    """, view=False)
    # A link is refused as the plan is made (it lies in a writable grant: the component could
    # have planted it), a FIFO when the launcher opens the log; either way, naming the step.
    with pytest.raises((launcher.SpawnError, EnforcementError)) as caught:
        plan = launcher.prepare(load_policy(policy), sandbox_vars, denials=DenialLog(str(log)))
        launcher.spawn(plan, target=lambda _control: 0)
    assert caught.value.step == "denial monitor", caught.value
    assert "denial log" in str(caught.value)
    assert not outside.exists()
    # Planted after the plan was made, the link is refused when the launcher opens the log.
    if planted == "link":
        log.unlink()
        plan = launcher.prepare(load_policy(policy), sandbox_vars, denials=DenialLog(str(log)))
        log.symlink_to(outside)
        with pytest.raises(launcher.SpawnError) as late:
            launcher.spawn(plan, target=lambda _control: 0)
        assert late.value.step == "denial monitor" and "denial log" in str(late.value)
        assert not outside.exists()


@pytest.mark.parametrize("abi", range(1, 8))
def test_the_monitors_landlock_table_is_the_launchers(abi: int) -> None:
    """The monitor's program imports nothing of the package: its copy of the rights must be
    landlock.py's, or it would grant by not handling a right the components handle."""
    from cleancoin.sandbox import denial_monitor, landlock
    assert denial_monitor.handled(abi) == (landlock.fs_rights(abi), landlock.net_rights(abi), landlock.scopes(abi))


def test_a_component_cannot_flood_the_denial_log_or_its_monitor(base_sandbox, sandbox_vars, write_policy,
                                                                monitor_kind):
    """Refusals are counted per kind: syscall, errno and the argument that decided. An
    attacker that varies the rest of that argument (clone's other flag bits) made every call a
    new kind, and every new kind was logged, and remembered by the monitor: 20,000 refused
    calls wrote 20,000 lines (a log too long to read, a disk filled, a monitor grown until it
    dies, after which refusals go unlogged). The monitor keeps a bounded number of kinds and a
    budget of lines per minute, and says how many it left out."""
    import ctypes

    from cleancoin.sandbox import launcher
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.policy_loader import load_policy
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    plan = launcher.prepare(load_policy(write_policy("")), sandbox_vars, denials=DenialLog(str(log)))
    calls = 20_000

    def flood(_control: int) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        refused = 0
        for i in range(calls):
            # CLONE_NEWUSER makes the filter refuse it (EPERM); the high bits make it new.
            flags = 0x10000000 | (i << 32)
            if libc.syscall(ctypes.c_long(56), ctypes.c_ulong(flags), 0, 0, 0, 0) == -1 and ctypes.get_errno() == 1:
                refused += 1
        return 0 if refused == calls else 1

    assert launcher.spawn(plan, target=flood).wait() == 0
    lines = log.read_text().splitlines()
    clone_lines = [line for line in lines if "refused clone(" in line]
    assert clone_lines and len(lines) <= 300, (len(lines), lines[:3])
    assert any("not logged" in line for line in lines), lines[-5:]


def test_a_monitor_whose_write_fails_counts_the_lost_lines_and_says_so_later(tmp_path):
    """A full disk (which the component can cause when it writes to the log's filesystem) made
    the monitor's os.write raise, and the monitor stopped: refusals were then answered ENOSYS
    and never logged again. LogWriter keeps going: the lines it could not write are counted
    and said in the next line that can be. Here the log's descriptor first refuses writes (a
    read-only one), then, at the same number, takes them."""
    from cleancoin.sandbox.denial_monitor import LogWriter, line
    path = tmp_path / "denials.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        writer = LogWriter(fd, "CleanCoin-node")
        writer.write(line("CleanCoin-node", "sandbox: refused first"))
        writer.write(line("CleanCoin-node", "sandbox: refused second"))
        assert writer.lost == 2 and path.read_bytes() == b""
        writable = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(writable, fd)
        os.close(writable)
        writer.write(line("CleanCoin-node", "sandbox: refused third"))
        assert writer.lost == 0
    finally:
        os.close(fd)
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    assert "2 lines of refusals could not be written to this log (Bad file descriptor)" in lines[0], lines
    assert lines[1].endswith("sandbox: refused third"), lines


# ----------------------------------------------------------------- started early (prelaunch)

def _prelaunched_monitor(before: set[int]) -> int:
    """The pid of the monitor that `denial_log.prelaunch` started: in this process group,
    running the compiled monitor with the channel as its only argument, new since `before`."""
    deadline = time.monotonic() + 10
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in before:
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
                if (os.getpgid(int(entry)) == os.getpgrp() and len(argv) == 2 and argv[0] == b"denial-monitor"
                        and not proc_state(int(entry)).startswith("Z")):
                    found.append(int(entry))
            except OSError:
                continue
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, "no prelaunched monitor found"
        time.sleep(0.01)


def proc_state(pid: int) -> str:
    return next(line.split(":", 1)[1].strip() for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("State:"))


def _fds(pid: int) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def _live_pids() -> set[int]:
    return {int(e) for e in os.listdir("/proc") if e.isdigit()}


def test_a_prelaunched_monitor_takes_its_log_only_with_its_configuration_and_confines_itself_first(
        base_sandbox, sandbox_vars, write_policy, proc):
    """CleanCoin-node starts its monitor's interpreter before its own imports and plan
    (denial_log.prelaunch) and configures it before the first sandbox step. What the monitor
    holds and the order in which it confines itself must be those of a monitor started at the
    "denial monitor" step: until it is configured it holds its channel only (none of the
    descriptors the process opened before or after it started), with no_new_privs and no
    capability, and it waits, unconfined but having taken nothing; the log comes with the
    configuration; it is confined (its filter loaded, not dumpable) before it answers, under
    its own resource limits, never the component's (until 12-07 it took those: a file size
    limit of 0 left it unable to write a line)."""
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    # The connect broker's file size limit: the component writes no file, its monitor a log.
    plan = launcher.prepare(load_policy(write_policy("[process.rlimits]\nfsize = 0\n")), sandbox_vars,
                            denials=DenialLog(str(log)))
    before = _live_pids()
    monitor = denial_log.prelaunch()
    try:
        pid = _prelaunched_monitor(before)
        # Waiting for its configuration: nothing but the channel, no privilege, no filter yet.
        deadline = time.monotonic() + 10
        while proc_state(pid)[0] != "S":
            assert time.monotonic() < deadline, proc_state(pid)
            time.sleep(0.01)
        links = _fds(pid)
        assert len(links) == 1 and links[0].startswith("socket:"), links
        fields = proc.status(pid)
        assert (fields["NoNewPrivs"], int(fields["CapEff"], 16), int(fields["CapPrm"], 16),
                int(fields["CapBnd"], 16), fields["Seccomp"]) == ("1", 0, 0, 0, "0"), fields
        assert not _readable(monitor.channel), "it answered before it had its configuration"
        # Started before the component's rlimits step, it has not inherited those limits...
        assert plan.rlimits and any(not _within(resource.prlimit(pid, number), soft, hard)
                                    for _name, number, soft, hard in plan.rlimits), plan.rlimits
        denial_log.configure(plan, monitor, denial_log.open_for(plan))
        reply = denial_log._reply(monitor.channel)  # noqa: SLF001
        assert reply.startswith(b"R"), reply
        # Confined before it answered; it now holds its channel and the log, nothing else.
        fields = proc.status(pid)
        assert (fields["Seccomp"], fields["NoNewPrivs"], int(fields["CapEff"], 16)) == ("2", "1", 0), fields
        assert Path(f"/proc/{pid}/comm").read_text().strip() == denial_monitor_name()
        links = _fds(pid)
        assert len(links) == 2 and links[0] == str(log) and links[1].startswith("socket:"), links
        # ...nor taken them with its configuration: its own limits only (the file size limit
        # is the component's, for the component's files, not for the log).
        for name, number, soft, hard in denial_monitor.OWN_RLIMITS:
            assert _within(resource.prlimit(pid, number), soft, hard), (name, resource.prlimit(pid, number))
        assert resource.prlimit(pid, resource.RLIMIT_FSIZE)[0] != 0, resource.prlimit(pid, resource.RLIMIT_FSIZE)
    finally:
        if monitor.out >= 0:
            os.close(monitor.out)
        denial_log.discard(monitor)
    # Hung up on, it ends.
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and not proc_state(pid).startswith("Z"):
        assert time.monotonic() < deadline, "the monitor did not end when its component hung up"
        time.sleep(0.01)


def _within(limits: tuple[int, int], soft: int | None, hard: int | None) -> bool:
    """Whether (soft, hard) of a process are at most the plan's (None: unlimited)."""
    def at_most(value: int, bound: int | None) -> bool:
        return bound is None or (value != resource.RLIM_INFINITY and value <= bound)
    return at_most(limits[0], soft) and at_most(limits[1], hard)


def _readable(sock: socket.socket) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def denial_monitor_name() -> str:
    from cleancoin.sandbox import denial_monitor
    return denial_monitor.NAME


def test_a_prelaunched_monitor_that_cannot_confine_itself_stops_the_start(base_sandbox, sandbox_vars,
                                                                         write_policy):
    """Fail closed, started early too: the seccomp step's wait raises, naming the step."""
    import base64
    import dataclasses
    plan = launcher.prepare(load_policy(write_policy("")), sandbox_vars, denials=DenialLog(""))
    broken = dataclasses.replace(plan, denials={**plan.denials, "monitor_bpf": base64.b64encode(b"1234567").decode()})
    monitor = denial_log.configure(broken, denial_log.prelaunch())
    with pytest.raises(EnforcementError) as caught:
        denial_log.start(broken, monitor)
    assert caught.value.step == "denial monitor"
    assert "could not confine itself: seccomp: malformed BPF program of 7 bytes" in str(caught.value)


def test_restrict_self_with_a_prelaunched_monitor_logs_refusals(base_sandbox, sandbox_vars, write_policy):
    """The whole path CleanCoin-node takes: prelaunch, then restrict_self(monitor=...); a
    refused call is answered with its errno and logged; the report says the monitor started
    before the steps; the process holds neither the channel nor the log afterwards."""
    from cleancoin.sandbox.self_restrict import restrict_self
    log = Path(sandbox_vars["datadir"]) / "denials.log"
    policy = write_policy("""
        [namespaces]
        pid = false

        [filesystem]
        write = ["${datadir}"]
    """)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            monitor = denial_log.prelaunch()
            report = restrict_self(policy, sandbox_vars, keep_fds=[write_end], denials=DenialLog(str(log)),
                                   monitor=monitor)
            libc = ctypes.CDLL(None, use_errno=True)
            refused = libc.syscall(56, syscalls.CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0) < 0
            # Not dumpable: /proc/self/fd is closed to it; what it holds, by fstat.
            held = []
            for fd in range(256):
                try:
                    st = os.fstat(fd)
                except OSError:
                    continue
                held.append([st.st_dev, st.st_ino, stat.S_ISSOCK(st.st_mode)])
            os.write(write_end, json.dumps({"refused": refused and ctypes.get_errno() == errno.EPERM,
                                            "report": report.to_text(), "held": held}).encode())
        except BaseException:  # noqa: BLE001 - shown by the parent
            import traceback
            os.write(write_end, json.dumps({"exception": traceback.format_exc()}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "exception" not in result, result.get("exception")
    assert result["refused"], result
    assert "denial monitor: started before the steps" in result["report"], result["report"]
    assert "its own program, confined" in result["report"], result["report"]
    logged = log.stat()
    assert [logged.st_dev, logged.st_ino, False] not in result["held"], result["held"]
    assert not any(sock for _dev, _ino, sock in result["held"]), result["held"]      # the channel is gone
    deadline = time.monotonic() + 10
    while "refused clone(flags=0x10000011) -> EPERM" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.02)
