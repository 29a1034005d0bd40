"""Files that an unconfined process opens in a directory a confined one can write.

CleanCoin-node's network datadir is written by the confined node (its chain, its log, its
cookie); on mainnet that is the datadir itself, where CleanCoin.conf lives. What the next,
unconfined start-up opens there by name must not be something the confined node arranged:
a log that is a link (log lines appended to a file of its choosing, as the node's user,
before the sandbox is up), or a conf file it rewrote (sandbox=0 at the next start). What
another process reads there (a cookie) is read with read_small_file: never through a link,
only a regular file, and only as much as the file may hold.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
from collections.abc import Iterator
from typing import BinaryIO, TextIO


class UnsafeFileError(Exception):
    """A file that must not be opened as it is; the message names it and says why."""


class _FileProblem(OSError):
    """An errno, the reason (strerror) and the path (filename), shown as "path: reason",
    without Python's "[Errno N]"."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename else str(self.strerror)


class RefusedFile(_FileProblem):
    """A file read_small_file would not read."""


def read_small_file(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The content of the regular file `path` (at most `limit` bytes) and its status (owner,
    mode), for a process that reads a file in a directory a confined one writes (a cookie in
    the network datadir). The confined side chooses what lies there, so the file is never
    opened through a link (its last component; the directories on the way are the caller's to
    check), a FIFO or device never blocks or is read (opened non-blocking, then refused: only a
    regular file is read), and no more than `limit` + 1 bytes are read, whatever its size (a
    sparse file of 64 GiB costs the confined node no disk). RefusedFile says why; a missing
    file is FileNotFoundError, other failures of open(2) as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFile(errno.ELOOP, "it is a symbolic link, which is not followed", path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(errno.EINVAL, "not a regular file", path)
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RefusedFile(errno.EFBIG, f"larger than {limit} bytes, so it is not read", path)
    return data, info


#: What a cookie file holds: bitcoind's and CleanCoin's (.cookie for RPC, .ipccookie for TCP
#: IPC) are `__cookie__:` and 64 hex digits, on one line.
_COOKIE = re.compile(r"__cookie__:[0-9a-f]{1,256}")
COOKIE_MAX = 1024


def read_cookie(path: str) -> tuple[str, int]:
    """The cookie in `path` (`__cookie__:<hex>`) and the uid that owns the file (the node's,
    which may listen for it), read with read_small_file. A file that holds anything else is
    refused rather than sent as a password: it could be a secret of the reader's, or a
    megabyte the node wants the reader to send back."""
    data, info = read_small_file(path, COOKIE_MAX)
    text = data.decode("ascii", "replace").split("\n", 1)[0].rstrip("\r")
    if not _COOKIE.fullmatch(text):
        raise RefusedFile(errno.EINVAL, "it does not hold a cookie (__cookie__:<hex>), so it is not sent", path)
    return text, info.st_uid


def write_cookie(path: str, text: str) -> os.stat_result:
    """Write the cookie `text` at `path` (0600, through `<path>.tmp` and a rename, as bitcoind)
    and return the written file's status, for remove_own_file at stop. Since 12-07 only where
    no other user could replace it: the path is refused (UnsafeFileError, naming why) when it,
    or a directory on the way, is another user's or writable by others unless sticky
    (conf.refuse_others, the data directory's rule). Before, with -rpccookiefile in a directory
    a group of the attacker's may write, they renamed a cookie of their own over the node's:
    the operator's clients read theirs (and trusted a listener of its owner), and the node
    removed their file at stop. A `<path>.tmp` is removed only when it is a regular file of
    ours with one name (a stale one of a killed run), never another user's; the name is
    checked to be the file written after the rename (ReplacedFile otherwise), and an existing
    cookie is replaced only when it is such a file too (in a sticky directory another user may
    have made it first)."""
    # Here, not at import: the zygote imports this module, not the conf parser (conf_to_protect).
    from .conf import ConfError, refuse_others
    tmp = path + ".tmp"
    for name in (tmp, path):
        try:
            there = os.lstat(name)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(there.st_mode) or there.st_uid != os.geteuid() or there.st_nlink != 1:
            raise UnsafeFileError(f"{name} is in the way of the RPC cookie and is not a stale cookie of this "
                                  f"user (owner uid {there.st_uid}, {there.st_nlink} names), so another user "
                                  "may have put it there: remove it, and keep the cookie in a directory of "
                                  "your own")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    with new_file(tmp, 0o600) as fd:
        # Checked on the file made (a sticky directory on the way is fine once it holds a file
        # of ours); refused, new_file removes it again.
        try:
            refuse_others(tmp, "the cookie file")
        except ConfError as exc:
            raise UnsafeFileError(str(exc).replace(tmp, path)) from None
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        made = os.fstat(fd)
    os.replace(tmp, path)
    if not _names(path, made):
        raise ReplacedFile(errno.EEXIST, "it was replaced as it was written", path)
    return made


def remove_own_file(path: str, made: os.stat_result) -> bool:
    """Remove `path` when it is still the file `made` describes (a cookie at stop); a file
    someone else put under the name is left alone. Whether it was removed."""
    if not _names(path, made):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


class ReplacedFile(_FileProblem):
    """new_file's file no longer has its name: something else was renamed over it (or
    the name removed) while it was written, by a user who can write its directory."""


@contextlib.contextmanager
def new_file(path: str | os.PathLike[str], mode: int = 0o600) -> Iterator[int]:
    """The descriptor of `path`, created here, for writing a file an operator names (a
    wallet's backup or dump) in a directory others may write: a shared group directory,
    /tmp. Whatever lies there (a file, a link even to a missing file, a FIFO) is never opened:
    FileExistsError (O_CREAT | O_EXCL, O_NOFOLLOW). The caller writes through the descriptor
    only; nothing opens the name a second time, so a file another user renames over it after
    its creation gets none of what is written. The mode is `mode` less the umask, never more.
    When the block ends the file is fsync'ed and the name must still be this file:
    ReplacedFile otherwise (what was written went to the file we created, which the other
    user cannot read, but the caller must not report a file that is gone). A block that fails
    (a full disk) leaves no partial file under the name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        made = os.fstat(fd)
        try:
            yield fd
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, 0)
            if _names(path, made):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
    finally:
        os.close(fd)
    if not _names(path, made):
        raise ReplacedFile(errno.EEXIST, "it was replaced while it was written (another user "
                           "can write its directory); the copy made is not under that name", str(path))


def write_new_file(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, mode: int = 0o600) -> None:
    """`data` as the new file `path`, written as `new_file` says."""
    with new_file(path, mode) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def _names(path: str | os.PathLike[str], made: os.stat_result) -> bool:
    """Whether `path` (not followed) is the file `made` describes."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino)


def open_log(path: str) -> TextIO:
    """`path` opened for appending (created 0666 less the umask: 0600 unless -sysperms), never through a link: a
    link, anything but a regular file, a file another user owns (since 12-07: one they made
    first where -debuglogfile points, in a shared directory, would let them read the log as
    it is written) or one with a second name (a hard link: the lines would go to a file of
    the link maker's choosing) is an UnsafeFileError."""
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the start (it fails with ENXIO).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeFileError(f"{path} is a symbolic link: CleanCoin does not follow links in its "
                                  "data directory, which a confined process can write (remove it, or "
                                  "log elsewhere with -debuglogfile=<absolute path>)") from None
        raise UnsafeFileError(f"cannot open {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode)
               else f"is owned by uid {info.st_uid}, another user, who could read what is logged (remove it, "
                    "or log elsewhere)" if info.st_uid not in (os.geteuid(), 0)
               else f"has {info.st_nlink} names (hard links): remove it, or log elsewhere" if info.st_nlink != 1
               else "")
    if problem:
        os.close(fd)
        raise UnsafeFileError(f"{path} {problem}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def write_pid_file(path: str, pid: int) -> None:
    """Write `pid` into the pid file `path` (`-pid`, bitcoind's: an existing one, a stale file
    of an earlier run, is overwritten), as only a file no other user could have chosen: never
    through a link (its last component), never a FIFO or device (opened non-blocking: a
    FIFO does not hang the start), not a file another user owns (they would choose the pid an
    init script later signals as root) or one with a second name (a hard link to a file of
    ours elsewhere, which the truncation would empty), and not in a directory another user may
    write unless it is sticky (they could rename a file of theirs over it afterwards;
    conf.refuse_others, the data directory's rule, on the way to it). The file is created 0666
    less the umask (0600 unless -sysperms). UnsafeFileError names the file and why; nothing
    existing is truncated before every check has passed, and a file created here for a pid
    file that is then refused is removed again."""
    # Here, not at import: the zygote imports this module, not the conf parser (conf_to_protect).
    from .conf import ConfError, refuse_others
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    created = False
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as exc:
        why = ("it is a symbolic link, which is not followed" if exc.errno == errno.ELOOP
               else "it is a FIFO or device" if exc.errno == errno.ENXIO else exc.strerror)
        raise UnsafeFileError(f"Unable to create the PID file '{path}': {why}") from None
    try:
        info = os.fstat(fd)
        problem = ("it is not a regular file" if not stat.S_ISREG(info.st_mode)
                   else f"it is owned by uid {info.st_uid}, another user" if info.st_uid not in (os.geteuid(), 0)
                   else f"it has {info.st_nlink} names (hard links)" if info.st_nlink != 1 else "")
        if not problem:
            try:
                refuse_others(path, "the PID file")
                if not _names(path, info):
                    problem = "it was replaced while it was being checked"
            except ConfError as exc:
                problem = str(exc)
        if problem:
            if created and _names(path, info):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise UnsafeFileError(f"Unable to create the PID file '{path}': {problem}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{pid}\n".encode("ascii"))
    finally:
        os.close(fd)


def open_own_input(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """`path` opened for reading, as a regular file no other user could have chosen: one that
    is theirs, writable by others, in a directory on the way that others (or a group with
    another member) may write unless it is sticky and the file ours, or reached through a link
    of theirs (conf.refuse_others, the data directory's rule) is an UnsafeFileError naming
    why; they could have renamed a file of their own (a wallet, a dump: their seed) over the
    operator's. Missing, or not a regular file: FileNotFoundError. Opened once, non-blocking
    (a FIFO is refused at once, never read), checked against that descriptor, and read from
    it."""
    # Here, not at import: the zygote imports this module, not the conf parser (conf_to_protect).
    from .conf import ConfError, refuse_others
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileNotFoundError(exc.errno, exc.strerror, str(path)) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
        try:
            refuse_others(os.fspath(path), what)
        except ConfError as exc:
            raise UnsafeFileError(str(exc)) from None
        try:
            checked = os.stat(path)
        except OSError:
            checked = None
        if checked is None or (checked.st_dev, checked.st_ino) != (opened.st_dev, opened.st_ino):
            raise UnsafeFileError(f"{path} was replaced while it was being checked")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def conf_to_protect(conf_path: str, netdatadir: str) -> str | None:
    """The conf file the node's sandbox must keep read-only, creating it (empty, 0600) when it
    is missing, or None when it lies outside the directory the node may write.

    Only `<netdatadir>/CleanCoin.conf` (mainnet's default place) is protected there (node.toml
    grants it read-only over the writable datadir); any other conf file inside that directory
    is an UnsafeFileError, since the confined node could rewrite it for its next start.
    """
    if not conf_path:
        return None
    # Here, not at import: ipc/auth reads cookies with this module, and the zygote, which
    # imports ipc, must not import the conf parser (tests/test_node_startup.py).
    from .conf import CONF_FILENAME
    real, root = os.path.realpath(conf_path), os.path.realpath(netdatadir)
    if os.path.commonpath([real, root]) != root:
        return None
    if real != os.path.join(root, CONF_FILENAME):
        raise UnsafeFileError(f"the conf file {conf_path} lies in {netdatadir}, which the confined node "
                              f"can write, so it could change its own settings for its next start; "
                              f"keep it outside, or name it {CONF_FILENAME} there (which the node's "
                              "sandbox keeps read-only)")
    _create_empty(real)
    if os.path.islink(real) or not os.path.isfile(real):
        raise UnsafeFileError(f"{real} is not a regular file")
    return real


def _create_empty(path: str) -> None:
    """Create `path` empty (0600) unless something is there already, never through a link:
    done before the node is confined, so that an attacker in it cannot be the one who creates
    the file the node's view then keeps read-only."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeFileError(f"cannot create an empty {path}: {exc.strerror}") from None


#: The record of what the sandboxes of CleanCoin-node and its wallet process refused, in the
#: network datadir (docs/audit.md, section 6).
SANDBOX_LOG = "sandbox.log"
#: Space kept allocated beyond sandbox.log's end: the confined node may fill the filesystem it
#: shares with the log (its chain lives there), and the monitors' lines must still find room.
#: 8 MiB is about 6.7 hours of refusals at the monitors' top rate (120 lines a minute, about
#: 175 bytes each), against the chain's gigabytes; 1 MiB (about 50 minutes) was too little for
#: a node filled up overnight.
SANDBOX_LOG_RESERVE = 8 << 20
_FALLOC_FL_KEEP_SIZE = 1


def _reserve_space(fd: int, offset: int, length: int) -> str | None:
    """Allocate `length` bytes from `offset` without changing the file's size; None, or why not.
    Appends then go into blocks the file already owns, whatever else fills the filesystem.
    Through ctypes: os.posix_fallocate has no mode argument, and without FALLOC_FL_KEEP_SIZE
    the reserve would be part of the log, as zeros."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def sandbox_log(netdatadir: str) -> str:
    """`<netdatadir>/sandbox.log`, created (empty, 0600) when missing: the file the denial
    monitors of CleanCoin-node and its wallet process append to, which node.toml keeps
    read-only in the node's view. Not debug.log: the node writes its own log and could erase
    the record of what it tried. Created here, before the node is confined, so that the node is
    never the one to create it; a link, anything but a regular file, or a file with a second
    name (a hard link: the other name would not be protected) is an UnsafeFileError.

    SANDBOX_LOG_RESERVE bytes beyond its end are kept allocated for it (topped up at every
    start); where the filesystem cannot do that, a warning says that a full disk would cost
    refusal lines (the monitors count and report the lines they could not write)."""
    path = os.path.join(os.path.realpath(netdatadir), SANDBOX_LOG)
    _create_empty(path)
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError(f"{path} is not a regular file (remove it: CleanCoin-node logs its "
                              "sandbox's refusals there)")
    if info.st_nlink != 1:
        raise UnsafeFileError(f"{path} has {info.st_nlink} names (hard links): its other names "
                              "would not be protected from the confined node; remove it")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeFileError(f"cannot open {path}: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise UnsafeFileError(f"{path} was replaced while it was being opened")
        problem = _reserve_space(fd, opened.st_size, SANDBOX_LOG_RESERVE)
    finally:
        os.close(fd)
    if problem is not None:
        logging.getLogger("cleancoin.sandbox").warning(
            "%s: no space could be kept for the record of refusals (%s): if its filesystem fills "
            "up, refusals are still refused but their lines are lost (counted once there is room)",
            path, problem)
    return path


def log_descriptors() -> set[int]:
    """The descriptors of the "cleancoin" logger's streams (opened by open_log before
    confinement): a process that confines itself keeps them, and only them of its files."""
    keep: set[int] = set()
    for handler in logging.getLogger("cleancoin").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            with contextlib.suppress(OSError, ValueError):
                keep.add(stream.fileno())
    return keep
