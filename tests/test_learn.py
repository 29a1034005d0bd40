"""`CleanCoin-sandbox learn`: record what a program does (seccomp user notifications, no
ptrace) and write the policy it needs, with the diff against the current one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")

# A shell that writes in its data directory, starts threads in a Python child (their syscalls
# come from other threads), opens a socket, and tries a file the policy does not show.
PROGRAM = ("echo hi > {d}/out && ls {d} > {d}/list && "
           "/usr/bin/python3 -c 'import socket, threading; "
           "t = [threading.Thread(target=lambda: open(\"{d}/out\").read()) for _ in range(3)]; "
           "[x.start() for x in t]; [x.join() for x in t]; socket.socket(socket.AF_INET6).close()'; "
           "cat /etc/hostname > /dev/null; true")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=timeout)


def test_learn_a_program_then_run_it_under_what_was_learned(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "learned.toml"
    program = PROGRAM.format(d=data)
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(out),
                 "--json", "--", "sh", "-c", program)
    # The program read /etc/hostname and made an inet6 socket, which the policy refuses.
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "learn: " in result.stderr and "so far" in result.stderr        # progress while it ran
    report = json.loads(result.stdout)
    diff, seen = report["diff"], report["observation"]
    assert report["program_status"] == 0
    assert "read /etc/hostname" in diff["missing_paths"]
    assert diff["missing_families"] == ["inet6"]
    assert {"execve", "openat", "write", "clone", "futex"} <= set(seen["syscalls"])
    assert seen["syscalls"]["execve"] >= 3                                  # sh, ls, python3, cat
    assert "create" in seen["paths"]["${datadir}/out"] and "read" in seen["paths"]["${datadir}/out"]
    assert diff["syscalls_used"] < diff["syscalls_allowed"] / 2
    assert "write ${tmpdir}" in diff["unused_paths"]
    text = out.read_text()
    assert '"${datadir}",' in text and '"execve"' in text and "REVIEW" in text
    # The learned policy loads, is narrower in syscalls, and runs the program.
    assert run("check", str(out)).returncode == 0
    changes = json.loads(run("diff", "examples/program", str(out), "--json").stdout)["changes"]
    assert all(c["kind"] != "widen" for c in changes if c["key"] == "seccomp.allowed")
    again = run("run", "--policy", str(out), "--datadir", str(data), "--", "sh", "-c", program)
    assert again.returncode == 0, again.stderr
    assert (data / "out").read_text() == "hi\n"


def test_learn_needs_a_program_or_records(tmp_path: Path) -> None:
    usage = run("learn", "--policy", "strict", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["ok"] is False
    empty = run("learn", "--policy", "wallet", "--from", str(tmp_path))
    assert empty.returncode == 125 and "nothing was recorded" in empty.stderr


def test_learning_writes_only_where_the_policy_lets_it(tmp_path: Path) -> None:
    # The host's tree is read-only while learning: a write outside the policy's write grants
    # fails (and is recorded), so learning an unknown program cannot change the host.
    outside = Path("/var/tmp") / f"cleancoin-learn-{os.getpid()}"
    data = tmp_path / "data"
    data.mkdir()
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out",
                 str(tmp_path / "l.toml"), "--json", "--quiet", "--", "sh", "-c", f"touch {outside}; echo ok > {data}/in")
    assert result.returncode == 1, result.stdout[-2000:]
    assert not outside.exists()
    assert (data / "in").read_text() == "ok\n"
    assert "write /var/tmp" in json.loads(result.stdout)["diff"]["missing_paths"]
