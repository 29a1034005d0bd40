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


def _named(root: int, name: str) -> list[int]:
    found = []
    for pid in _descendants(root):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(pid)
        except OSError:
            continue
    return found


def _parent(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["PPid"])


def _roles(root: int) -> dict[int, str]:
    data = subprocess.run([TOOL, "status", "--tree", "--json", str(root)], capture_output=True, text=True,
                          timeout=30)
    return {p["pid"]: p["role"] for p in json.loads(data.stdout)["processes"]}


FAKE_HELPERS = ("import ctypes, os, sys, time\n"
                "for name in sys.argv[1:]:\n"
                "    if os.fork() == 0:\n"
                "        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0); time.sleep(30); os._exit(0)\n"
                "time.sleep(0.3); print('forked', flush=True); time.sleep(30)\n")


def test_a_confined_process_cannot_pass_for_one_of_the_sandboxs_helpers(tmp_path: Path) -> None:
    """`status` labels the sandbox's own helpers (the denial monitor, the learn recorder), which
    it judges by what they are rather than by a component's report. Before 12-06 it knew them by
    the name they give themselves: a confined program's children that called themselves
    "denial-monitor" and "learn-recorder" (prctl(PR_SET_NAME)) were shown as those helpers
    (seen on the old code: role 'denial monitor' for the fake). Now a helper is one its
    component's report names (pid, start time, pid namespace), which the component recorded
    while it was still setting up; the name plays no part. The real denial monitor, beside
    the fakes, is still known as one."""
    tool = subprocess.Popen([TOOL, "run", "--policy", "examples/program", "--datadir", str(tmp_path),
                             "--denials", "log", "--", "/usr/bin/python3", "-c", FAKE_HELPERS,
                             "denial-monitor", "learn-recorder"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert tool.stdout is not None and b"forked" in tool.stdout.readline()
        monitors = _named(tool.pid, "denial-monitor")
        [program] = {_parent(p) for p in _named(tool.pid, "learn-recorder")}
        fakes = [p for p in monitors + _named(tool.pid, "learn-recorder") if _parent(p) == program]
        [real] = [p for p in monitors if _parent(p) != program]
        roles = _roles(tool.pid)
        assert [roles[pid] for pid in fakes] == ["", ""], roles
        assert roles[real] == "denial monitor", roles
        text = subprocess.run([TOOL, "status", "--tree", str(tool.pid)], capture_output=True, text=True, timeout=30)
        assert text.stdout.count("[denial monitor]") == 1 and "[learn recorder]" not in text.stdout, text.stdout
        # One process asked about on its own is judged the same way.
        alone = subprocess.run([TOOL, "status", "--json", str(fakes[0])], capture_output=True, text=True, timeout=30)
        assert json.loads(alone.stdout)["processes"][0]["role"] == "", alone.stdout
    finally:
        tool.kill()
        tool.wait()


def test_the_learn_recorder_is_known_and_a_fake_one_is_not(tmp_path: Path) -> None:
    """The same under `learn`: the real recorder (a fork with no filter, by design) is labelled
    from its component's report; a child of the learned program that calls itself
    "learn-recorder" is not."""
    tool = subprocess.Popen([TOOL, "learn", "--policy", "examples/program", "--datadir", str(tmp_path),
                             "--out", str(tmp_path / "learned.toml"), "--", "/usr/bin/python3", "-c", FAKE_HELPERS,
                             "learn-recorder"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert tool.stdout is not None and b"forked" in tool.stdout.readline()
        recorders = _named(tool.pid, "learn-recorder")
        program = next(_parent(p) for p in recorders if Path(f"/proc/{_parent(p)}/comm").read_text().strip()
                       == "python3")
        [fake] = [p for p in recorders if _parent(p) == program]
        [real] = [p for p in recorders if _parent(p) != program]
        roles = _roles(tool.pid)
        assert roles[fake] == "" and roles[real] == "learn recorder", roles
    finally:
        tool.kill()
        tool.wait()


def test_a_report_that_says_not_dumpable_against_a_kernel_that_says_dumpable_is_a_finding() -> None:
    """The cross-check (sandbox/status.py) of what `status` read from the kernel against the
    report: before 12-06 (h41) a dumpable process whose report said "dumpable off" passed."""
    from cleancoin.sandbox.status import ProcessStatus, _cross_check
    report = {"mechanisms": {"process": {"status": "fully enforced",
                                         "details": ["stdio pipe; no_new_privs; dumpable off; new session yes"]}}}
    for kernel, findings in (("on", 1), ("off", 0)):
        status = ProcessStatus(1, no_new_privs=True, seccomp_mode="filter", dumpable=kernel, report=report)
        _cross_check(status)
        assert len([f for f in status.findings if "dumpable" in f]) == findings, status.findings
