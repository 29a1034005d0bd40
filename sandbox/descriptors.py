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
