"""components/gui/display.py: which display, and so which policy, the window gets. Real
sockets in a real runtime directory; the environment is a plain mapping."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.gui import display


@pytest.fixture
def runtime(datadir: Path) -> Iterator[Path]:
    """An XDG_RUNTIME_DIR with a listening Wayland socket `wayland-1` and a plain file `not-a-socket`."""
    path = datadir / "run"
    path.mkdir(mode=0o700)
    (path / "not-a-socket").write_text("")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path / "wayland-1"))
    listener.listen()
    yield path
    listener.close()


def test_wayland_is_preferred_when_its_socket_is_there(runtime: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "wayland-1", "DISPLAY": ":0"}
    chosen = display.choose("auto", env)
    assert chosen == display.Display("wayland", "wayland", str(runtime / "wayland-1"))
    assert chosen.policy == "gui-wayland"
    display.apply(chosen, env)
    assert "DISPLAY" not in env and env["QT_QPA_PLATFORM"] == "wayland"


def test_x11_without_a_wayland_socket_or_when_asked(runtime: Path) -> None:
    no_socket = {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "not-a-socket", "DISPLAY": ":0"}
    assert display.choose("auto", no_socket).policy == "gui-x11"
    asked = {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "wayland-1", "DISPLAY": ":0", "XAUTHORITY": "/x"}
    chosen = display.choose("x11", asked)
    assert chosen.kind == "x11"
    display.apply(chosen, asked)
    assert "WAYLAND_DISPLAY" not in asked and asked["DISPLAY"] == ":0" and asked["QT_QPA_PLATFORM"] == "xcb"


def test_qt_platform_variable_is_the_operators_choice(runtime: Path) -> None:
    base = {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "wayland-1", "DISPLAY": ":0"}
    assert display.choose("auto", {**base, "QT_QPA_PLATFORM": "offscreen"}).policy == "gui"
    assert display.choose("auto", {**base, "QT_QPA_PLATFORM": "xcb"}).policy == "gui-x11"
    assert display.choose("auto", {**base, "QT_QPA_PLATFORM": "wayland;xcb"}).policy == "gui-wayland"
    gone = {**base, "WAYLAND_DISPLAY": "wayland-9"}
    assert display.choose("auto", {**gone, "QT_QPA_PLATFORM": "wayland;xcb"}).policy == "gui-x11"
    with pytest.raises(display.DisplayError, match="asks for Wayland"):
        display.choose("auto", {**gone, "QT_QPA_PLATFORM": "wayland"})
    with pytest.raises(display.DisplayError, match="runs on wayland, xcb"):
        display.choose("auto", {**base, "QT_QPA_PLATFORM": "vnc"})


def test_an_explicit_choice_fails_closed(runtime: Path) -> None:
    with pytest.raises(display.DisplayError, match="no Wayland socket at .*/not-a-socket"):
        display.choose("wayland", {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "not-a-socket", "DISPLAY": ":0"})
    with pytest.raises(display.DisplayError, match="XDG_RUNTIME_DIR is not set"):
        display.choose("wayland", {"DISPLAY": ":0"})
    with pytest.raises(display.DisplayError, match="DISPLAY is not set"):
        display.choose("x11", {"XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "wayland-1"})


def test_an_absolute_wayland_display_is_a_path(runtime: Path) -> None:
    env = {"WAYLAND_DISPLAY": str(runtime / "wayland-1")}
    assert display.choose("wayland", env).wayland_socket == str(runtime / "wayland-1")
    assert os.path.isabs(display.wayland_socket({"XDG_RUNTIME_DIR": "/run/user/1"}))
