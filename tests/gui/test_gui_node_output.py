"""A compromised CleanCoin-node floods its standard output and error, against the real
CleanCoin-gui that started it.

The node is the real CleanCoin-node that CleanCoin-gui spawns; a harness
(tests/gui/node_flood_site/sitecustomize.py, imported by the node's interpreter only) starts
the flood once the node has confined itself, as a node compromised over P2P would: 32 MiB
without a newline, as fast as the pipe takes it, on stdout; lines with terminal escape
sequences and then 8 MiB without a newline on stderr. What the operator's terminal (here:
the pipes this test reads) receives must be text: no escape sequence, no line longer than
the relay's MAX_LINE (plus its prefix), nothing lost; the window's process must not grow
with the flood and must still answer (SIGTERM closes it, which runs through its event loop).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cleancoin.sandbox.stdio import MAX_LINE

from .conftest import free_port

BIN = Path(sys.executable).parent
HARNESS = Path(__file__).parent / "node_flood_site" / "sitecustomize.py"
STDOUT_BYTES = 32 * 1024 * 1024
STDERR_BYTES = 8 * 1024 * 1024
STDERR_LINES = 100
#: Longest line a prefixing relay may pass on: MAX_LINE and its prefix.
LONGEST = MAX_LINE + 64


@dataclass
class Seen:
    """What arrived on one of the GUI's output pipes (counted, not kept)."""

    counts: dict[int, int] = field(default_factory=dict)   # byte value -> count
    longest: int = 0
    controls: int = 0            # raw ESC and BEL bytes
    escaped_marks: int = 0       # "\x1b" written out as text
    total: int = 0
    head: bytes = b""            # the first bytes that were not flood payload (for messages)


def _reader(stream: IO[bytes], seen: Seen, payload: bytes) -> None:
    line = 0
    while chunk := stream.read1(1 << 20):  # type: ignore[attr-defined]
        seen.total += len(chunk)
        seen.counts[payload[0]] = seen.counts.get(payload[0], 0) + chunk.count(payload)
        seen.controls += chunk.count(b"\x1b") + chunk.count(b"\x07")
        seen.escaped_marks += chunk.count(b"\\x1b")
        parts = chunk.split(b"\n")
        line += len(parts[0])
        for part in parts[1:]:
            seen.longest = max(seen.longest, line)
            line = len(part)
        seen.longest = max(seen.longest, line)
        if len(seen.head) < 2000:
            seen.head += re.sub(b"(" + re.escape(payload) + b")+", b"<payload>", chunk[:4000])[:2000]


def _vm(pid: int, key: str) -> int:
    """A /proc/PID/status field in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def _wait(predicate, timeout: float, what: str, gui: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if gui.poll() is not None:
            raise AssertionError(f"CleanCoin-gui ended ({gui.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_flooding_node_reaches_the_terminal_as_bounded_text_and_the_window_stays(datadir: Path) -> None:
    site = datadir / "site"
    site.mkdir()
    shutil.copy(HARNESS, site / "sitecustomize.py")
    netdir = datadir / "data" / "regtest"
    netdir.mkdir(parents=True)
    done = netdir / "flood.done"
    (site / "flood.json").write_text(json.dumps({
        "stdout_bytes": STDOUT_BYTES, "stderr_bytes": STDERR_BYTES, "stderr_lines": STDERR_LINES,
        "done": str(done)}))
    config_home = datadir / "config"
    gui_log = config_home / "CleanCoin" / "CleanCoin-gui-regtest.log"
    env = {**os.environ, "PYTHONPATH": str(site), "QT_QPA_PLATFORM": "offscreen",
           "XDG_CONFIG_HOME": str(config_home)}
    gui = subprocess.Popen([str(BIN / "CleanCoin-gui"), "-regtest", f"-datadir={datadir / 'data'}",
                            "-noipcconnect", "-disablewallet", f"-port={free_port()}", f"-rpcport={free_port()}"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Seen(), Seen()
    readers = [threading.Thread(target=_reader, args=(gui.stdout, out, b"A"), daemon=True),
               threading.Thread(target=_reader, args=(gui.stderr, err, b"B"), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        _wait(lambda: gui_log.exists() and "window ready" in gui_log.read_text(), 60, "the window", gui)
        before = _vm(gui.pid, "VmHWM")
        _wait(done.exists, 60, "the node's flood", gui)
        # A relay may keep the end of an unfinished line (up to MAX_LINE) until it ends or
        # the node exits.
        _wait(lambda: out.counts.get(ord("A"), 0) >= STDOUT_BYTES - MAX_LINE
              and err.counts.get(ord("B"), 0) >= STDERR_BYTES - MAX_LINE,
              30, "the flood on the GUI's stdout and stderr", gui)
        grown = _vm(gui.pid, "VmHWM") - before
        helpers = {pid: _vm(pid, "VmHWM") for pid in _descendants(gui.pid)
                   if "mp_node_main" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                   and Path(f"/proc/{pid}/cmdline").read_bytes()}
        # The window still answers: SIGTERM goes through its event loop (window.close).
        gui.send_signal(signal.SIGTERM)
        assert gui.wait(30) == 0
    finally:
        if gui.poll() is None:
            gui.kill()
            gui.wait()
    for reader in readers:
        reader.join(10)
    # Nothing lost, nothing held: every byte arrived, in lines no longer than the relay's.
    assert out.counts[ord("A")] == STDOUT_BYTES and err.counts[ord("B")] == STDERR_BYTES
    assert out.longest <= LONGEST and err.longest <= LONGEST, (out.longest, err.longest, err.head[:500])
    # Text only: the escape sequences arrive written out, none reaches the terminal.
    assert out.controls == 0 and err.controls == 0, err.head[:500]
    assert err.escaped_marks == 2 * STDERR_LINES
    # The window's process did not take the flood in; whatever relays it holds a line at most.
    assert grown < 16 * 1024, f"the window grew by {grown} KiB"
    assert all(hwm < 128 * 1024 for hwm in helpers.values()), helpers
