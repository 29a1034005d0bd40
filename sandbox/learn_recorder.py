"""The learning filter's recorder: every syscall the component makes, its paths and sockets.

Runs at the seccomp step of a learning plan (`learn_plan`), in the component itself:

1. it opens its record file (in the learn directory, visible: a learning plan has no
   filesystem view and no Landlock) and writes a header;
2. it forks the recorder, twice so that the recorder is nobody's child the component waits
   for, and which keeps no descriptor of the component's but the record file;
3. it loads the learning filter: every syscall but clone3 (whose ENOSYS is a fixed part of
   every filter) goes to SECCOMP_RET_USER_NOTIF.

The recorder finds the listener among the component's descriptors (/proc/PID/fd, where it
is "anon_inode:seccomp notify"), takes a copy with pidfd_getfd, and answers every
notification with FLAG_CONTINUE after noting the syscall, the paths it names (read through
/proc/TID/mem: a learning plan keeps the component dumpable for that) and the socket
addresses. Connects, sends that can carry an address (sendto with one, sendmsg, sendmmsg) are
the exception: the recorder makes them itself, reaching only the sockets the policy's view
would show (`learn_sockets`), and io_uring_setup is refused. Each new thing is one JSON line,
written at once, so nothing is lost when the recorder is killed with the component's pid namespace; counts follow every second and at the
end. The component's first syscall after the filter waits until the recorder has the listener:
there is no window in which a syscall goes unseen.

Why not ptrace: one tracer per process, which the component's own tools could not use, a stop
at every syscall entry and exit, and a tracer relationship that Landlock's and Yama's ptrace
rules get in the way of; and why not SECCOMP_RET_LOG: it reaches the kernel's audit log only
(root, auditd or dmesg), with no arguments. docs/audit.md has the comparison.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass

from . import helpers, learn_sockets, notify, syscalls
from .errors import EnforcementError
from .plan import Plan

AT_FDCWD = 0xFFFFFF9C          # -100 as the low 32 bits of a register
_O_ACCMODE, _O_CREAT, _O_TRUNC, _O_PATH = 0o3, 0o100, 0o1000, 0o10000000

# x86_64 syscall number -> how to read its path arguments: (dirfd index or None, path
# index, access). Access "open" looks at the flags (index 2 for openat, 1 for open).
_PATHS: dict[int, tuple[tuple[int | None, int, str], ...]] = {
    2: ((None, 0, "open"),), 257: ((0, 1, "open"),), 437: ((0, 1, "openat2"),),
    85: ((None, 0, "create"),), 59: ((None, 0, "exec"),), 322: ((0, 1, "exec"),),
    83: ((None, 0, "create"),), 258: ((0, 1, "create"),), 133: ((None, 0, "create"),),
    259: ((0, 1, "create"),), 87: ((None, 0, "remove"),), 263: ((0, 1, "remove"),),
    84: ((None, 0, "remove"),), 82: ((None, 0, "remove"), (None, 1, "create")),
    264: ((0, 1, "remove"), (2, 3, "create")), 316: ((0, 1, "remove"), (2, 3, "create")),
    86: ((None, 0, "read"), (None, 1, "create")), 265: ((0, 1, "read"), (2, 3, "create")),
    88: ((None, 1, "create"),), 266: ((1, 2, "create"),), 76: ((None, 0, "write"),),
    80: ((None, 0, "lookup"),), 4: ((None, 0, "lookup"),), 6: ((None, 0, "lookup"),),
    262: ((0, 1, "lookup"),), 332: ((0, 1, "lookup"),), 21: ((None, 0, "lookup"),),
    269: ((0, 1, "lookup"),), 439: ((0, 1, "lookup"),), 89: ((None, 0, "lookup"),),
    267: ((0, 1, "lookup"),), 137: ((None, 0, "lookup"),), 191: ((None, 0, "lookup"),),
    192: ((None, 0, "lookup"),), 194: ((None, 0, "lookup"),), 195: ((None, 0, "lookup"),),
    90: ((None, 0, "lookup"),), 268: ((0, 1, "lookup"),), 280: ((0, 1, "lookup"),),
    254: ((None, 1, "read"),),
}
_SOCKET, _SOCKETPAIR, _BIND, _CONNECT, _SENDTO = 41, 53, 49, 42, 44
_SENDMSG, _SENDMMSG, _IO_URING_SETUP, _SYS_TGKILL = 46, 307, 425, 234
#: Sends to full blocking sockets waiting at once (`Pending`); more answer EAGAIN. Each holds
#: descriptors (its socket, its destination, up to 253 passed ones): few, so that a program
#: cannot use up the recorder's descriptors with sends that never complete.
MAX_PENDING = 8
#: Distinct paths and addresses one recorder writes down (with their kind of access).
#: Measured: CleanCoin-node 45 and its wallet 58 over create, mine 101, send, backup, unload
#: and load; `python3 -c ...` about 120. A program that names a new path in every call makes
#: about 30,000 a second.
MAX_DISTINCT = 20_000


def _open_access(flags: int) -> str:
    if flags & _O_PATH:
        return "lookup"
    if flags & _O_CREAT:
        return "create"
    if flags & _O_ACCMODE or flags & _O_TRUNC:
        return "write"
    return "read"


@dataclass
class Pending:
    """A send to a blocking socket that was full: answered when the socket can take it.
    The recorder never blocks (it answers every thread's syscalls, one at a time: a blocking
    send whose reader is another thread of the program would wait for ever)."""

    n_id: int
    tid: int
    copy: int
    message: learn_sockets.Message
    address: bytes | None
    held: int | None

    def attempt(self, libc: ctypes.CDLL) -> tuple[int, int] | None:
        """Send; the answer, or None when the socket is full."""
        result, code = learn_sockets.send(libc, self.copy, self.message, self.address)
        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None
        if code == errno.EPIPE and not self.message.flags & learn_sockets.MSG_NOSIGNAL:
            # The kernel would have sent the program SIGPIPE: the recorder sends with
            # MSG_NOSIGNAL (the signal would be its own), so it sends the signal instead.
            try:
                libc.syscall(_SYS_TGKILL, learn_sockets.thread_group(self.tid), self.tid, signal.SIGPIPE)
            except (OSError, StopIteration):
                pass
        return result, code

    def close(self) -> None:
        self.message.close()
        for fd in (self.copy, self.held):
            if fd is not None:
                os.close(fd)


class _Recorder:
    """The recorder process's state: what it has written, and the counts."""

    def __init__(self, out: int, target: int, reach: learn_sockets.Reach) -> None:
        self.out = out
        self.target = target
        # Where the policy's own view shows unix sockets (its grants, opened already).
        self.reach = reach
        self.pending: dict[int, Pending] = {}
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.seen: set[tuple[object, ...]] = set()
        self.full = False
        self.counts: dict[int, int] = {}
        self.last_counts = 0.0

    def write(self, record: dict[str, object]) -> None:
        data = (json.dumps(record) + "\n").encode()
        while data:
            data = data[os.write(self.out, data):]

    def once(self, key: tuple[object, ...], record: dict[str, object]) -> None:
        if key in self.seen:
            return
        if len(self.seen) >= MAX_DISTINCT:
            # The program chooses its paths: without a bound it fills the record directory
            # (the host's /tmp for `learn`) and the recorder's memory, at about 30,000 new
            # paths a second. Syscalls are still counted; the rest is said once.
            if not self.full:
                self.full = True
                self.write({"t": "error", "error": f"more than {MAX_DISTINCT} distinct paths and addresses: "
                                                   "the rest were not recorded"})
            return
        self.seen.add(key)
        self.write(record)

    def flush_counts(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_counts >= 1.0:
            self.last_counts = now
            self.write({"t": "counts", "counts": {str(k): v for k, v in self.counts.items()}})

    # ---------------------------------------------------------------- one notification

    def _base(self, tid: int, dirfd: int | None, args: tuple[int, ...]) -> str | None:
        fd = AT_FDCWD if dirfd is None else args[dirfd] & 0xFFFFFFFF
        try:
            return os.readlink(f"/proc/{tid}/cwd" if fd == AT_FDCWD else f"/proc/{tid}/fd/{fd}")
        except OSError:
            return None

    def _path(self, tid: int, dirfd: int | None, index: int, args: tuple[int, ...]) -> str | None:
        text = notify.read_string(tid, args[index])
        if text is None:
            return None
        if not text.startswith("/"):
            base = self._base(tid, dirfd, args)
            if base is None or not base.startswith("/"):
                return None          # a pipe, a socket, an anonymous inode: not a path
            text = os.path.join(base, text) if text else base
        return os.path.normpath(text)

    def paths(self, tid: int, nr: int, args: tuple[int, ...]) -> None:
        for dirfd, index, access in _PATHS[nr]:
            path = self._path(tid, dirfd, index, args)
            if path is None:
                continue
            if access == "open":
                access = _open_access(args[2] if nr == 257 else args[1])
            elif access == "openat2":
                how = notify.read_memory(tid, args[2], 8) if args[2] else b""
                access = _open_access(struct.unpack("<Q", how)[0]) if len(how) == 8 else "read"
            if access == "create" and nr in (2, 257, 437) and os.path.lexists(path):
                # O_CREAT on a file that is there already (a shell's `> /dev/full`) writes
                # that file: creating is a right on the directory, and /dev is not what it used.
                access = "write"
            if access == "exec" and nr in (59, 322):
                self._interpreter(path)
            self.once(("path", path, access), {"t": "path", "path": path, "access": access})

    def _interpreter(self, program: str) -> None:
        """An ELF program's interpreter (the dynamic loader) is opened by the kernel for
        execution, where no syscall shows it: read it from the program's PT_INTERP."""
        try:
            with open(program, "rb") as handle:
                head = handle.read(64)
                if head[:4] != b"\x7fELF" or head[4] != 2:
                    return
                phoff, = struct.unpack_from("<Q", head, 32)
                phentsize, phnum = struct.unpack_from("<HH", head, 54)
                handle.seek(phoff)
                table = handle.read(phentsize * phnum)
                for i in range(phnum):
                    kind, _flags, offset, _va, _pa, size = struct.unpack_from("<IIQQQQ", table, i * phentsize)
                    if kind == 3:                      # PT_INTERP
                        handle.seek(offset)
                        interp = handle.read(size).rstrip(b"\0").decode()
                        self.once(("path", interp, "exec"), {"t": "path", "path": interp, "access": "exec"})
        except (OSError, struct.error, UnicodeDecodeError):
            return

    def sockaddr(self, tid: int, kind: str, address: int, length: int) -> dict[str, object] | None:
        """Record a socket address (bind, sendto); the record, or None."""
        if not address or not 2 <= length <= 128:
            return None
        try:
            raw = notify.read_memory(tid, address, length)
        except OSError:
            return None
        return self.note_address(kind, raw)

    def note_address(self, kind: str, raw: bytes) -> dict[str, object]:
        """Record the socket address `raw` (its bytes as the program passed them)."""
        family = struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else -1
        record: dict[str, object] = {"t": kind, "family": family}
        if family in (socket.AF_INET, socket.AF_INET6) and len(raw) >= 4:
            record["port"] = struct.unpack_from(">H", raw, 2)[0]
            if family == socket.AF_INET and len(raw) >= 8:
                record["addr"] = socket.inet_ntop(socket.AF_INET, raw[4:8])
            elif family == socket.AF_INET6 and len(raw) >= 24:
                record["addr"] = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        elif family == socket.AF_UNIX and len(raw) > 2:
            name = raw[2:]
            if name[:1] == b"\0":
                record["abstract"] = name[1:].split(b"\0")[0].decode("utf-8", "replace")
            else:
                record["path"] = name.split(b"\0")[0].decode("utf-8", "surrogateescape")
        key = (kind, *(str(v) for v in record.values()))
        self.once(key, record)
        return record

    def connect(self, tid: int, args: tuple[int, ...]) -> tuple[int, int]:
        """connect(2), made here on the program's own socket (a copy of its descriptor) with
        the address read once: (return value, errno) for the answer.

        Why not let it through: the view of a learning run is the host's whole tree, and
        connect(2) needs no write access to the mount (a read-only bind does not stop it), so
        the program reached every daemon's socket the host has (docker.sock, D-Bus) although
        its policy shows none. Why not check and let through: a second thread could change
        the address (an inet one when read, a unix path when the kernel reads it) or the
        descriptor (dup2) in between. So every connect is made here, a unix socket only
        where the policy's own view would show it (`learn_sockets.Reach`)."""
        length = args[2] & 0xFFFFFFFF
        if not 0 < length <= 128:
            return -1, errno.EINVAL
        raw = learn_sockets.read_exact(tid, args[1], length)
        self.note_address("connect", raw)
        address, held = self._destination(tid, raw)
        try:
            copy = learn_sockets.program_socket(tid, args[0] & 0xFFFFFFFF)
            try:
                buf = ctypes.create_string_buffer(address, len(address))
                if self.libc.connect(copy, buf, len(address)) == 0:
                    return 0, 0
                return -1, ctypes.get_errno() or errno.EINVAL
            finally:
                os.close(copy)
        finally:
            if held is not None:
                os.close(held)

    def _destination(self, tid: int, raw: bytes) -> tuple[bytes, int | None]:
        """The address to use for `raw` (a unix one as the policy's view would resolve it)."""
        if learn_sockets.family(raw) != socket.AF_UNIX:
            return raw, None
        try:
            cwd: str | None = os.readlink(f"/proc/{tid}/cwd")
        except OSError:
            cwd = None
        return self.reach.unix_address(raw, cwd)

    # ---------------------------------------------------------------- sends with an address

    def sendto(self, tid: int, args: tuple[int, ...]) -> tuple[int, int] | Pending:
        """sendto(2) with an address: made here, as connect is (the address and the bytes
        read once). One without an address is let through: the register says so, and no
        other thread can change it."""
        length = args[5] & 0xFFFFFFFF
        if not 0 < length <= 128:
            return -1, errno.EINVAL
        raw = learn_sockets.read_exact(tid, args[4], length)
        self.note_address("sendto", raw)
        size = args[2]
        data = learn_sockets.read_exact(tid, args[1], min(size, learn_sockets.MAX_SEND))
        message = learn_sockets.Message(raw, data, b"", args[3] & 0xFFFFFFFF,
                                        truncated=size > learn_sockets.MAX_SEND)
        return self._send(tid, args[0] & 0xFFFFFFFF, message)

    def sendmsg(self, tid: int, args: tuple[int, ...]) -> tuple[int, int] | Pending:
        """sendmsg(2), every one made here: whether it carries an address is in the program's
        memory, which another thread may change after it is read (FLAG_CONTINUE would then
        send to what the kernel reads)."""
        message = learn_sockets.read_msghdr(tid, args[1], args[2] & 0xFFFFFFFF, learn_sockets.MAX_SEND)
        if message.name is not None:
            self.note_address("sendto", message.name)
        return self._send(tid, args[0] & 0xFFFFFFFF, message)

    def sendmmsg(self, tid: int, args: tuple[int, ...]) -> tuple[int, int]:
        """sendmmsg(2), message by message as sendmsg; never waits (a full socket ends it)."""
        vector, count, flags = args[1], min(args[2] & 0xFFFFFFFF, 1024), args[3] & 0xFFFFFFFF
        budget, sent = learn_sockets.MAX_SEND, 0
        for i in range(count):
            try:
                message = learn_sockets.read_msghdr(tid, vector + 64 * i, flags, budget)
                if message.name is not None:
                    self.note_address("sendto", message.name)
                answer = self._send(tid, args[0] & 0xFFFFFFFF, message, wait=False)
            except learn_sockets.Refused as refused:
                answer = (-1, refused.code)
            assert not isinstance(answer, Pending)
            if answer[1]:
                return (sent, 0) if sent else answer
            learn_sockets.write_memory(tid, vector + 64 * i + 56, struct.pack("<I", answer[0]))
            budget -= answer[0]
            sent += 1
            if budget <= 0:
                break
        return sent, 0

    def _send(self, tid: int, fd: int, message: learn_sockets.Message,
              wait: bool = True) -> tuple[int, int] | Pending:
        held: int | None = None
        try:
            address = None
            if message.name is not None:
                address, held = self._destination(tid, message.name)
            copy = learn_sockets.program_socket(tid, fd)
        except BaseException:
            message.close()
            if held is not None:
                os.close(held)
            raise
        pending = Pending(n_id=0, tid=tid, copy=copy, message=message, address=address, held=held)
        if message.truncated and self._kind(copy) != socket.SOCK_STREAM:
            pending.close()
            return -1, errno.EMSGSIZE            # a datagram larger than MAX_SEND: not cut
        answer = pending.attempt(self.libc)
        if answer is None:
            blocking = not (fcntl.fcntl(copy, fcntl.F_GETFL) & os.O_NONBLOCK
                            or message.flags & learn_sockets.MSG_DONTWAIT)
            if wait and blocking and len(self.pending) < MAX_PENDING:
                return pending               # answered when the socket can take it (`_serve`)
            pending.close()
            return -1, errno.EAGAIN
        pending.close()
        return answer

    @staticmethod
    def _kind(fd: int) -> int:
        try:
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            return -1
        try:
            return probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        finally:
            probe.close()

    def _sendto_or_continue(self, tid: int, args: tuple[int, ...]) -> tuple[int, int] | Pending | None:
        return self.sendto(tid, args) if args[4] else None

    _MADE_HERE = {_CONNECT: connect, _SENDTO: _sendto_or_continue, _SENDMSG: sendmsg, _SENDMMSG: sendmmsg}

    def handle(self, n: notify.Notification) -> tuple[int, int] | Pending | None:
        """Record the syscall; None to let it run as it is, (value, errno) to answer it, or
        a Pending send to answer later."""
        self.counts[n.nr] = self.counts.get(n.nr, 0) + 1
        if self.counts[n.nr] == 1:
            self.write({"t": "syscall", "nr": n.nr})
        try:
            if n.nr in _PATHS:
                self.paths(n.pid, n.nr, n.args)
            elif n.nr in (_SOCKET, _SOCKETPAIR):
                self.once(("socket", n.args[0] & 0xFFFFFFFF, n.args[1] & 0xF),
                          {"t": "socket", "family": n.args[0] & 0xFFFFFFFF, "type": n.args[1] & 0xF})
            elif n.nr == _BIND:
                self.sockaddr(n.pid, "bind", n.args[1], n.args[2])
            elif n.nr in self._MADE_HERE:
                try:
                    answer = self._MADE_HERE[n.nr](self, n.pid, n.args)
                except learn_sockets.Refused as refused:
                    return -1, refused.code
                except Exception:  # noqa: BLE001 - never let a connect or send through unmade
                    return -1, errno.EINVAL
                if isinstance(answer, Pending):
                    answer.n_id = n.id
                return answer
            elif n.nr == _IO_URING_SETUP:
                # Its rings connect and send with no syscall the recorder would see.
                return -1, errno.ENOSYS
        except OSError:
            pass       # the thread is gone, or its memory cannot be read: the syscall is noted
        return None


def _find_listener(target: int, pidfd: int, deadline: float) -> int:
    """Poll the component's descriptors for its new listener; a copy of it."""
    while time.monotonic() < deadline:
        try:
            names = os.listdir(f"/proc/{target}/fd")
        except OSError:
            raise EnforcementError("seccomp", "the component is gone") from None
        for name in names:
            try:
                if os.readlink(f"/proc/{target}/fd/{name}") == "anon_inode:seccomp notify":
                    return notify.pidfd_getfd(pidfd, int(name))
            except OSError:
                continue
        time.sleep(0.0005)
    raise EnforcementError("seccomp", "no listener appeared in the component")


def _serve(target: int, out: int, reach: learn_sockets.Reach) -> None:
    """The recorder process: never returns."""
    code = 0
    try:
        # The grants are opened before the program runs (its first syscall waits for us).
        reach.open()
        pidfd = os.pidfd_open(target)
        listener = notify.Listener(_find_listener(target, pidfd, time.monotonic() + 30))
        recorder = _Recorder(out, target, reach)
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)

        def answer(nid: int, result: tuple[int, int]) -> None:
            if result[1]:
                listener.fail(nid, result[1])
            else:
                listener.answer(nid, result[0])

        while True:
            events = poller.poll(1000)
            for fd, mask in events:
                waiting = recorder.pending.get(fd)
                if waiting is not None:
                    # A full socket can take more (or failed): send again, if still asked.
                    result = waiting.attempt(recorder.libc) if listener.still_valid(waiting.n_id) else (-1, 0)
                    if result is not None:
                        poller.unregister(fd)
                        del recorder.pending[fd]
                        waiting.close()
                        if result != (-1, 0):
                            answer(waiting.n_id, result)
                elif mask & select.POLLIN:
                    n = listener.receive()
                    if n is not None:
                        result = recorder.handle(n)
                        if result is None:
                            listener.let_through(n.id)
                        elif isinstance(result, Pending):
                            recorder.pending[result.copy] = result
                            poller.register(result.copy, select.POLLOUT)
                        else:
                            answer(n.id, result)
                elif mask & (select.POLLHUP | select.POLLERR):
                    recorder.flush_counts(force=True)
                    recorder.write({"t": "end"})
                    os._exit(0)
            recorder.flush_counts()
    except BaseException as exc:  # noqa: BLE001 - the recorder says why it stopped, then goes
        try:
            os.write(out, (json.dumps({"t": "error", "error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
        except OSError:
            pass
        code = 1
    os._exit(code)


def record_path(directory: str, policy: str, pid: int) -> str:
    safe = policy.replace("/", "-")
    return os.path.join(directory, f"{safe}.{pid}.{os.urandom(3).hex()}.jsonl")


def open_record(plan: Plan) -> tuple[int, str]:
    """Create this process's record file; its descriptor and path. Called before the
    namespaces and the view: the record directory is not in a learning component's view
    (`learn_plan`), so this descriptor, handed to the recorder alone, is the only way to it."""
    path = record_path(str(plan.learn["dir"]), plan.policy, os.getpid())
    try:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_APPEND
                      | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise EnforcementError("learning records", f"cannot create {path}: {exc.strerror}") from None
    return out, path


def start(plan: Plan, entry: str, out: int, path: str) -> tuple[str, helpers.Helper]:
    """Fork the recorder and load the learning filter (the seccomp step of a learning plan).
    `out` is the record file (`open_record`); the recorder takes it and this process closes it.
    Returns the note for the report and the recorder's process."""
    header = {"t": "header", "policy": plan.policy, "files": list(plan.files), "entry": entry,
              "pid": os.getpid(), "variables": plan.learn.get("variables", {}), "started": time.time()}
    os.write(out, (json.dumps(header) + "\n").encode())
    try:
        # With Yama's ptrace_scope 1 only an ancestor may read our memory; the recorder is not one.
        syscalls.prctl(syscalls.PR_SET_PTRACER, syscalls.PR_SET_PTRACER_ANY)
    except OSError:
        pass       # no Yama: same-user access is enough
    target = os.getpid()

    def recorder() -> None:
        from . import descriptors
        # Nothing of the component's: its sockets and pipes must close when it does.
        descriptors.keep_only({out})
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        syscalls.set_name("learn-recorder")
        # It shares the component's process group and session: a signal to the whole
        # group (systemd's stop, `kill -TERM -PGID`, a Ctrl-C) killed it before the
        # component, whose every syscall then failed (ENOSYS: no listener) while it
        # shut down. It ends when the component's last descriptor of the listener
        # closes (POLLHUP), or with the component's pid namespace.
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(number, signal.SIG_IGN)
        # The component runs as the same user with no filter while it learns: were the
        # recorder dumpable, the component could ptrace it, or take its record file
        # through /proc/PID/fd or pidfd_getfd, and write what it likes as learned.
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        _serve(target, out, learn_sockets.Reach(tuple(plan.learn.get("sockets", ("/",))),
                                                bool(plan.learn.get("abstract_scoped", False)),
                                                tuple(plan.learn.get("hidden", ()))))

    # Twice, so that the recorder is nobody's child the component waits for (helpers.detached).
    helper = helpers.started(helpers.LEARN_RECORDER, helpers.detached(recorder))
    os.close(out)
    listener = notify.load_with_listener(plan.seccomp_bpf)
    # The recorder takes its own copy; ours must not reach an exec'd program.
    os.set_inheritable(listener, False)
    return (f"learning: every syscall is recorded in {path} and let through; connects and sends "
            "that can carry an address are made by the recorder, to the sockets the policy's view shows"), helper
