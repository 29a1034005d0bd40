"""A learning run of the window (-sandboxlearn, `CleanCoin-sandbox learn`) reaches its display.

The learning view is the host's tree read-only with the policy's private tmpfs mounts on top.
Before 12-06 (h28) the policy's read grants beneath such a tmpfs were not bound again on top:
gui.toml's private /tmp covered a compositor socket in a runtime directory under /tmp (and
X11's /tmp/.X11-unix), so the learning window's connect answered ENOENT and Qt could not load
its platform plugin ("Failed to create wl_display"). Now they are, read-only, and the
recorder still reaches no socket the policy does not grant.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

PROBE = r'''
import json, socket, sys
from cleancoin.sandbox import restrict_self, shipped_policy
window, compositor, other, learn = sys.argv[1:5]
restrict_self(shipped_policy("gui-wayland"), {"datadir": window, "wayland_socket": compositor},
              keep_fds=set(), learn_dir=learn)
said = {}
for name, path in (("compositor", compositor), ("other", other)):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(b"hello")
        said[name] = "connected"
    except OSError as exc:
        said[name] = exc.strerror
    s.close()
print(json.dumps(said))
'''


def test_a_learning_window_reaches_its_compositor_socket_beneath_the_private_tmp(tmp_path: Path) -> None:
    """tmp_path lies beneath /tmp, which gui.toml replaces by a private tmpfs: as a Wayland
    runtime directory there (weston's headless runs in tests/gui/displays.py)."""
    assert str(tmp_path).startswith("/tmp/")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    listeners = {}
    for name in ("wl-test", "other"):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(run / name))
        listener.listen(2)
        listener.settimeout(10)
        listeners[name] = listener
    window = tmp_path / "window"
    window.mkdir()
    learn = tmp_path / "learn"
    done = subprocess.run([sys.executable, "-c", PROBE, str(window), str(run / "wl-test"), str(run / "other"),
                           str(learn)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["compositor"] == "connected", said
    conn, _ = listeners["wl-test"].accept()
    assert conn.recv(16) == b"hello"
    # A socket beside the granted one is not in the policy's view: not in the learning run's.
    assert said["other"] == "No such file or directory", said
    records = [json.loads(line) for path in learn.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert {"t": "connect", "family": 1, "path": str(run / "wl-test")} in records
    for listener in listeners.values():
        listener.close()
