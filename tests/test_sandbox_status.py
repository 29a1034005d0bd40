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
