"""The executables themselves, offscreen: CleanCoin-gui starts CleanCoin-node (which starts
its sandboxed wallet process), confines itself by policies/gui.toml, and stops the node when
its window closes (SIGTERM); with -ipcconnect it attaches to a running node, survives the
node going away and coming back, and leaves it running when it closes. The gui policy's
escape battery finds nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import free_port

BIN = Path(sys.executable).parent


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _wait(predicate, timeout: float, what: str, detail=None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}" + (f"\n{detail()}" if detail else ""))


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gui(datadir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(datadir / "config")}
    return subprocess.Popen([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _end(*procs: subprocess.Popen[bytes] | None) -> None:
    """Teardown: SIGTERM what still runs, SIGKILL what does not end within 30 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _log(datadir: Path) -> str:
    path = datadir / "config" / "CleanCoin" / "CleanCoin-gui-regtest.log"
    return path.read_text() if path.exists() else ""


def test_cleancoin_gui_is_confined_and_stops_the_node_it_started(datadir: Path) -> None:
    gui = _gui(datadir, f"-port={free_port()}", f"-rpcport={free_port()}", "-noipcconnect")
    try:
        _wait(lambda: "confined" in _log(datadir) or gui.poll() is not None, 30, "the GUI confined")
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        status = _status(gui.pid)
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1" and status["CapEff"] == "0" * 16
        assert os.readlink(f"/proc/{gui.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        node = [c for c in _children(gui.pid)]
        assert node, "no CleanCoin-node below the GUI"
        _wait(lambda: (datadir / "regtest" / "debug.log").exists()
              and "Node started" in (datadir / "regtest" / "debug.log").read_text(), 60, "the node started")
        time.sleep(1)
        assert gui.poll() is None, "the GUI died: " + gui.communicate()[0].decode()[-2000:]
        gui.send_signal(signal.SIGTERM)                  # as closing the window
        assert gui.wait(60) == 0
        _wait(lambda: all(not Path(f"/proc/{p}").exists() for p in node), 30, "the node stopped")
        assert "Shutdown: done" in (datadir / "regtest" / "debug.log").read_text()
    finally:
        if gui.poll() is None:
            gui.kill()
            gui.wait()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_cleancoin_gui_attaches_with_ipcconnect_and_survives_a_node_restart(datadir: Path, transport: str) -> None:
    """Attached over node.sock, or over TCP with the node's cookie as the login (no -ipcauth):
    the node writes a new cookie at each start, which the confined window cannot see; its
    connector reads it. Before 12-07 the window read it itself after confining itself, and an
    attached GUI over TCP never logged in ("the node did not answer: ... .ipccookie")."""
    port, rpcport = free_port(), free_port()
    where = "unix" if transport == "unix" else f"tcp:127.0.0.1:{free_port()}"
    node_args = [str(BIN / "CleanCoin-node"), "-regtest", f"-datadir={datadir}", f"-port={port}",
                 f"-rpcport={rpcport}", f"-ipcbind={where}", "-printtoconsole=0", "-disablewallet"]
    node = subprocess.Popen(node_args)
    sock = datadir / "regtest" / ("node.sock" if transport == "unix" else ".ipccookie")
    gui = None
    try:
        _wait(lambda: sock.exists(), 60, sock.name)
        gui = _gui(datadir, f"-ipcconnect={where}")
        _wait(lambda: "connected: " in _log(datadir) or "attached" in _log(datadir) or gui.poll() is not None,
              30, "the GUI attached")
        # "window ready", not "confined": the window's first call to the node comes after its
        # confinement, and a node stopped before that call ended the GUI's start instead (the
        # flake of 12-06: "the node did not answer: Init.hello: connection to peer lost").
        _wait(lambda: "window ready" in _log(datadir) or gui.poll() is not None, 30, "the window ready")
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        assert "confined" in _log(datadir) and _status(gui.pid)["Seccomp"] == "2"
        node.send_signal(signal.SIGTERM)
        assert node.wait(60) == 0
        _wait(lambda: "connection to the node ended" in _log(datadir), 30, "the GUI saw the node go",
              detail=lambda: _log(datadir)[-3000:] + "\n--- the node's debug.log:\n"
              + (datadir / "regtest" / "debug.log").read_text()[-3000:] + "\n--- sandbox.log:\n"
              + (datadir / "regtest" / "sandbox.log").read_text()[-2000:])
        assert gui.poll() is None
        node = subprocess.Popen(node_args)
        _wait(lambda: "reconnected to the node" in _log(datadir), 60, "the GUI reconnected")
        gui.send_signal(signal.SIGTERM)
        assert gui.wait(60) == 0
        time.sleep(0.5)
        assert node.poll() is None, "closing an attached GUI must not stop the node"
    finally:
        _end(gui, node)


def test_cleancoin_gui_attaches_over_tls_and_refuses_a_listener_with_another_certificate(datadir: Path) -> None:
    """Attached over TCP with TLS: the node listens with -ipccert/-ipckey, the GUI is given
    the certificate alone (docs/ipc.md: cert.pem, never key.pem, goes to a client) and logs
    in with the node's cookie; when the node comes back with another certificate (same user,
    same port) the window does not log in there, and it does once the node with its own
    certificate is back. Before 12-07 none of it ran: CleanCoin-node loaded its certificate
    after confining itself and never started ("Error: [Errno 2] No such file or directory"),
    a client given -ipccert alone was refused ("-ipccert and -ipckey go together"), and the
    window loaded the certificate confined, at its first call."""
    from tls_certs import NoCertificateTool, make_self_signed
    certs = datadir / "certs"
    certs.mkdir()
    try:
        for name in ("ours", "other"):
            make_self_signed(str(certs / f"{name}.pem"), str(certs / f"{name}.key"))
    except NoCertificateTool as exc:
        pytest.skip(str(exc))
    where = f"tcp:127.0.0.1:{free_port()}"

    def start_node(cert: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(BIN / "CleanCoin-node"), "-regtest", f"-datadir={datadir}", f"-port={port}",
                                 f"-rpcport={rpcport}", f"-ipcbind={where}", f"-ipccert={certs / cert}.pem",
                                 f"-ipckey={certs / cert}.key", "-printtoconsole=0", "-disablewallet",
                                 "-debug=ipc"])

    def node_log() -> str:
        path = datadir / "regtest" / "debug.log"
        return path.read_text() if path.exists() else ""

    port, rpcport = free_port(), free_port()
    node = start_node("ours")
    gui = None
    try:
        _wait(lambda: "IPC: listening on tcp" in node_log() or node.poll() is not None, 60, "the node listening",
              detail=lambda: node_log()[-3000:])
        assert node.poll() is None, node_log()[-3000:]
        gui = _gui(datadir, f"-ipcconnect={where}", f"-ipccert={certs / 'ours.pem'}")
        _wait(lambda: "window ready" in _log(datadir) or gui.poll() is not None, 60, "the window ready",
              detail=lambda: _log(datadir)[-3000:])
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        assert "confined" in _log(datadir) and _status(gui.pid)["Seccomp"] == "2"
        node.send_signal(signal.SIGTERM)
        assert node.wait(60) == 0
        _wait(lambda: "connection to the node ended" in _log(datadir), 30, "the GUI saw the node go")
        logged = len(node_log())
        node = start_node("other")
        # The window reconnects every second or so: each attempt ends in the TLS handshake,
        # which the node sees as a client that dropped during set-up.
        _wait(lambda: node_log()[logged:].count("dropped during set-up") >= 2 or node.poll() is not None, 60,
              "the window tried the node with another certificate", detail=lambda: node_log()[-3000:])
        assert node.poll() is None, node_log()[-3000:]
        assert "reconnected to the node" not in _log(datadir), _log(datadir)[-3000:]
        assert "Auth.login" not in node_log()[logged:], node_log()[-3000:]
        node.send_signal(signal.SIGTERM)
        assert node.wait(60) == 0
        node = start_node("ours")
        _wait(lambda: "reconnected to the node" in _log(datadir), 60, "the GUI reconnected",
              detail=lambda: _log(datadir)[-3000:])
        gui.send_signal(signal.SIGTERM)
        assert gui.wait(60) == 0
    finally:
        _end(gui, node)


def test_an_attached_gui_whose_node_goes_before_the_first_call_waits_for_it(datadir: Path) -> None:
    """The node at node.sock goes away after the GUI connected and before its first call (here a
    listener that hangs up on every connection stands for it). The GUI used to exit: "the node
    did not answer". Now its window opens saying it waits, and it attaches to the node that
    comes up there later, as it does for a node that goes away once the window runs."""
    import socket
    import threading
    netdir = datadir / "regtest"
    netdir.mkdir(mode=0o700)
    sock = netdir / "node.sock"
    hangup = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hangup.bind(str(sock))
    hangup.listen()
    stop = threading.Event()

    def hang_up() -> None:
        hangup.settimeout(0.2)
        while not stop.is_set():
            try:
                hangup.accept()[0].close()
            except OSError:
                pass
    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    gui = node = None
    try:
        gui = _gui(datadir, "-ipcconnect=unix")
        _wait(lambda: "the window waits for it" in _log(datadir) or gui.poll() is not None, 30,
              "the GUI saw no node", detail=lambda: _log(datadir)[-3000:])
        _wait(lambda: "waiting for it at" in _log(datadir) or gui.poll() is not None, 30, "the window waits",
              detail=lambda: _log(datadir)[-3000:])
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        stop.set()
        thread.join(5)
        hangup.close()
        sock.unlink()
        node = subprocess.Popen([str(BIN / "CleanCoin-node"), "-regtest", f"-datadir={datadir}",
                                 f"-port={free_port()}", f"-rpcport={free_port()}", "-ipcbind=unix",
                                 "-printtoconsole=0", "-disablewallet"])
        _wait(lambda: "reconnected to the node" in _log(datadir) or gui.poll() is not None, 60,
              "the GUI attached to the node that came", detail=lambda: _log(datadir)[-3000:])
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        assert "window ready" in _log(datadir)
        gui.send_signal(signal.SIGTERM)
        assert gui.wait(60) == 0
    finally:
        stop.set()
        _end(gui, node)


def test_probe_finds_no_escape_from_the_gui_policies(datadir: Path) -> None:
    import socket
    compositor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)    # gui-wayland's one grant
    compositor.bind(str(datadir / "wayland-0"))
    compositor.listen()
    try:
        for policy, var in (("gui", []), ("gui-x11", ["--var", f"xauthority={datadir}/none"]),
                            ("gui-wayland", ["--var", f"wayland_socket={datadir}/wayland-0"])):
            (datadir / policy).mkdir()
            result = subprocess.run([str(BIN / "CleanCoin-sandbox"), "probe", "--policy", policy, "--datadir",
                                     str(datadir / policy), *var], capture_output=True, text=True, timeout=240)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
            summary = result.stdout.strip().splitlines()[-1]
            assert summary.endswith(" attempts, 0 escapes"), summary      # no escape, and no error either
    finally:
        compositor.close()


def test_no_x11_in_the_wayland_and_offscreen_policies() -> None:
    """What the probe cannot tell (it judges a policy against itself): gui.toml and
    gui-wayland.toml grant nothing of X11, so the window on Wayland cannot reach XWayland."""
    from cleancoin.sandbox import load_policy, shipped_policy
    for name in ("gui", "gui-wayland"):
        policy = load_policy(shipped_policy(name))
        grants = [g.value for grants in (policy.filesystem.read, policy.filesystem.write) for g in grants]
        assert not [g for g in grants if ".X11-unix" in g or "xauthority" in g or g in ("/tmp", "/")], (name, grants)
        assert "shmget" not in policy.allowed_syscalls, name              # MIT-SHM is X11's
    x11 = load_policy(shipped_policy("gui-x11"))
    assert "/tmp/.X11-unix" in [g.value for g in x11.filesystem.read]


def test_cleancoin_gui_runs_confined_on_an_x11_display(datadir: Path) -> None:
    """On a real display Qt's xcb platform connects to the X server and starts a D-Bus thread
    after the window confined itself (gui.toml grants the socket, getresuid/getresgid and
    shutdown for them: without those the window died of SIGSYS at start and at exit)."""
    import shutil
    import pytest
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    # Xvfb picks a free display itself and says which (-displayfd): sockets that killed
    # servers left in /tmp/.X11-unix once used up every number this test tried.
    read_end, write_end = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write_end), "-screen", "0", "1024x768x24",
                               "-nolisten", "tcp"], pass_fds=[write_end],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    gui = None
    try:
        with os.fdopen(read_end) as said:
            display = int(said.readline())
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": f":{display}",
               "XDG_CONFIG_HOME": str(datadir / "config")}
        gui = subprocess.Popen([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}", "-noipcconnect",
                                "-disablewallet", f"-port={free_port()}", f"-rpcport={free_port()}"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait(lambda: "window ready" in _log(datadir) or gui.poll() is not None, 60, "the window on X11")
        assert gui.poll() is None, gui.communicate()[0].decode()[-2000:]
        assert "confined" in _log(datadir) and _status(gui.pid)["Seccomp"] == "2"
        time.sleep(0.5)
        gui.send_signal(signal.SIGTERM)                  # as closing the window
        assert gui.wait(60) == 0, gui.communicate()[0].decode()[-2000:]
    finally:
        if gui is not None and gui.poll() is None:
            gui.kill()
            gui.wait()
        server.terminate()          # not SIGKILL: Xvfb removes its socket and lock file
        server.wait(10)


def test_a_log_that_is_a_link_stops_the_start_and_writes_nothing(datadir: Path) -> None:
    """The window's log is opened by the unconfined start: a link planted there (by an earlier
    window, or another program of the user's) must not make it append to the link's target."""
    victim = datadir / "victim.txt"
    victim.write_text("victim-original\n")
    settings = datadir / "config" / "CleanCoin"
    settings.mkdir(parents=True)
    (settings / "CleanCoin-gui-regtest.log").symlink_to(victim)
    gui = _gui(datadir, f"-port={free_port()}", f"-rpcport={free_port()}", "-noipcconnect")
    out = gui.communicate(timeout=60)[0].decode()
    assert gui.returncode == 1 and "is a symbolic link" in out, out
    assert victim.read_text() == "victim-original\n"
