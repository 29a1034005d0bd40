"""`CleanCoin-sandbox learn`: record what a program does (seccomp user notifications, no
ptrace) and write the policy it needs, with the diff against the current one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from cleancoin.sandbox import launcher, policy_loader
from cleancoin.sandbox.errors import EnforcementError

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


# The learned program looks for the record directory (in /tmp, where `learn` makes it, and in
# its mount table) and writes forged records: a write grant of /, a read of a file it never
# opened, ptrace, and a second "process"; then through the recorder's own descriptor.
FORGER = r'''
import glob, json, os, sys
forged = [{"t": "path", "path": "/", "access": "write"}, {"t": "path", "path": sys.argv[1], "access": "read"},
          {"t": "syscall", "nr": 101}]
dirs = set(glob.glob("/tmp/cleancoin-learn-*"))
for line in open("/proc/self/mountinfo"):
    point = line.split()[4]
    if "cleancoin-learn-" in point:
        dirs.add(point)
written = []
for d in sorted(dirs):
    try:
        names = os.listdir(d)
    except OSError:
        continue
    for name in names + ["forged.jsonl"]:
        try:
            with open(os.path.join(d, name), "a") as handle:
                if name == "forged.jsonl":
                    handle.write(json.dumps({"t": "header", "policy": "examples/program"}) + "\n")
                handle.write("\n".join(json.dumps(r) for r in forged) + "\n")
            written.append(name)
        except OSError:
            pass
# The recorder runs as the same user, in the same pid namespace: its record file, taken
# through /proc/PID/fd.
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/comm").read().strip() != "learn-recorder":
            continue
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".jsonl"):
                with open(f"/proc/{pid}/fd/{fd}", "a") as handle:
                    handle.write("\n".join(json.dumps(r) for r in forged) + "\n")
                written.append(f"recorder {pid} fd {fd}")
    except OSError as exc:
        print("recorder", pid, exc)
print("dirs", sorted(dirs), "written", written)
'''


def test_the_learned_program_cannot_write_what_is_learned(tmp_path: Path) -> None:
    """Attack: the program under `learn` appended forged records to its own record file and
    added a record file of a second process, or wrote through the recorder's descriptor
    (/proc/PID/fd of a dumpable process of its own user): the learned policy granted write on / and a
    read of a file it never opened, and allowed ptrace (went through before 12-06)."""
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "never-opened"
    secret.write_text("x")
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out",
                 str(tmp_path / "l.toml"), "--json", "--quiet", "--", "/usr/bin/python3", "-c", FORGER, str(secret))
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    seen = json.loads(result.stdout)["observation"]
    assert seen["processes"] == 1
    assert "write" not in seen["paths"].get("/", []), seen["paths"]["/"]
    assert str(secret) not in seen["paths"] and "ptrace" not in seen["syscalls"]
    learned = tomllib.loads((tmp_path / "l.toml").read_text())
    assert "/" not in [g if isinstance(g, str) else g["path"] for g in learned["filesystem"].get("write", [])]
    assert str(secret) not in json.dumps(learned)


def test_a_record_directory_inside_a_write_grant_is_refused(tmp_path: Path) -> None:
    """The program could write its own records there (or rename a directory on the way)."""
    data = tmp_path / "data"
    data.mkdir()
    policy = policy_loader.load_policy(policy_loader.shipped_policy("examples/program"))
    for inside in (data / "records", data):
        with pytest.raises(EnforcementError, match="overlaps the write grant"):
            launcher.prepare(policy, {"datadir": str(data)}, learn_dir=str(inside))


def test_files_of_a_host_directory_are_not_learned_as_the_directory(tmp_path: Path) -> None:
    """Before 12-06 a program that read four harmless files of /etc was given a read grant of
    /etc (shadow and the SSH host keys with it), and one that wrote three devices a write
    grant of /dev. Files of the launch's own directories still collapse (${datadir})."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "l.toml"
    program = (f"cat /etc/hostname /etc/hosts /etc/resolv.conf /etc/issue > /dev/null 2>&1; "
               f"echo x > /dev/full 2>/dev/null; echo y > /dev/zero; "
               f"for f in a b c d; do echo $f > {data}/$f; cat {data}/$f > /dev/null; done; true")
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(out),
                 "--json", "--quiet", "--", "sh", "-c", program)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    learned = tomllib.loads(out.read_text())["filesystem"]
    granted = {cls: [g if isinstance(g, str) else g["path"] for g in learned.get(cls, [])] for cls in ("read", "write")}
    assert "/etc" not in granted["read"] and "/dev" not in granted["write"], granted
    assert {"/etc/hostname", "/etc/hosts"} <= set(granted["read"]), granted
    assert "${datadir}" in granted["write"], granted


def test_a_program_cannot_make_the_recorder_write_without_end(tmp_path: Path) -> None:
    """Attack: the learned program names a new path in every call (30,000 a second here):
    before 12-06 each one became a line of the record file in the host's /tmp and an entry of
    the recorder's memory, without bound. Now the recorder stops at MAX_DISTINCT and says so."""
    from cleancoin.sandbox.learn_recorder import MAX_DISTINCT
    data = tmp_path / "data"
    data.mkdir()
    many = MAX_DISTINCT + 5000
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(tmp_path / "l.toml"),
                 "--json", "--quiet", "--", "/usr/bin/python3", "-c",
                 f"import os\nfor i in range({many}):\n    try: os.stat('/nonexistent/%d' % i)\n    except OSError: pass")
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    seen = json.loads(result.stdout)["observation"]
    assert len(seen["paths"]) <= MAX_DISTINCT
    assert any(f"more than {MAX_DISTINCT} distinct paths" in e for e in seen["errors"]), seen["errors"]
    assert seen["syscalls"]["newfstatat"] >= many       # still counted


# The program connects to a host daemon's socket outside its policy's view: directly, then
# with a second thread that swaps the address between an allowed socket and the daemon's while
# the first connects (the race a check-then-let-through recorder would lose).
SOCKETS = r'''
import ctypes, os, socket, sys, threading
host, data = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(host)
    print("direct: connected")
except OSError as exc:
    print("direct:", exc.errno)
inside = os.path.join(data, "in.sock")
server = socket.socket(socket.AF_UNIX)
server.bind(inside)
server.listen(512)
libc = ctypes.CDLL(None, use_errno=True)
width = max(len(host), len(inside)) + 1
buf = ctypes.create_string_buffer(2 + 108)
ctypes.memmove(buf, b"\x01\x00", 2)
paths = [p.encode().ljust(width, b"\0") for p in (inside, host)]
stop = False
def flip():
    i = 0
    while not stop:
        ctypes.memmove(ctypes.addressof(buf) + 2, paths[i & 1], width)
        i += 1
threading.Thread(target=flip, daemon=True).start()
for _ in range(400):
    c = socket.socket(socket.AF_UNIX)
    libc.connect(c.fileno(), buf, 2 + width)
    c.close()
    try:
        server.setblocking(False)
        while True:
            server.accept()[0].close()
    except BlockingIOError:
        pass
stop = True
# The family too: an inet address when the recorder reads it, the host's path when the kernel
# does (on a unix socket).
inet = (b"\x02\x00" + (9).to_bytes(2, "big") + bytes([127, 0, 0, 1])).ljust(width + 2, b"\0")
outside = (b"\x01\x00" + host.encode()).ljust(width + 2, b"\0")
stop = False
def flip_family():
    i = 0
    while not stop:
        ctypes.memmove(buf, (inet, outside)[i & 1], width + 2)
        i += 1
threading.Thread(target=flip_family, daemon=True).start()
for _ in range(400):
    c = socket.socket(socket.AF_UNIX)
    libc.connect(c.fileno(), buf, 2 + width)
    c.close()
stop = True
print("raced")
'''


def test_the_learned_program_reaches_no_host_socket_its_policy_does_not_show(tmp_path: Path) -> None:
    """Attack: under `learn` (examples/program: a network namespace, a view of its grants)
    the program connected to a listening socket of the host outside every grant (in the host's
    tree, read-only, where connect(2) still works) and sent it bytes (went through before
    12-06: docker.sock or D-Bus would have been as reachable). Now the recorder makes the
    connect itself where the policy's view shows the socket, and answers ENOENT elsewhere;
    a thread that swaps the address meanwhile reaches nothing either."""
    outside = Path(tempfile.mkdtemp(prefix="cleancoin-host-", dir="/var/tmp"))
    host = outside / "daemon.sock"
    daemon = socket.socket(socket.AF_UNIX)
    daemon.bind(str(host))
    daemon.listen(512)
    daemon.setblocking(False)
    data = tmp_path / "data"
    data.mkdir()
    try:
        result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out", str(tmp_path / "l.toml"),
                     "--json", "--quiet", "--", "/usr/bin/python3", "-c", SOCKETS, str(host), str(data))
        assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
        reached = 0
        try:
            while True:
                daemon.accept()[0].close()
                reached += 1
        except BlockingIOError:
            pass
        assert reached == 0, f"the learned program reached the host's socket {reached} times"
        seen = json.loads(result.stdout)["observation"]
        # Recorded all the same: the learned policy lists what it tried.
        assert {"family": "unix", "address": str(host)} in seen["connect"], seen["connect"]
    finally:
        daemon.close()
        shutil.rmtree(outside, ignore_errors=True)


# The learned program copies a program into its data directory (a write grant, on the host)
# and gives it the set-user-ID bit three ways, then a plain mode to a fourth copy.
SET_USER_ID = r'''
import os, shutil, sys
data = sys.argv[1]
def attempt(name, call):
    try:
        call()
        print(name, "made")
    except OSError as exc:
        print(name, exc.errno)
for name in ("by-chmod", "by-fchmodat", "plain"):
    shutil.copy("/bin/true", os.path.join(data, name))
attempt("chmod", lambda: os.chmod(os.path.join(data, "by-chmod"), 0o4755))
attempt("fchmodat", lambda: os.chmod("by-fchmodat", 0o2755, dir_fd=os.open(data, os.O_RDONLY)))
attempt("open", lambda: os.close(os.open(os.path.join(data, "by-open"), os.O_CREAT | os.O_WRONLY, 0o6755)))
attempt("plain", lambda: os.chmod(os.path.join(data, "plain"), 0o750))
'''


def test_the_learned_program_cannot_plant_a_set_user_id_file_on_the_host(tmp_path: Path) -> None:
    """Attack: every filter refuses the set-user-ID and set-group-ID bits (12-06), but a
    learning run lets every syscall go on after recording it, and its write grants are the
    host's directories: before this test, the program under `learn` (as root) left
    data/by-chmod 0o4755, data/by-fchmodat 0o2755 and data/by-open 0o6755 on the host, owned by
    root. Now the learning filter refuses them as every policy's filter does (EPERM); the plain
    chmod still works, and what the program did is still learned."""
    data = tmp_path / "data"
    data.mkdir()
    result = run("learn", "--policy", "examples/program", "--datadir", str(data), "--out",
                 str(tmp_path / "l.toml"), "--json", "--quiet", "--",
                 "/usr/bin/python3", "-c", SET_USER_ID, str(data))
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    modes = {p.name: p.stat().st_mode & 0o7777 for p in data.iterdir()}
    assert modes["plain"] == 0o750, modes
    assert not any(mode & 0o6000 for mode in modes.values()), modes
    seen = json.loads(result.stdout)["observation"]
    assert "openat" in seen["syscalls"] and {"chmod", "fchmodat"} & set(seen["syscalls"]), seen["syscalls"]
