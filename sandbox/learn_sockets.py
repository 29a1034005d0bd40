"""Where a learning run's sockets may reach: the recorder's connect and address-carrying sends.

A learning run's view is the host's whole tree (read-only) with the policy's grants on top
(`learn_plan`). Reaching a socket needs no write access to the mount, so the recorder makes
every connect(2), and every send that can carry an address (sendto with one, sendmsg,
sendmmsg), itself: on a copy of the program's descriptor (pidfd_getfd), with the address and
the bytes read once from the program's memory. Letting the syscall through after a check
(FLAG_CONTINUE) would let a second thread change the address, or dup2 another socket onto the
descriptor, before the kernel reads them (seccomp_unotify(2)).

Where it may reach (`Reach.unix_address`), as the policy's enforced view would answer:

- a named unix socket only beneath one of the policy's grants, resolved from the grant's own
  descriptor (opened when the recorder starts, before the program runs) with openat2's
  RESOLVE_BENEATH, so that no symlink and no directory swapped meanwhile leads out of it, and
  reached through that O_PATH descriptor (/proc/self/fd/N: exactly that inode); elsewhere
  ENOENT, as the view would not show it;
- an abstract unix socket: refused with EPERM (Landlock's scope answer) when the policy scopes
  abstract sockets and keeps the host's network namespace; in a namespace of its own every
  abstract socket there is the component's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
from dataclasses import dataclass, field

from . import notify, syscalls

_RESOLVE_BENEATH = 0x08
#: The most bytes one send made by the recorder reads from the program: a datagram is at most
#: about 200 KiB (net.core.wmem_max); a stream send is cut here (a short write).
MAX_SEND = 1 << 20
_MAX_IOV = 1024               # UIO_MAXIOV
_MAX_CONTROL = 64 * 1024
_MSGHDR = struct.Struct("<QI4xQQQQi4x")      # name, namelen, iov, iovlen, control, controllen, flags
MSG_DONTWAIT, MSG_NOSIGNAL = 0x40, 0x4000
_SCM_RIGHTS = 1
_SCM_MAX_FD = 253


class Refused(Exception):
    """The syscall is answered with this errno and not made."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.code = code


@dataclass
class Reach:
    """The grants' descriptors and the abstract-socket rule of one learning run."""

    tops: tuple[str, ...]
    abstract_scoped: bool = False
    hidden: tuple[str, ...] = ()
    grants: list[tuple[str, int]] = field(default_factory=list)

    def open(self) -> None:
        """Open every grant (O_PATH) now: the program has not run yet, so the path strings
        to the grants still mean what the view meant (a write grant above another could
        later rename a directory on the way)."""
        for top in self.tops:
            if top == "/":
                continue
            try:
                self.grants.append((os.path.normpath(top), os.open(top, os.O_PATH | os.O_CLOEXEC)))
            except OSError:
                continue
        self.grants.sort(key=lambda grant: -len(grant[0]))

    @property
    def everywhere(self) -> bool:
        """No view (a plan without a mount namespace): the policy shows every path."""
        return "/" in self.tops

    def unix_address(self, raw: bytes, cwd: str | None) -> tuple[bytes, int | None]:
        """The address to use for the unix address `raw`, and a descriptor the caller closes
        after the syscall (the O_PATH one the address names), or Refused."""
        name = raw[2:]
        if not name:
            return raw, None                   # autobind / unnamed: nothing to reach
        if name[:1] == b"\0":
            refusal = _abstract_refusal(name[1:]) if self.abstract_scoped else None
            if refusal is not None:
                raise Refused(refusal)
            return raw, None
        text = os.fsdecode(name.split(b"\0")[0])
        if not text:
            raise Refused(errno.ENOENT)
        if not text.startswith("/"):
            if cwd is None:
                raise Refused(errno.ENOENT)
            text = os.path.join(cwd, text)
        path = os.path.normpath(text)
        if self.everywhere:
            encoded = os.fsencode(path)
            if len(encoded) > 107:
                raise Refused(errno.ENAMETOOLONG)
            return struct.pack("<H", socket.AF_UNIX) + encoded + b"\0", None
        for top, top_fd in self.grants:
            if path == top or path.startswith(top.rstrip("/") + "/"):
                rel = os.path.relpath(path, top)
                break
        else:
            raise Refused(errno.ENOENT)        # what the policy's view answers: not there
        try:
            fd = (os.dup(top_fd) if rel == "." else
                  syscalls.openat2(top_fd, rel, os.O_PATH | os.O_CLOEXEC,
                                   _RESOLVE_BENEATH | syscalls.RESOLVE_NO_MAGICLINKS))
        except OSError as exc:
            # EXDEV: a symlink or ".." leads out of the grant; ELOOP, EAGAIN: the same, raced.
            raise Refused(exc.errno if exc.errno in (errno.EACCES, errno.ENOTDIR, errno.ENAMETOOLONG)
                          else errno.ENOENT) from None
        try:
            if self.hidden:
                # Where it really is (beneath the grant, but a relative symlink inside it may
                # lead into a part the policy's view covers, such as node.toml's wallets/).
                real = os.readlink(f"/proc/self/fd/{fd}")
                if any(real == top or real.startswith(top.rstrip("/") + "/") for top in self.hidden):
                    raise Refused(errno.ENOENT)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise Refused(errno.ECONNREFUSED)          # what connect(2) answers for a file
        except BaseException:
            os.close(fd)
            raise
        return struct.pack("<H", socket.AF_UNIX) + f"/proc/self/fd/{fd}".encode() + b"\0", fd


def _abstract_refusal(name: bytes) -> int | None:
    """How Landlock's abstract-unix scope would answer a connect or send to the abstract
    socket `name` (without its leading NUL); None to let it be made. The scope lets the
    component reach its own sockets only: every socket of the network namespace named so must
    be held by a process of the component's user namespace (the recorder's). Read from
    /proc/net/unix, which prints a NUL in a name as "@" and prints every other byte as it is:
    a name with "@", a NUL, a space or a byte that is not printable ASCII could be mistaken
    for another, and is not the component's here (refused)."""
    if not name or any(b <= 0x20 or b >= 0x7F or b == 0x40 for b in name):
        return errno.EPERM
    printed = "@" + name.decode("ascii")
    try:
        with open("/proc/net/unix", encoding="ascii", errors="replace") as table:
            # Accepted connections carry their listener's name too: all must be the component's.
            wanted = {f"socket:[{f[6]}]" for f in (line.split() for line in table) if len(f) == 8 and f[7] == printed}
        own = os.readlink("/proc/self/ns/user")
    except OSError:
        return errno.EPERM
    if not wanted:
        return errno.ECONNREFUSED               # no such socket: the kernel's answer
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/user") != own:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    wanted.discard(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    continue
        except OSError:
            continue                            # another user's process, or gone
        if not wanted:
            return None
    return errno.EPERM


def family(raw: bytes) -> int:
    return struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else -1


def thread_group(tid: int) -> int:
    """The process (thread group) of thread `tid`."""
    with open(f"/proc/{tid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Tgid:"))


def program_socket(tid: int, fd: int) -> int:
    """A copy of descriptor `fd` of the process that thread `tid` belongs to."""
    try:
        pidfd = os.pidfd_open(thread_group(tid))
        try:
            return notify.pidfd_getfd(pidfd, fd)
        finally:
            os.close(pidfd)
    except (OSError, StopIteration):
        raise Refused(errno.EBADF) from None


def read_exact(tid: int, address: int, size: int) -> bytes:
    """`size` bytes of the program's memory, or Refused(EFAULT)."""
    if size == 0:
        return b""
    try:
        data = notify.read_memory(tid, address, size)
    except OSError:
        raise Refused(errno.EFAULT) from None
    if len(data) != size:
        raise Refused(errno.EFAULT)
    return data


def write_memory(tid: int, address: int, data: bytes) -> None:
    """Write the program's memory (sendmmsg's msg_len); a failure is the program's affair."""
    try:
        fd = os.open(f"/proc/{tid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.pwrite(fd, data, address)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Message:
    """One message as read from the program, ready to send from the recorder."""

    name: bytes | None
    data: bytes
    control: bytes
    flags: int
    held: list[int] = field(default_factory=list)     # descriptors to close once sent
    truncated: bool = False                           # more bytes than the budget were given

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held.clear()


def read_msghdr(tid: int, address: int, flags: int, budget: int) -> Message:
    """A struct msghdr of the program's, its name, data (at most `budget` bytes) and control
    messages, read once; SCM_RIGHTS descriptors are copied from the program."""
    name_ptr, name_len, iov_ptr, iov_len, control_ptr, control_len, _ = _MSGHDR.unpack(
        read_exact(tid, address, _MSGHDR.size))
    if iov_len > _MAX_IOV or control_len > _MAX_CONTROL or (name_ptr and name_len > 128):
        raise Refused(errno.EINVAL if iov_len > _MAX_IOV or name_len > 128 else errno.ENOBUFS)
    name = read_exact(tid, name_ptr, name_len) if name_ptr and name_len else None
    chunks = []
    truncated = False
    if iov_len:
        vector = read_exact(tid, iov_ptr, 16 * iov_len)
        for i in range(iov_len):
            base, length = struct.unpack_from("<QQ", vector, 16 * i)
            take = min(length, budget)
            truncated = truncated or take < length
            if take:
                chunks.append(read_exact(tid, base, take))
                budget -= take
    control = read_exact(tid, control_ptr, control_len) if control_ptr and control_len else b""
    message = Message(name, b"".join(chunks), b"", flags, truncated=truncated)
    try:
        message.control = _copy_rights(tid, control, message.held)
    except BaseException:
        message.close()
        raise
    return message


def _copy_rights(tid: int, control: bytes, held: list[int]) -> bytes:
    """The control messages with every SCM_RIGHTS descriptor number replaced by the
    recorder's copy of it (the receiver gets the same open files as the program's would)."""
    out = bytearray(control)
    offset = 0
    while offset + 16 <= len(control):
        length, level, kind = struct.unpack_from("<Qii", control, offset)
        if length < 16 or offset + length > len(control):
            break
        if level == socket.SOL_SOCKET and kind == _SCM_RIGHTS:
            if (length - 16) // 4 + len(held) > _SCM_MAX_FD:
                raise Refused(errno.EINVAL)      # as the kernel: at most SCM_MAX_FD a message
            for at in range(offset + 16, offset + length - 3, 4):
                fd = struct.unpack_from("<i", control, at)[0]
                copy = program_socket(tid, fd) if fd >= 0 else fd
                if copy >= 0:
                    held.append(copy)
                struct.pack_into("<i", out, at, copy)
        offset += (length + 7) & ~7
    return bytes(out)


def send(libc: ctypes.CDLL, copy: int, message: Message, address: bytes | None) -> tuple[int, int]:
    """sendmsg(2) of `message` on the recorder's copy `copy`, never blocking and never
    raising SIGPIPE in the recorder: (result, errno)."""
    data = ctypes.create_string_buffer(message.data, len(message.data) or 1)
    iov = (ctypes.c_uint64 * 2)(ctypes.addressof(data), len(message.data))
    name = ctypes.create_string_buffer(address, len(address)) if address else None
    control = ctypes.create_string_buffer(message.control, len(message.control)) if message.control else None
    header = ctypes.create_string_buffer(_MSGHDR.pack(
        ctypes.addressof(name) if name else 0, len(address) if address else 0, ctypes.addressof(iov), 1,
        ctypes.addressof(control) if control else 0, len(message.control), 0))
    result = libc.sendmsg(copy, header, message.flags | MSG_DONTWAIT | MSG_NOSIGNAL)
    return (result, 0) if result >= 0 else (-1, ctypes.get_errno() or errno.EIO)
