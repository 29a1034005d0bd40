"""Targets for the zygote tests: a zygote imports its components by name in a fresh
interpreter, so they live in a module (the tests put this directory on its PYTHONPATH)."""

from __future__ import annotations

import os
import socket
import sys


def echo(fd: int) -> int:
    """Answer what arrives on the IPC socket until its end."""
    with socket.socket(fileno=fd) as sock:
        while data := sock.recv(65536):
            sock.sendall(data)
    return 0


def shout(fd: int) -> int:
    """Write a line with an escape sequence to stdout and stderr, then echo."""
    print("component says \x1b]0;title\x07 hello", flush=True)
    print("component complains", file=sys.stderr, flush=True)
    return echo(fd)


def environment(fd: int) -> int:
    """Send this process's environment and argv-free identity back."""
    import json
    with socket.socket(fileno=fd) as sock:
        sock.sendall(json.dumps({"env": dict(os.environ), "pid": os.getpid()}).encode())
    return 0


def preload_wave() -> None:
    """A preload: imports a module nothing else here imports."""
    import wave  # noqa: F401


def preload_wave_and_say_so() -> None:
    """A preload that says on stdout (the parent's) that it ran."""
    import wave  # noqa: F401
    print("preloaded wave", flush=True)


def has_wave(fd: int) -> int:
    """Send whether the `wave` module was already imported when this child started."""
    with socket.socket(fileno=fd) as sock:
        sock.sendall(b"yes" if "wave" in sys.modules else b"no")
    return 0


def endless_line(fd: int) -> int:
    """What a compromised component could write: 32 MiB on stdout without a newline (then
    one, and a short line), then echo."""
    chunk = b"A" * 65536
    for _ in range(512):
        os.write(1, chunk)
    os.write(1, b"\nshort line\n")
    return echo(fd)


def collector(fd: int) -> int:
    """Send whether the garbage collector is on in this child and how many objects it holds
    frozen (the zygote freezes what its preloads made before it forks)."""
    import gc
    import json
    with socket.socket(fileno=fd) as sock:
        sock.sendall(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}).encode())
    return 0


def killed_by_filter(fd: int) -> int:
    """Make a syscall the strict policy's filter kills the process for (symlink)."""
    with socket.socket(fileno=fd):
        os.symlink("anywhere", "/tmp/link")
    return 0


def arguments(fd: int, **named: str) -> int:
    """Send back the arguments the zygote called this component with."""
    import json
    with socket.socket(fileno=fd) as sock:
        sock.sendall(json.dumps(named).encode())
    return 0


def detached_report(fd: int, *arguments: str) -> int:
    """A `Detached` process of the zygote: send back what it was started with and holds (its
    parent, descriptors, stdio, signal dispositions, environment), then wait for the end of
    its socket."""
    import json
    import signal
    with socket.socket(fileno=fd) as sock:
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                fds[name] = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                pass            # the directory's own descriptor, closed by now
        sock.send(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "fd": fd, "fds": fds,
                              "arguments": list(arguments), "sigterm": int(signal.getsignal(signal.SIGTERM)),
                              "env": sorted(os.environ)}).encode())
        sock.recv(16)
    return 0


def restarts_under_an_init_that_does_not_reap(policy: str, variables: str, restarts: int) -> dict:
    """Run in a process of its own that is what PID 1 is in a container without an init: the
    subreaper of everything below it, which never reaps a process it did not start. There, a
    zygote whose component logs refusals is made to start and kill the component `restarts`
    times (what a compromised node may ask of it); then each denial monitor's state is read
    ("Z": a zombie of ours; "": gone), with the exit events, and one more start that ends by
    itself with status 0."""
    import json
    import select
    import time

    from cleancoin.sandbox import syscalls
    from cleancoin.sandbox.denial_log import DenialLog
    from cleancoin.sandbox.zygote import ComponentSpec, Limits, Zygote

    def state(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return ""

    def event(z: Zygote) -> list:
        assert select.select([z.events], [], [], 20)[0], "no exit event"
        e = z.read_event()
        return [e.pid, e.returncode] if e else []

    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    z = Zygote.start({"c": ComponentSpec("c", "zygote_targets:echo", policy, json.loads(variables),
                                         denials=DenialLog(""))}, limits=Limits(per_minute=60))
    monitors, spawned, events = [], [], []
    try:
        for _ in range(restarts):
            ours, theirs = socket.socketpair()
            started = z.spawn("c", theirs.fileno())
            theirs.close()
            monitors += [h["pid"] for h in started.report.helpers if h["role"] == "denial monitor" and h["outside"]]
            spawned.append(started.pid)
            z.kill(started.pid)
            events.append(event(z))
            ours.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(state(pid) for pid in monitors):
            time.sleep(0.05)
        ours, theirs = socket.socketpair()
        last = z.spawn("c", theirs.fileno())
        theirs.close()
        ours.close()            # echo ends at end of file: status 0
        spawned.append(last.pid)
        events.append(event(z))
        return {"monitors": {pid: state(pid) for pid in monitors}, "spawned": spawned, "events": events,
                "zygote": z.pid, "us": os.getpid()}
    finally:
        z.stop()


def trace_a_detached_process() -> dict:
    """Run in a process of its own that is what a compromised node is to its zygote's detached
    processes since the zygote became their subreaper: an ancestor of theirs, of the same uid,
    without a capability (a sandboxed process has none). It starts a zygote with one detached
    process, then tries to ptrace-attach to it (what Yama's ptrace_scope 1 allows towards a
    descendant) and to a dumpable child of its own (the control); and reads the detached
    process's parent."""
    import ctypes
    import json
    import signal

    from cleancoin.sandbox import capabilities
    from cleancoin.sandbox.zygote import Detached, Zygote

    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_ATTACH, PTRACE_DETACH = 16, 17

    def attach(pid: int) -> str:
        if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
            os.waitpid(pid, 0)      # stopped by the attach
            libc.ptrace(PTRACE_DETACH, pid, None, None)
            return "attached"
        return os.strerror(ctypes.get_errno())

    capabilities.drop(())
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    z = Zygote.launch()
    control = os.fork()
    if control == 0:
        signal.pause()
        os._exit(0)
    try:
        z.configure({}, detached=[Detached("helper", "zygote_targets:detached_report", (), theirs.fileno())])
        theirs.close()
        ours.settimeout(20)
        seen = json.loads(ours.recv(1 << 16))
        with open(f"/proc/{seen['pid']}/status") as handle:
            ppid = int(next(line.split()[1] for line in handle if line.startswith("PPid:")))
        return {"detached": attach(seen["pid"]), "control": attach(control), "ppid": ppid,
                "zygote": z.pid, "us": os.getpid()}
    finally:
        os.kill(control, signal.SIGKILL)
        os.waitpid(control, 0)
        z.stop()
        ours.close()


def orphan_maker(fd: int) -> int:
    """A component that double-forks a process which ends at once (an orphan for whoever
    reaps below its subreaper), sends its pid, then echoes."""
    from cleancoin.sandbox.helpers import detached
    pid = detached(lambda: os._exit(0))
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.sendall(f"{pid}\n".encode())
    return echo(fd)


def orphan_under_an_init_that_does_not_reap() -> dict:
    """As `restarts_under_an_init_that_does_not_reap`, for an orphan of a component without a
    pid namespace (not sandboxed here): it goes to the zygote, its nearest subreaper. Returns
    the orphan's state a while later and the component's exit event."""
    import select
    import time

    from cleancoin.sandbox import syscalls
    from cleancoin.sandbox.zygote import ComponentSpec, Zygote

    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    z = Zygote.start({"c": ComponentSpec("c", "zygote_targets:orphan_maker", None)})
    try:
        ours, theirs = socket.socketpair()
        started = z.spawn("c", theirs.fileno())
        theirs.close()
        ours.settimeout(20)
        orphan = int(ours.recv(64))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _state(orphan):
            time.sleep(0.05)
        state = _state(orphan)
        ours.close()            # echo ends at end of file: status 0
        assert select.select([z.events], [], [], 20)[0], "no exit event"
        e = z.read_event()
        return {"orphan": orphan, "state": state, "event": [e.pid, e.returncode] if e else [],
                "spawned": started.pid}
    finally:
        z.stop()


def _state(pid: int) -> str:
    """The process's state letter ("Z": a zombie), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


if __name__ == "__main__":
    import json
    if sys.argv[1] == "trace":
        print(json.dumps(trace_a_detached_process()))
    elif sys.argv[1] == "orphan":
        print(json.dumps(orphan_under_an_init_that_does_not_reap()))
    else:
        print(json.dumps(restarts_under_an_init_that_does_not_reap(sys.argv[1], sys.argv[2], int(sys.argv[3]))))


def preload_that_fails() -> None:
    """A preload that raises: what a broken installation's wallet preload would do."""
    raise RuntimeError("the preload is broken")
