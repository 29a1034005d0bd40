"""A disk that is full or failing, told apart from a bug: bitcoind's CheckDiskSpace and the
causes of its AbortNode ("Disk space is too low!", "Failed to write ...").

A write that fails because of the disk is not the fault of whoever asked for it: not of the
peer that sent the block (never punish it), not of the block (never mark it invalid), not of
the RPC caller. `WriteFailure` names the cause and the file; the node treats one in its chain
state as fatal (stops cleanly, as bitcoind's AbortNode), a wallet answers its RPC with a
wallet error. `write_failure_cause` recognises the errors that mean "the disk": SQLite's
SQLITE_FULL and SQLITE_IOERR (with its extended codes), and ENOSPC, EDQUOT, EIO, EROFS from the
kernel.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator

#: bitcoind's MIN_DISK_SPACE (src/util/fs_helpers.cpp CheckDiskSpace, 50 MiB): the free space
#: kept in reserve, so that what must still be written after a refusal (the log's error line,
#: SQLite's journal of the transaction that refuses) has room.
MIN_DISK_SPACE: int = 52_428_800

# SQLite primary result codes (sqlite3.h); the extended codes keep them in the low byte.
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14

_ERRNO_CAUSES: dict[int, str] = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only file system",
}


class WriteFailure(Exception):
    """A write to durable storage failed for a cause outside the program (`cause`: "disk
    full", "I/O error", "Disk space is too low!") at `path`. Nothing was written: the
    transaction that failed rolled back whole."""

    #: JSON-RPC error code a caller gets for it (subclasses: the node's -20, a wallet's -4).
    rpc_code: int = -20          # RPC_DATABASE_ERROR

    def __init__(self, cause: str, path: str, detail: str = "") -> None:
        self.cause = cause
        self.path = path
        self.detail = detail
        super().__init__(f"{cause}: {path}" + (f" ({detail})" if detail else ""))

    @property
    def rpc_message(self) -> str:
        """What an RPC caller reads: the cause and the file, no traceback."""
        return f"Error: {self}"


def write_failure_cause(exc: BaseException) -> str | None:
    """"disk full", "I/O error", ... when `exc` is the disk's failure, None when it is not
    (a constraint, a bug, a corrupt file: those keep their own handling)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF
        if primary == _SQLITE_FULL:
            return "disk full"
        if primary == _SQLITE_IOERR:
            return "I/O error"
        if primary == _SQLITE_READONLY:
            return "read-only database"
        if primary == _SQLITE_CANTOPEN:
            return "cannot open file"
        return None
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CAUSES:
        return _ERRNO_CAUSES[exc.errno]
    return None


def as_write_failure(exc: BaseException, failure: type[WriteFailure], path: str) -> WriteFailure | None:
    """`exc` as `failure(cause, path)` when it is the disk's failure (`write_failure_cause`),
    else None: the caller re-raises what it caught."""
    cause = write_failure_cause(exc)
    return None if cause is None else failure(cause, path, str(exc))


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection, path: str, failure: type[WriteFailure]) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on `db`, ROLLBACK on any exception, which is re-raised; the
    disk's refusal (at BEGIN, a statement or COMMIT) as `failure` naming its cause and `path`.
    IMMEDIATE takes the write lock up front. SQLITE_FULL and SQLITE_IOERR may have rolled back
    already, and a ROLLBACK that fails on a failing disk must not hide the error that matters.
    The chain store and the wallet store both write through this."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
    except BaseException as exc:
        translated = as_write_failure(exc, failure, path)
        if translated is not None:
            raise translated from exc
        raise


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`
    (statvfs f_bavail, as bitcoind's fs::space(dir).available)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_disk_space(path: str, additional: int = 0, *, reserve: int = MIN_DISK_SPACE) -> bool:
    """bitcoind's CheckDiskSpace: at least `reserve` + `additional` bytes free at `path`."""
    return free_bytes(path) >= reserve + additional
