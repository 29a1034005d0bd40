"""A compromised CleanCoin-gui window against the operator's other windows, on real display
servers (Xvfb, weston headless), from inside the real confined window process (the harness
of test_gui_attacks.py, attack_site/sitecustomize.py, runs the code below once the window
is up).

On X11 (-guiplatform=x11, gui-x11.toml) the attack goes through and the test says so: X11
has no isolation between clients, so the confined window types into another client's
window through XTEST and reads its pixels with XGetImage. This is the hole docs/gui.md
names; before 12-06 every CleanCoin-gui on a display had it, on a Wayland desktop too
(gui.toml granted /tmp/.X11-unix whatever the display).

On Wayland (the default where a Wayland socket exists, gui-wayland.toml), with the same
Xvfb running and DISPLAY set in the environment the window starts with (as XWayland on a
Wayland desktop): X11 is out of reach by path, abstract socket and TCP; the window's own
connection to the compositor shows no input-injection or screen-capture global, and
weston refuses a bind of its privileged globals (screenshooter, desktop shell) with a
protocol error. What this proves is weston's protocol set (other compositors differ:
docs/gui.md, "Display servers"), and that the window cannot fall back to X11.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port
from .displays import VICTIM_COLOUR, X11Victim, weston, xvfb

BIN = Path(sys.executable).parent
HARNESS = Path(__file__).parent / "attack_site" / "sitecustomize.py"

ATTACK = r'''
import ctypes, errno, os, socket

report("display-variable-kept", bool(os.environ.get("DISPLAY")), os.environ.get("DISPLAY", "unset"))
n = ctx["display"]
for name, family, address in (("x11-path-socket", socket.AF_UNIX, f"/tmp/.X11-unix/X{n}"),
                              ("x11-abstract-socket", socket.AF_UNIX, f"\0/tmp/.X11-unix/X{n}"),
                              ("x11-tcp", socket.AF_INET, ("127.0.0.1", 6000 + n))):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(2)
            s.connect(address)
            report(name, True, "connected")
        finally:
            s.close()
    except OSError as exc:
        report(name, False, exc.strerror or str(exc))

x = ctypes.CDLL("libX11.so.6")
x.XOpenDisplay.restype = ctypes.c_void_p
x.XOpenDisplay.argtypes = [ctypes.c_char_p]
dpy = x.XOpenDisplay(f":{n}".encode())
report("x11-open-display", bool(dpy), "opened" if dpy else "XOpenDisplay failed")
if dpy:
    xtst = ctypes.CDLL("libXtst.so.6")
    x.XStringToKeysym.restype = ctypes.c_ulong
    x.XStringToKeysym.argtypes = [ctypes.c_char_p]
    x.XKeysymToKeycode.restype = ctypes.c_ubyte
    x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    x.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    sent = []
    for letter in ctx["keys"]:
        code = x.XKeysymToKeycode(dpy, x.XStringToKeysym(letter.encode()))
        ok = xtst.XTestFakeKeyEvent(dpy, code, 1, 0) and xtst.XTestFakeKeyEvent(dpy, code, 0, 0)
        if ok:
            sent.append(code)
    x.XSync(dpy, 0)
    report("x11-inject-keys", bool(sent), " ".join(map(str, sent)))
    x.XGetImage.restype = ctypes.c_void_p
    x.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                            ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
    x.XGetPixel.restype = ctypes.c_ulong
    x.XGetPixel.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    image = x.XGetImage(dpy, ctx["victim_window"], 10, 10, 1, 1, 0xFFFFFFFF, 2)     # ZPixmap
    pixel = x.XGetPixel(image, 0, 0) if image else None
    report("x11-read-window", pixel is not None, "no image" if pixel is None else hex(pixel))

if ctx["wayland"]:
    from PySide6.QtWidgets import QApplication
    shown = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    picture = shown[0].grab() if shown else None
    # The allowed side: the window is up on the compositor, and renders.
    report("window-on-wayland", QApplication.platformName() == "wayland" and picture is not None
           and picture.width() > 100, f"{QApplication.platformName()}, {len(shown)} window(s)")

    wl = ctypes.CDLL("libwayland-client.so.0")
    wl.wl_display_connect.restype = ctypes.c_void_p
    wl.wl_display_connect.argtypes = [ctypes.c_char_p]
    wl.wl_display_roundtrip.argtypes = [ctypes.c_void_p]
    wl.wl_display_get_error.argtypes = [ctypes.c_void_p]
    wl.wl_display_disconnect.argtypes = [ctypes.c_void_p]
    wl.wl_proxy_marshal_constructor.restype = ctypes.c_void_p
    wl.wl_proxy_marshal_constructor_versioned.restype = ctypes.c_void_p
    wl.wl_proxy_add_listener.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    registry_interface = ctypes.addressof(ctypes.c_char.in_dll(wl, "wl_registry_interface"))
    GLOBAL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint32)
    REMOVE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)

    class Interface(ctypes.Structure):      # struct wl_interface, no requests or events needed
        _fields_ = [("name", ctypes.c_char_p), ("version", ctypes.c_int), ("method_count", ctypes.c_int),
                    ("methods", ctypes.c_void_p), ("event_count", ctypes.c_int), ("events", ctypes.c_void_p)]

    def connect_and_list():
        display = wl.wl_display_connect(None)
        if not display:
            return None, None, {}
        found = {}
        on_global = GLOBAL(lambda data, reg, name, iface, version: found.__setitem__(iface.decode(), (name, version)))
        on_remove = REMOVE(lambda data, reg, name: None)
        listener = (ctypes.c_void_p * 2)(ctypes.cast(on_global, ctypes.c_void_p), ctypes.cast(on_remove, ctypes.c_void_p))
        registry = wl.wl_proxy_marshal_constructor(ctypes.c_void_p(display), ctypes.c_uint32(1),   # get_registry
                                                   ctypes.c_void_p(registry_interface), None)
        wl.wl_proxy_add_listener(registry, listener, None)
        wl.wl_display_roundtrip(display)
        keep.extend([on_global, on_remove, listener])
        return display, registry, found

    keep = []
    display, registry, found = connect_and_list()
    report("wayland-connect", display is not None, f"{len(found)} globals: " + " ".join(sorted(found)))
    dangerous = sorted(set(found) & set(ctx["injection_globals"]))
    report("wayland-input-or-capture-global", bool(dangerous), " ".join(dangerous) or "none offered")
    if display:
        wl.wl_display_disconnect(display)
    for name in ("weston_screenshooter", "weston_desktop_shell"):
        display, registry, found = connect_and_list()
        if name not in found:
            report("bind-" + name, False, "not offered")
            continue
        iface = Interface(name.encode(), 1, 0, None, 0, None)
        keep.append(iface)
        wl.wl_proxy_marshal_constructor_versioned(
            ctypes.c_void_p(registry), ctypes.c_uint32(0), ctypes.byref(iface), ctypes.c_uint32(1),   # bind
            ctypes.c_uint32(found[name][0]), ctypes.c_char_p(name.encode()), ctypes.c_uint32(1), None)
        answer = wl.wl_display_roundtrip(display)
        error = wl.wl_display_get_error(display)
        report("bind-" + name, answer >= 0 and error == 0,
               f"protocol error from the compositor: {os.strerror(error)}" if error else "bound")
        wl.wl_display_disconnect(display)
'''

#: Globals that would let a client type into, point at, or read other clients (wlroots',
#: KDE's, the input-method and capture protocols). An ordinary client on weston gets none.
INJECTION_GLOBALS = ["zwp_virtual_keyboard_manager_v1", "zwlr_virtual_pointer_manager_v1",
                     "org_kde_kwin_fake_input", "zwp_input_method_manager_v2", "zwp_input_method_v1",
                     "zwlr_screencopy_manager_v1", "ext_image_copy_capture_manager_v1",
                     "ext_output_image_capture_source_manager_v1", "zwlr_export_dmabuf_manager_v1",
                     "zwlr_data_control_manager_v1", "ext_data_control_manager_v1",
                     "zwlr_foreign_toplevel_manager_v1", "weston_debug_v1"]
KEYS = "pwn"


def _log(datadir: Path) -> str:
    path = datadir / "config" / "CleanCoin" / "CleanCoin-gui-regtest.log"
    return path.read_text() if path.exists() else ""


def _attacked_gui(base: Path, env: dict[str, str], display: int, victim_window: int, wayland: bool,
                  *extra: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The attack's results, and what the window wrote on its standard output and error."""
    datadir = base / "data"
    datadir.mkdir(parents=True)
    site = base / "site"
    site.mkdir()
    shutil.copy(HARNESS, site / "sitecustomize.py")
    config_home = base / "config"
    results = config_home / "CleanCoin" / "window" / "attack_results.json"
    (site / "attack.json").write_text(json.dumps({
        "source": ATTACK, "results": str(results),
        "vars": {"display": display, "victim_window": victim_window, "keys": KEYS, "wayland": wayland,
                 "injection_globals": INJECTION_GLOBALS}}))
    full_env = {**env, "PYTHONPATH": str(site), "XDG_CONFIG_HOME": str(config_home)}
    full_env.pop("QT_QPA_PLATFORM", None)
    gui = subprocess.Popen([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", "-noipcconnect",
                            "-disablewallet", f"-port={free_port()}", f"-rpcport={free_port()}", *extra],
                           env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = json.loads(results.read_text()) if results.exists() else {}
            if "_done" in found:
                break
            if gui.poll() is not None:
                raise AssertionError("the GUI ended: " + gui.communicate()[0].decode()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError("no attack results within 60 s")
            time.sleep(0.1)
        assert "_error" not in found, found["_error"]["detail"]
        assert "confined" in (config_home / "CleanCoin" / "CleanCoin-gui-regtest.log").read_text()
        gui.send_signal(signal.SIGTERM)                  # as closing the window
        output = gui.communicate(timeout=60)[0].decode(errors="replace")
        assert gui.returncode == 0, output[-2000:]
        return {k: v for k, v in found.items() if not k.startswith("_")}, output
    finally:
        if gui.poll() is None:
            gui.kill()
            gui.wait()
        if gui.stdout is not None:
            gui.stdout.close()


def test_a_confined_window_types_into_other_x11_clients_and_not_on_wayland(datadir: Path) -> None:
    import ctypes.util
    if ctypes.util.find_library("Xtst") is None:
        pytest.skip("libXtst is not installed (apt-get install libxtst6)")
    with xvfb() as display, weston(datadir) as compositor:
        victim = X11Victim(display)
        try:
            desktop = {**os.environ, "DISPLAY": f":{display}", "XDG_RUNTIME_DIR": str(compositor.runtime_dir),
                       "WAYLAND_DISPLAY": compositor.socket}

            # X11, chosen by the operator: the hole, shown (gui-x11.toml grants the display).
            on_x11, _ = _attacked_gui(datadir / "x11", desktop, display, victim.window, False, "-guiplatform=x11")
            assert on_x11["x11-path-socket"]["escaped"], on_x11
            assert on_x11["x11-inject-keys"]["escaped"], on_x11
            deadline = time.monotonic() + 5
            while len(victim.keycodes) < len(KEYS) and time.monotonic() < deadline:
                victim.poll()
                time.sleep(0.02)
            assert victim.keycodes == [int(c) for c in on_x11["x11-inject-keys"]["detail"].split()], \
                "the victim did not receive the keys the confined window typed"
            assert on_x11["x11-read-window"]["detail"] == hex(VICTIM_COLOUR), on_x11["x11-read-window"]

            # Wayland, the default where its socket exists: the same Xvfb and DISPLAY, out of reach.
            victim.keycodes.clear()
            on_wayland, said = _attacked_gui(datadir / "wayland", desktop, display, victim.window, True)
            assert on_wayland["window-on-wayland"]["escaped"], on_wayland["window-on-wayland"]
            assert on_wayland["wayland-connect"]["escaped"], on_wayland["wayland-connect"]
            refused = {name: r["detail"] for name, r in on_wayland.items()
                       if name not in ("window-on-wayland", "wayland-connect") and r["escaped"]}
            assert refused == {}, refused
            assert on_wayland["display-variable-kept"]["detail"] == "unset"
            assert on_wayland["x11-path-socket"]["detail"] == "No such file or directory"   # not in the view
            # Abstract sockets live in a network namespace: the window's own (empty) one has
            # none of the host's; Landlock's scope would refuse it as well (EPERM).
            assert on_wayland["x11-abstract-socket"]["detail"] in ("Connection refused", "Operation not permitted")
            assert on_wayland["x11-tcp"]["detail"] == "Address family not supported by protocol"
            assert on_wayland["wayland-input-or-capture-global"]["detail"] == "none offered"
            for name in ("bind-weston_screenshooter", "bind-weston_desktop_shell"):
                assert on_wayland[name]["detail"].startswith("protocol error from the compositor"), on_wayland[name]
            # The compositor's own words, printed by libwayland in the window's standard error.
            assert "screenshooter failed: permission denied" in said, said[-2000:]
            assert "permission to bind desktop_shell denied" in said, said[-2000:]
            time.sleep(0.3)
            victim.poll()
            assert victim.keycodes == []
        finally:
            victim.close()


def test_wayland_asked_for_and_absent_stops_the_start(datadir: Path) -> None:
    """-guiplatform=wayland without a compositor: a clear error, no X11 instead, no node."""
    runtime = datadir / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "WAYLAND_DISPLAY": "wayland-9", "DISPLAY": ":0",
           "XDG_CONFIG_HOME": str(datadir / "config")}
    env.pop("QT_QPA_PLATFORM", None)
    gui = subprocess.run([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", "-noipcconnect",
                          "-guiplatform=wayland", f"-port={free_port()}", f"-rpcport={free_port()}"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert gui.returncode == 1, gui.stdout + gui.stderr
    assert f"-guiplatform=wayland: no Wayland socket at {runtime}/wayland-9" in gui.stderr, gui.stderr
    assert not (datadir / "regtest" / "debug.log").exists(), "a node was started for nothing"


def test_qt_asked_for_wayland_and_absent_stops_the_start(datadir: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(datadir), "WAYLAND_DISPLAY": "wayland-9", "DISPLAY": ":0",
           "QT_QPA_PLATFORM": "wayland", "XDG_CONFIG_HOME": str(datadir / "config")}
    gui = subprocess.run([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", "-noipcconnect"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert gui.returncode == 1 and "asks for Wayland and there is no Wayland socket" in gui.stderr, gui.stderr


@pytest.mark.parametrize("option", ["bogus", "X11"])
def test_an_unknown_platform_is_refused(datadir: Path, option: str) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(datadir / "config")}
    gui = subprocess.run([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", f"-guiplatform={option}"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert gui.returncode == 1 and f"-guiplatform={option}: expected one of auto, wayland, x11" in gui.stderr, \
        gui.stderr
