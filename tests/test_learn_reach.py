"""A learning run reaches no socket its policy's view would not show: symlinks and swapped
directories in a write grant, abstract sockets of the host, datagrams sent with an address,
and the races around them. Each test runs the attacker's code inside a real `learn` run
(`CleanCoin-sandbox learn`) against real host sockets the test listens on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
PROGRAM_POLICY = Path(__file__).resolve().parent.parent / "policies" / "examples" / "program.toml"


def learn(policy: str, data: Path, out: Path, code: str, *args: str) -> dict[str, object]:
    """Run `code` under `learn`; what the program printed as `RESULT {json}`, and the report."""
    result = subprocess.run([TOOL, "learn", "--policy", policy, "--datadir", str(data), "--out", str(out),
                             "--json", "--quiet", "--", "/usr/bin/python3", "-c", code, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    # `learn --json` sends the program's output to standard error.
    lines = [line for line in result.stderr.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    return {"program": json.loads(lines[-1][7:]), "report": report}


class Host:
    """Listening sockets of the host outside every grant (a stream one and a datagram one,
    named, and an abstract one), and what reached them."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cleancoin-host-", dir="/var/tmp"))
        self.stream_path = str(self.dir / "daemon.sock")
        self.dgram_path = str(self.dir / "log.sock")
        self.abstract = f"cleancoin-host-{os.getpid()}-{os.urandom(3).hex()}"
        self.stream = socket.socket(socket.AF_UNIX)
        self.stream.bind(self.stream_path)
        self.stream.listen(1024)
        self.stream.setblocking(False)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(self.dgram_path)
        self.dgram.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.dgram.setblocking(False)
        self.abs = socket.socket(socket.AF_UNIX)
        self.abs.bind("\0" + self.abstract)
        self.abs.listen(1024)
        self.abs.setblocking(False)

    def reached(self) -> dict[str, int]:
        counts = {"stream": 0, "dgram": 0, "abstract": 0}
        for name, sock in (("stream", self.stream), ("abstract", self.abs)):
            try:
                while True:
                    sock.accept()[0].close()
                    counts[name] += 1
            except BlockingIOError:
                pass
        try:
            while True:
                self.dgram.recv(65536)
                counts["dgram"] += 1
        except BlockingIOError:
            pass
        return counts

    def close(self) -> None:
        for sock in (self.stream, self.dgram, self.abs):
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def host() -> Iterator[Host]:
    sockets = Host()
    try:
        yield sockets
    finally:
        sockets.close()


# Through the write grant: a symlink to the host's socket, a symlink to its directory, a
# directory swapped for a symlink while the recorder resolves it (a second thread), and the
# legitimate sockets beneath the grant, which must keep working (stream and datagram,
# absolute and relative, and descriptors passed with SCM_RIGHTS).
LINKS = r'''
import json, os, socket, sys, threading
stream, dgram, data = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = exc.errno
os.symlink(stream, data + "/x")
os.symlink(os.path.dirname(stream), data + "/dir")
os.symlink(dgram, data + "/logx")
attempt("link", lambda: socket.socket(socket.AF_UNIX).connect(data + "/x"))
attempt("link-dir", lambda: socket.socket(socket.AF_UNIX).connect(data + "/dir/daemon.sock"))
attempt("link-dgram", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", data + "/logx"))
os.chdir(data)
attempt("link-relative", lambda: socket.socket(socket.AF_UNIX).connect("x"))
# Legitimate: a listening socket and a datagram socket beneath the grant.
server = socket.socket(socket.AF_UNIX)
server.bind(data + "/in.sock")
server.listen(64)
attempt("inside", lambda: socket.socket(socket.AF_UNIX).connect(data + "/in.sock"))
attempt("inside-relative", lambda: socket.socket(socket.AF_UNIX).connect("in.sock"))
sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sink.bind(data + "/in.dgram")
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
attempt("inside-dgram", lambda: sender.sendto(b"hello", data + "/in.dgram"))
attempt("inside-sendmsg", lambda: sender.sendmsg([b"he", b"llo2"], [], 0, data + "/in.dgram"))
out["received"] = [sink.recv(100).decode(), sink.recv(100).decode()]
a, b = socket.socketpair()
r, w = os.pipe()
socket.send_fds(a, [b"fd"], [w])
msg, fds, _, _ = socket.recv_fds(b, 10, 1)
os.write(fds[0], b"through")
out["scm_rights"] = os.read(r, 10).decode()
# A blocking send to a full socket beneath the grant waits (it does not fail with EAGAIN)
# while another thread of the program drains it: the recorder must not block meanwhile.
full = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
full.bind(data + "/full")
sender.connect(data + "/full")
sender.setblocking(False)
try:
    while True:
        sender.sendto(b"f", data + "/full")
except BlockingIOError:
    pass
sender.setblocking(True)
def drain():
    import time
    time.sleep(0.2)
    full.setblocking(False)
    try:
        while True:
            full.recv(10)
    except BlockingIOError:
        pass
threading.Thread(target=drain).start()
attempt("blocking-full", lambda: sender.sendto(b"last", data + "/full"))
# A directory beneath the grant swapped with a symlink to the host's directory meanwhile.
os.mkdir(data + "/real")
os.symlink(os.path.dirname(stream), data + "/fake")
stop = False
def swap():
    while not stop:
        try:
            os.rename(data + "/fake", data + "/swap")
        except OSError:
            pass
        try:
            os.rename(data + "/swap", data + "/fake")
            os.rename(data + "/real", data + "/swap")
            os.rename(data + "/swap", data + "/real")
        except OSError:
            pass
t = threading.Thread(target=swap, daemon=True)
t.start()
for _ in range(300):
    try:
        socket.socket(socket.AF_UNIX).connect(data + "/swap/daemon.sock")
    except OSError:
        pass
stop = True
# Its private tmpfs (${tmpdir}) is in its view: a socket there works. A part of the grant
# the view hides (filesystem.hide) is not, directly or through a relative link inside.
own = socket.socket(socket.AF_UNIX)
own.bind(os.environ["TMPDIR"] + "/own.sock")
own.listen(4)
attempt("tmpfs", lambda: socket.socket(socket.AF_UNIX).connect(os.environ["TMPDIR"] + "/own.sock"))
hidden = socket.socket(socket.AF_UNIX)
hidden.bind(data + "/covered/h.sock")
hidden.listen(4)
os.symlink("covered/h.sock", data + "/to-covered")
attempt("hidden", lambda: socket.socket(socket.AF_UNIX).connect(data + "/covered/h.sock"))
attempt("hidden-link", lambda: socket.socket(socket.AF_UNIX).connect(data + "/to-covered"))
os.symlink("in.sock", data + "/to-in")
attempt("inside-link", lambda: socket.socket(socket.AF_UNIX).connect(data + "/to-in"))
print("RESULT " + json.dumps(out), flush=True)
'''


def test_a_symlink_in_a_write_grant_reaches_no_host_socket(tmp_path: Path, host: Host) -> None:
    """Attack: the learned program made `<datadir>/x -> /var/tmp/.../daemon.sock` (and a link
    to its directory) and connected to it; the recorder checked the path as a string and its
    connect followed the link to the host's daemon (went through before 12-06). Now the path
    is resolved beneath the grant's descriptor (openat2 RESOLVE_BENEATH: no symlink or ".."
    leads out, and a directory swapped meanwhile neither), the socket is reached through its
    O_PATH descriptor, and a way out answers ENOENT as the policy's view would not show it.
    Sockets beneath the grant still work (stream, datagram, relative, SCM_RIGHTS)."""
    data = tmp_path / "data"
    (data / "covered").mkdir(parents=True)
    policy = tmp_path / "hides.toml"
    policy.write_text(PROGRAM_POLICY.read_text().replace("#:schema ../policy.schema.json\n", "")
                      .replace('name = "examples/program"', 'name = "hides"')
                      .replace('tmpfs = ["${tmpdir}"]', 'tmpfs = ["${tmpdir}"]\nhide = ["${datadir}/covered"]'))
    got = learn(str(policy), data, tmp_path / "l.toml", LINKS, host.stream_path, host.dgram_path, str(data))
    program = got["program"]
    assert host.reached() == {"stream": 0, "dgram": 0, "abstract": 0}, program
    for name in ("link", "link-dir", "link-dgram", "link-relative", "hidden", "hidden-link"):
        assert program[name] != "ok", (name, program)
    for name in ("inside", "inside-relative", "inside-dgram", "inside-sendmsg", "blocking-full", "tmpfs",
                 "inside-link"):
        assert program[name] == "ok", (name, program)
    assert program["link"] == program["link-dir"] == program["link-dgram"] == 2        # ENOENT
    assert program["received"] == ["hello", "hello2"]
    assert program["scm_rights"] == "through"


# Datagrams with an address, straight to the host's datagram socket (sendto, sendmsg,
# sendmmsg), then the races: a second thread flips the message's address between none and
# the host's while the first sends on a socket connected beneath the grant, and one that
# swaps the descriptor (dup2) between an inet socket and a unix datagram one.
DATAGRAMS = r'''
import ctypes, json, os, socket, struct, sys, threading
dgram, data = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = exc.errno
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
attempt("sendto", lambda: s.sendto(b"x", dgram))
attempt("sendmsg", lambda: s.sendmsg([b"x"], [], 0, dgram))
# sendmmsg: two messages to the host's socket.
addr = struct.pack("<H", socket.AF_UNIX) + dgram.encode() + b"\0"
abuf = ctypes.create_string_buffer(addr, len(addr))
payload = ctypes.create_string_buffer(b"mm")
iov = (ctypes.c_uint64 * 2)(ctypes.addressof(payload), 2)
hdr = struct.pack("<QI4xQQQQi4xI4x", ctypes.addressof(abuf), len(addr), ctypes.addressof(iov), 1, 0, 0, 0, 0)
vec = ctypes.create_string_buffer(hdr * 2, len(hdr) * 2)
n = libc.sendmmsg(s.fileno(), vec, 2, 0)
out["sendmmsg"] = n if n >= 0 else -ctypes.get_errno()
# The race on the message: msg_name NULL when read, the host's address when sent.
sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sink.bind(data + "/sink")
sink.setblocking(False)
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
c.connect(data + "/sink")
msg = ctypes.create_string_buffer(56)
struct.pack_into("<QI4xQQQQi4x", msg, 0, 0, 0, ctypes.addressof(iov), 1, 0, 0, 0)
stop = False
def flip():
    i = 0
    while not stop:
        struct.pack_into("<QI", msg, 0, *((0, 0), (ctypes.addressof(abuf), len(addr)))[i & 1])
        i += 1
threading.Thread(target=flip, daemon=True).start()
for _ in range(500):
    libc.sendmsg(c.fileno(), msg, 0x40)   # MSG_DONTWAIT: a full host queue must not block
    try:
        while True:
            sink.recv(10)
    except BlockingIOError:
        pass
stop = True
# The race on the descriptor: an inet socket when looked at, a unix datagram one when sent.
inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
target = os.dup(inet.fileno())
stop = False
def swap():
    i = 0
    while not stop:
        os.dup2((inet, unix)[i & 1].fileno(), target)
        i += 1
threading.Thread(target=swap, daemon=True).start()
for _ in range(500):
    libc.sendto(target, payload, 2, 0x40, abuf, len(addr))
stop = True
print("RESULT " + json.dumps(out), flush=True)
'''


def test_datagrams_reach_no_host_socket_outside_the_grants(tmp_path: Path, host: Host) -> None:
    """Attack: sendto/sendmsg/sendmmsg with the address of a host datagram socket outside
    every grant (/dev/log, the journal, /run/systemd/notify in real life) were recorded and let
    through (went through before 12-06). Now every send that can carry an address is made by
    the recorder, with the address and the bytes read once; outside the grants it answers
    ENOENT as the policy's view would. A second thread flipping the address, or dup2 swapping
    the descriptor, reaches nothing either."""
    data = tmp_path / "data"
    data.mkdir()
    got = learn("examples/program", data, tmp_path / "l.toml", DATAGRAMS, host.dgram_path, str(data))
    program = got["program"]
    assert host.reached() == {"stream": 0, "dgram": 0, "abstract": 0}, program
    assert program["sendto"] != "ok" and program["sendmsg"] != "ok", program
    assert program["sendmmsg"] < 0, program
    seen = got["report"]["observation"]            # type: ignore[index]
    assert {"family": "unix", "address": host.dgram_path} in seen["connect"], seen["connect"]  # sendto too


ABSTRACT = r'''
import json, socket, sys
name = sys.argv[1]
out = {}
try:
    socket.socket(socket.AF_UNIX).connect("\0" + name)
    out["connect"] = "ok"
except OSError as exc:
    out["connect"] = exc.errno
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", "\0" + name)
    out["sendto"] = "ok"
except OSError as exc:
    out["sendto"] = exc.errno
# Its own abstract socket, in the namespace it sees.
own = socket.socket(socket.AF_UNIX)
own.bind("\0" + name + "-own")
own.listen(4)
try:
    socket.socket(socket.AF_UNIX).connect("\0" + name + "-own")
    out["own"] = "ok"
except OSError as exc:
    out["own"] = exc.errno
print("RESULT " + json.dumps(out), flush=True)
'''


def test_abstract_sockets_of_the_host_are_out_of_reach(tmp_path: Path, host: Host) -> None:
    """Attack: a policy with the host's network namespace (node.toml's `net = false`) and
    `scopes.abstract_unix_socket = true`: enforced, Landlock's scope refuses an abstract
    socket made outside the component (EPERM); while learning, Landlock is off and the recorder
    connected the host's abstract socket (X11's @/tmp/.X11-unix/X0, a D-Bus bus) as asked
    (went through before 12-06). Now the recorder answers EPERM, and lets through the
    component's own abstract socket, as the scope does. With a network namespace of its own
    (examples/program) the host's abstract sockets are not there at all."""
    data = tmp_path / "data"
    data.mkdir()
    policy = tmp_path / "hostnet.toml"
    policy.write_text(PROGRAM_POLICY.read_text().replace("#:schema ../policy.schema.json\n", "")
                      .replace("net = true", "net = false").replace('name = "examples/program"', 'name = "hostnet"'))
    got = learn(str(policy), data, tmp_path / "l.toml", ABSTRACT, host.abstract)
    assert host.reached() == {"stream": 0, "dgram": 0, "abstract": 0}, got["program"]
    assert got["program"]["connect"] == 1 and got["program"]["sendto"] == 1, got["program"]  # EPERM
    seen = got["report"]["observation"]            # type: ignore[index]
    assert {"family": "unix", "address": "@" + host.abstract} in seen["connect"], seen["connect"]
    netns = learn("examples/program", data, tmp_path / "l2.toml", ABSTRACT, host.abstract)
    assert host.reached()["abstract"] == 0
    assert netns["program"]["connect"] == 111 and netns["program"]["own"] == "ok", netns["program"]  # ECONNREFUSED
    assert got["program"]["own"] == "ok", got["program"]         # its own: as the scope lets it


GROUP_SIGNAL = r'''
import json, os, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.killpg(os.getpgrp(), signal.SIGTERM)
import time
time.sleep(0.3)
out = {"listed": len(os.listdir("/usr/bin")) > 0}
print("RESULT " + json.dumps(out), flush=True)
'''


def test_a_signal_to_the_process_group_does_not_end_the_recorder(tmp_path: Path) -> None:
    """The recorder shares the component's process group: systemd's stop or `kill -TERM
    -PGID` (here the program itself) killed it first, and the component's every syscall then
    failed (ENOSYS: no listener), so a node under -sandboxlearn hung in its shutdown
    (test_multiprocess's group-SIGTERM test timed out in a learning run before 12-06)."""
    data = tmp_path / "data"
    data.mkdir()
    got = learn("examples/program", data, tmp_path / "l.toml", GROUP_SIGNAL)
    assert got["program"] == {"listed": True}
    seen = got["report"]["observation"]            # type: ignore[index]
    assert "kill" in seen["syscalls"] and "getdents64" in seen["syscalls"], seen["syscalls"]
    assert not seen["errors"], seen["errors"]


KILL_RECORDER = r'''
import os, signal, socket, sys, time
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/comm").read().strip() == "learn-recorder":
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
time.sleep(0.2)
socket.socket(socket.AF_UNIX).connect(sys.argv[1])
'''


def test_killing_the_recorder_lets_nothing_through(tmp_path: Path, host: Host) -> None:
    """The program runs as the recorder's user and may kill it (SIGKILL cannot be ignored).
    A filter whose listener is gone answers every syscall ENOSYS: the program can do nothing
    more (not even exit cleanly), and reaches no socket."""
    data = tmp_path / "data"
    data.mkdir()
    result = subprocess.run([TOOL, "learn", "--policy", "examples/program", "--datadir", str(data), "--out",
                             str(tmp_path / "l.toml"), "--json", "--quiet", "--", "/usr/bin/python3", "-c",
                             KILL_RECORDER, host.stream_path], capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["observation"]["syscalls"].get("kill") == 1
    assert report["program_status"] != 0
    assert host.reached() == {"stream": 0, "dgram": 0, "abstract": 0}
