"""What this kernel offers the sandbox: Landlock ABI, seccomp, namespaces, architecture."""

from __future__ import annotations

import ctypes
import os

from .records import Record, record


@record
class KernelFeatures(Record):
    """Facts about the running kernel that decide how much of a policy can be enforced."""

    release: str
    machine: str
    landlock_abi: int           # 0: no Landlock
    landlock_reason: str        # why there is none, when there is none
    seccomp_filter: bool
    user_namespaces: bool       # the sysctls allow creating one (it may still fail)
    mdwe: bool = False          # PR_SET_MDWE (Linux 6.3)

    def summary(self) -> str:
        """One line for reports and errors."""
        ll = f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else f"no Landlock ({self.landlock_reason})"
        return (f"Linux {self.release} {self.machine}, {ll}, seccomp filter "
                f"{'yes' if self.seccomp_filter else 'no'}, user namespaces "
                f"{'yes' if self.user_namespaces else 'no'}")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


#: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) answers the ABI version.
_CREATE_RULESET_VERSION = 1


def landlock_abi() -> tuple[int, str]:
    """The Landlock ABI version (0 when unavailable) and, if 0, the kernel's reason."""
    from . import syscalls
    # The raw syscall first: the `landlock` package costs a few milliseconds to import (it
    # imports `platform`) on every launch. Only when the answer is an error is the package
    # asked, for its words on why (kernel too old, disabled at boot, ...).
    abi = syscalls.syscall(syscalls.SYS_LANDLOCK_CREATE_RULESET, None, 0,
                           ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi > 0:
        return abi, ""
    from landlock import SyscallError, landlock_abi_version
    try:
        return int(landlock_abi_version()), ""
    except SyscallError as exc:
        return 0, exc.reason or exc.strerror or "unavailable"


def detect() -> KernelFeatures:
    """Probe the running kernel. Cheap: a few /proc reads and one Landlock syscall."""
    abi, reason = landlock_abi()
    seccomp_ok = os.path.exists("/proc/sys/kernel/seccomp/actions_avail")
    max_userns = _read_int("/proc/sys/user/max_user_namespaces")
    unpriv = _read_int("/proc/sys/kernel/unprivileged_userns_clone")
    userns = (max_userns is None or max_userns > 0) and (os.geteuid() == 0 or unpriv != 0)
    return KernelFeatures(os.uname().release, os.uname().machine, abi, reason, seccomp_ok, userns,
                          _has_mdwe())


def _has_mdwe() -> bool:
    """PR_GET_MDWE answers on kernels that know PR_SET_MDWE; reading it changes nothing."""
    from . import syscalls
    try:
        syscalls.prctl(syscalls.PR_GET_MDWE)
        return True
    except OSError:
        return False
