"""When a test can show what another process of the same (unprivileged) uid reaches: the
skips shared by the tests that attach to or open the namespaces of a launched process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def sysctl(name: str) -> str | None:
    """/proc/sys/kernel/`name`, or None where this kernel has no such setting."""
    try:
        return Path("/proc/sys/kernel", name).read_text().strip()
    except OSError:
        return None


#: A second uid (setresuid, so root), unprivileged user namespaces, and no Yama restriction on
#: attaching to a non-descendant: without them the same-uid attack cannot be made here.
SAME_USER_ATTACH = [
    pytest.mark.skipif(os.geteuid() != 0, reason="takes a second uid (setresuid): needs root"),
    pytest.mark.skipif(sysctl("unprivileged_userns_clone") == "0" or sysctl("user/max_user_namespaces") == "0",
                       reason="unprivileged user namespaces are off here"),
    pytest.mark.skipif((sysctl("yama/ptrace_scope") or "0") != "0",
                       reason="Yama lets no process of the same user attach to a non-descendant here"),
]
