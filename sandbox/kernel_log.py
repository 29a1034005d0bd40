"""The syscall behind a SIGSYS death, from the kernel's own log.

A syscall the filter answers with kill_process cannot be shown to a monitor without
weakening the filter (a notification that nobody answers becomes ENOSYS). The kernel logs
each such kill (an audit record of type 1326, SECCOMP, with the pid and the syscall number):
without auditd it goes to the kernel log, which root (or anyone, where dmesg_restrict is 0)
can read from /dev/kmsg. Where it cannot be read, the death is reported without the name.
"""

from __future__ import annotations

import os
import re
import time

_RECORD = re.compile(rb"type=1326 .*?\bpid=(\d+)\b.*?\bsig=31\b.*?\bsyscall=(\d+)\b")


def position() -> int | None:
    """A descriptor of /dev/kmsg past its last record, to hand `seccomp_kill` as `after`
    (None where the log cannot be read). The caller closes it."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        os.close(fd)
        return None
    return fd


def seccomp_kill(pid: int, wait: float = 0.5, after: int | None = None) -> str | None:
    """"NAME (number N)" of the syscall that got `pid` killed by its filter ("#N (number N)"
    for a number libseccomp cannot name), if the kernel log says so and may be read; None
    otherwise. The kernel's audit thread writes the record
    a moment after the kill: it is looked for up to `wait` seconds.

    `after` (from `position()` before the process started) reads only the records written
    since: pids are reused, and the whole log still holds the kill of an earlier process with
    the same pid, which was named instead when this one's record was not written yet (or
    was suppressed). The kernel log's clock is not time.monotonic's, so no timestamp will do."""
    deadline = time.monotonic() + wait
    found = None
    while True:
        hit = _search(pid, after)
        found = hit if hit is not None else found
        if found is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if found is None:
        return None
    from .seccomp import syscall_name      # libseccomp only once there is a number to name
    return f"{syscall_name(found)} (number {found})"


def _search(pid: int, after: int | None = None) -> int | None:
    """The newest kill of `pid` in the log, or among the records `after` has not read yet."""
    if after is not None:
        fd = os.dup(after)     # shares the file position: the next search goes on from here
    else:
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
    found = None
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:        # EPIPE: a record was overwritten while we read; go on
                continue
            if not record:
                break
            match = _RECORD.search(record)
            if match and int(match.group(1)) == pid:
                found = int(match.group(2))
    finally:
        os.close(fd)
    return found
