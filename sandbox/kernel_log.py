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


def seccomp_kill(pid: int, wait: float = 0.5) -> str | None:
    """"NAME (number N)" of the syscall that got `pid` killed by its filter ("#N (number N)"
    for a number libseccomp cannot name), if the kernel log says so and may be read; None
    otherwise. The kernel's audit thread writes the record
    a moment after the kill: it is looked for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        found = _search(pid)
        if found is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if found is None:
        return None
    from .seccomp import syscall_name      # libseccomp only once there is a number to name
    return f"{syscall_name(found)} (number {found})"


def _search(pid: int) -> int | None:
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
