"""Real display servers for the GUI tests: Xvfb, weston's headless backend, and an X11
client (ctypes over libX11) that records the keys it is sent, as the operator's terminal
would receive them. Each is skipped with the reason where it is not installed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The background of the victim's window: what XGetImage of it reads back.
VICTIM_COLOUR = 0x12C0DE

_KEY_PRESS, _MAP_NOTIFY = 2, 19
_KEY_PRESS_MASK, _STRUCTURE_NOTIFY_MASK = 1 << 0, 1 << 17


@contextmanager
def xvfb() -> Iterator[int]:
    """An Xvfb server (no TCP); yields its display number."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen([binary, "-displayfd", str(write_end), "-screen", "0", "1600x1200x24",
                               "-nolisten", "tcp"], pass_fds=[write_end],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as said:
            yield int(said.readline())
    finally:
        server.terminate()          # not SIGKILL: Xvfb removes its socket and lock file
        server.wait(10)


@dataclass(frozen=True)
class Weston:
    """A running weston: its runtime directory and socket name."""

    runtime_dir: Path
    socket: str
    log: Path

    @property
    def path(self) -> Path:
        return self.runtime_dir / self.socket


@contextmanager
def weston(base: Path) -> Iterator[Weston]:
    """weston with its headless backend (no GPU, no seat), in a runtime directory of its own."""
    binary = shutil.which("weston")
    if binary is None:
        pytest.skip("weston is not installed (apt-get install weston; make setup installs it as root)")
    runtime = base / "run"
    runtime.mkdir(mode=0o700)
    log = base / "weston.log"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("DISPLAY", None)
    with open(log, "wb") as out:
        server = subprocess.Popen([binary, "--backend=headless-backend.so", "--socket=wl-test", "--idle-time=0",
                                   "--no-config"], env=env, stdout=out, stderr=subprocess.STDOUT)
    found = Weston(runtime, "wl-test", log)
    try:
        deadline = time.monotonic() + 15
        while not found.path.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip("weston cannot run here: " + log.read_text()[-800:])
            time.sleep(0.05)
        yield found
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class _XKeyEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("root", ctypes.c_ulong),
                ("subwindow", ctypes.c_ulong), ("time", ctypes.c_ulong), ("x", ctypes.c_int),
                ("y", ctypes.c_int), ("x_root", ctypes.c_int), ("y_root", ctypes.c_int),
                ("state", ctypes.c_uint), ("keycode", ctypes.c_uint), ("same_screen", ctypes.c_int)]


class _XEvent(ctypes.Union):
    _fields_ = [("type", ctypes.c_int), ("key", _XKeyEvent), ("pad", ctypes.c_long * 24)]


class X11Victim:
    """Another X client on the same display (as the operator's terminal): a mapped, focused
    window of one colour that records every key press it receives."""

    def __init__(self, display: int) -> None:
        name = ctypes.util.find_library("X11")
        if name is None:
            pytest.skip("libX11 is not installed")
        x = ctypes.CDLL(name)
        x.XOpenDisplay.restype = ctypes.c_void_p
        x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x.XDefaultRootWindow.restype = ctypes.c_ulong
        x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x.XCreateSimpleWindow.restype = ctypes.c_ulong
        x.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_ulong]
        for fn in ("XSelectInput",):
            getattr(x, fn).argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_long]
        x.XMapRaised.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        x.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
        x.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        x.XPending.argtypes = [ctypes.c_void_p]
        x.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.POINTER(_XEvent)]
        x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self._x = x
        self._dpy = x.XOpenDisplay(f":{display}".encode())
        assert self._dpy, f"cannot open display :{display}"
        root = x.XDefaultRootWindow(self._dpy)
        self.window = x.XCreateSimpleWindow(self._dpy, root, 1300, 1000, 200, 100, 0, 0, VICTIM_COLOUR)  # clear of the GUI
        x.XSelectInput(self._dpy, self.window, _KEY_PRESS_MASK | _STRUCTURE_NOTIFY_MASK)
        x.XMapRaised(self._dpy, self.window)
        self._wait_for(_MAP_NOTIFY, 5)
        x.XSetInputFocus(self._dpy, self.window, 1, 0)      # RevertToPointerRoot, CurrentTime
        x.XSync(self._dpy, 0)
        self.keycodes: list[int] = []

    def _wait_for(self, kind: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._mapped:
            if time.monotonic() > deadline:
                raise AssertionError("the victim window was not mapped")
            self.poll()
            time.sleep(0.02)

    _mapped = False

    def poll(self) -> bool:
        """Read what has arrived; True when something did."""
        got = False
        event = _XEvent()
        while self._x.XPending(self._dpy):
            self._x.XNextEvent(self._dpy, ctypes.byref(event))
            got = True
            if event.type == _MAP_NOTIFY:
                self._mapped = True
            elif event.type == _KEY_PRESS:
                self.keycodes.append(event.key.keycode)
        return got

    def close(self) -> None:
        self._x.XCloseDisplay(self._dpy)
