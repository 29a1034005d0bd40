"""The file-descriptor step: close everything not on the allowlist before exec."""

from __future__ import annotations

import os


def keep_only(keep: set[int]) -> None:
    """Close every descriptor not in `keep` and make the kept ones survive exec."""
    try:
        # close_range(2) through os.closerange is one syscall per gap, not one per number.
        listed = sorted(int(n) for n in os.listdir("/proc/self/fd"))
        highest = max(listed) if listed else 0
    except OSError:
        highest = os.sysconf("SC_OPEN_MAX")
    start = 0
    for fd in sorted(keep):
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, highest + 1)
    for fd in keep:
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass   # an allowlisted fd the parent did not have open (say, no stdin)


def open_descriptors() -> list[int]:
    """The descriptors open in this process now (not the one the listing itself used)."""
    listed = [int(n) for n in os.listdir("/proc/self/fd")]
    out = []
    for fd in sorted(listed):
        try:
            os.fstat(fd)
        except OSError:
            continue        # the directory descriptor of the listing, closed by now
        out.append(fd)
    return out


def neutralize(keep: set[int], devnull: int) -> list[int]:
    """Point every descriptor not in `keep` (nor `devnull` itself) at /dev/null; returns them.

    For a running process, whose libraries may still hold (and one day close) descriptors
    they opened: closing under them could make a later close hit an unrelated descriptor that
    reused the number. dup2 keeps the number valid and takes away what it led to.
    """
    replaced = [fd for fd in open_descriptors() if fd not in keep and fd != devnull]
    for fd in replaced:
        inheritable = os.get_inheritable(fd)
        os.dup2(devnull, fd, inheritable=inheritable)
    return replaced
