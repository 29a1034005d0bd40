"""`CleanCoin-sandbox status PID...`: what the kernel enforces on a running process, joined
with the report its launcher registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def _descendants(pid: int) -> list[int]:
    out, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        out += [int(c) for c in children]
        pending += [int(c) for c in children]
    return out


def test_status_of_a_program_under_run_and_of_an_unconfined_one(tmp_path: Path) -> None:
    tool = subprocess.Popen([TOOL, "run", "--policy", "examples/program", "--datadir", str(tmp_path),
                             "--", "sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        sleeper = None
        while sleeper is None and time.monotonic() < deadline:
            sleeper = next((p for p in _descendants(tool.pid)
                            if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"), None)
            time.sleep(0.05)
        assert sleeper is not None
        result = subprocess.run([TOOL, "status", str(sleeper), "--json"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        [status] = json.loads(result.stdout)["processes"]
        assert status["name"] == "sleep" and status["report"]["policy"] == "examples/program"
        assert status["seccomp_mode"] == "filter" and status["seccomp_filters"] == 1
        assert status["no_new_privs"] is True and status["findings"] == []
        assert {"user", "mnt", "pid", "net", "ipc", "uts"} <= set(status["namespaces_own"])
        assert status["rlimits"]["nofile"] == {"soft": "1024", "hard": "1024"}
        assert status["rlimits"]["core"] == {"soft": "0", "hard": "0"}
        # The tool itself runs unconfined: not sandboxed, exit status 1.
        tree = subprocess.run([TOOL, "status", "--tree", str(tool.pid)], capture_output=True, text=True, timeout=30)
        assert tree.returncode == 1
        assert "NOT SANDBOXED" in tree.stdout and "[pid namespace waiter]" in tree.stdout
        assert "policy 'examples/program'" in tree.stdout
    finally:
        tool.kill()
        tool.wait()
    gone = subprocess.run([TOOL, "status", "999999999"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 125 and "cannot read /proc/999999999/status" in gone.stdout


def test_a_confined_process_cannot_write_to_the_auditors_terminal_through_its_name(tmp_path: Path) -> None:
    """A process names itself (prctl(PR_SET_NAME)) and the kernel passes the name on as it is:
    a confined program that calls itself ESC ] 0 ; ... BEL retitles, ESC [ 2 J clears, the
    terminal of whoever runs `status` on it. Before 12-06 the name went out raw. It is shown
    with its control characters made visible; --json escapes them as JSON does."""
    rename = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'\\x1b]0;pwn\\x07\\x1b[2J', 0, 0, 0);"
              "print('renamed', flush=True); time.sleep(30)")
    tool = subprocess.Popen([TOOL, "run", "--policy", "examples/program", "--datadir", str(tmp_path),
                             "--", "/usr/bin/python3", "-c", rename], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert tool.stdout is not None and b"renamed" in tool.stdout.readline()
        tree = subprocess.run([TOOL, "status", "--tree", str(tool.pid)], capture_output=True, timeout=30)
        assert b"\x1b" not in tree.stdout and b"\x07" not in tree.stdout, tree.stdout
        assert b"\\x1b]0;pwn\\x07\\x1b[2J" in tree.stdout, tree.stdout
        data = subprocess.run([TOOL, "status", "--tree", "--json", str(tool.pid)], capture_output=True,
                              text=True, timeout=30)
        names = [p["name"] for p in json.loads(data.stdout)["processes"]]
        assert "\x1b]0;pwn\x07\x1b[2J" in names, names
    finally:
        tool.kill()
        tool.wait()
