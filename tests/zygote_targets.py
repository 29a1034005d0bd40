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
