"""Which display server the window talks to, and so which policy confines it.

X11 does not isolate its clients from each other: any client that reaches the X server can
read other windows and type into them (XTEST, XSendEvent, XGetImage), the operator's
terminal included. A Wayland compositor gives an ordinary client no such protocol. So the
window prefers Wayland when a Wayland socket is there (as flatpak's `fallback-x11` does),
and is then confined by `gui-wayland.toml`, which grants that one socket and nothing of X11:
on a Wayland desktop XWayland's X11 socket is still there, and a window that kept it could
still type into every X11 terminal. X11 is used only when there is no Wayland socket or
when the operator asks for it (-guiplatform=x11), under `gui-x11.toml`.

Chosen before the window confines itself and before Qt starts; the environment Qt reads
(QT_QPA_PLATFORM, DISPLAY, WAYLAND_DISPLAY) is set to agree with the choice.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

#: -guiplatform's values.
CHOICES = ("auto", "wayland", "x11")

#: Qt platforms that draw into memory and need no display server (tests, screenshots).
_NO_DISPLAY = ("offscreen", "minimal")


class DisplayError(Exception):
    """The display the operator asked for cannot be used; the message says why."""


@dataclass(frozen=True)
class Display:
    """The display server the window will use."""

    kind: str                    # "wayland", "x11" or "none" (an offscreen platform)
    qt_platform: str             # what QT_QPA_PLATFORM is set to
    wayland_socket: str = ""     # the compositor's socket (kind "wayland")

    @property
    def policy(self) -> str:
        """The shipped policy that confines a window on this display."""
        return {"wayland": "gui-wayland", "x11": "gui-x11"}.get(self.kind, "gui")


def wayland_socket(environ: Mapping[str, str]) -> str:
    """Where libwayland-client would connect: $WAYLAND_DISPLAY (an absolute path, or a name in
    $XDG_RUNTIME_DIR; `wayland-0` when unset). "" when that cannot be worked out."""
    name = environ.get("WAYLAND_DISPLAY") or "wayland-0"
    if os.path.isabs(name):
        return name
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    return os.path.join(runtime, name) if runtime else ""


def _is_socket(path: str) -> bool:
    try:
        return path != "" and stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def choose(option: str, environ: Mapping[str, str]) -> Display:
    """The display for `-guiplatform=option` in `environ`. Raises DisplayError when the
    operator's explicit choice cannot be had (fail closed: never X11 instead of Wayland)."""
    if option not in CHOICES:
        raise DisplayError(f"-guiplatform={option}: expected one of {', '.join(CHOICES)}")
    socket = wayland_socket(environ)
    if option == "auto":
        # QT_QPA_PLATFORM, when set, is the operator's choice through Qt's own variable
        # ("wayland;xcb" is Qt's list of fallbacks, tried in order).
        wanted = [p.strip() for p in environ.get("QT_QPA_PLATFORM", "").split(";") if p.strip()]
        for platform in wanted:
            if platform.startswith("wayland") and _is_socket(socket):
                return Display("wayland", "wayland", socket)
            if platform == "xcb":
                return Display("x11", "xcb")
            if platform in _NO_DISPLAY:
                return Display("none", platform)
        if wanted:
            if any(p.startswith("wayland") for p in wanted):
                raise DisplayError(f"QT_QPA_PLATFORM={environ['QT_QPA_PLATFORM']} asks for Wayland and there "
                                   f"is no Wayland socket at {socket or '$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY'}")
            raise DisplayError(f"QT_QPA_PLATFORM={environ['QT_QPA_PLATFORM']}: CleanCoin-gui's window runs on "
                               f"wayland, xcb, offscreen or minimal")
        if _is_socket(socket):
            return Display("wayland", "wayland", socket)
        return Display("x11", "xcb")
    if option == "wayland":
        if not _is_socket(socket):
            raise DisplayError(f"-guiplatform=wayland: no Wayland socket at "
                               f"{socket or '$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY ($XDG_RUNTIME_DIR is not set)'}")
        return Display("wayland", "wayland", socket)
    if not environ.get("DISPLAY"):
        raise DisplayError("-guiplatform=x11: DISPLAY is not set")
    return Display("x11", "xcb")


def apply(display: Display, environ: MutableMapping[str, str]) -> None:
    """Make Qt use `display` and nothing else: on Wayland the X11 variables go (Qt and every
    library it loads then have no X server to find), on X11 the Wayland ones."""
    environ["QT_QPA_PLATFORM"] = display.qt_platform
    if display.kind != "x11":
        for name in ("DISPLAY", "XAUTHORITY"):
            environ.pop(name, None)
    if display.kind != "wayland":
        for name in ("WAYLAND_DISPLAY", "WAYLAND_SOCKET"):
            environ.pop(name, None)
    else:
        # A socket handed down as a descriptor is not one the window keeps (keep_fds).
        environ.pop("WAYLAND_SOCKET", None)
