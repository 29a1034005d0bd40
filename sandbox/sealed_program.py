"""A compiled program's image in a sealed memfd of mode 0111, to be exec'd from there.

The kernel starts a program it cannot read for its own uid (mode 0111) not dumpable, so no
process of that uid can attach to it with ptrace, or read or write its memory, before it
confines itself (an exec from the installed file made it dumpable again until its own first
steps). The seals keep the image what was read from the installation. Used by the pid
namespace's waiter (pidns.py) and the denial log's compiled monitor (denial_log.py).
"""

from __future__ import annotations

import errno
import fcntl
import os

#: Linux 6.3's MFD_EXEC: executable even where vm.memfd_noexec defaults to no exec.
_MFD_EXEC = 0x10
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def sealed_fd(name: str, image: bytes) -> int:
    """A close-on-exec memfd named `name` holding `image`, mode 0111 and sealed; raises OSError
    (the caller names its step). The caller closes it after its exec (fexecve by path-less
    `os.execve(fd, ...)`)."""
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(name, flags | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:          # EINVAL: a kernel before 6.3 (no flag)
            raise
        fd = os.memfd_create(name, flags)
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o111)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
