"""The Landlock step: filesystem paths, TCP ports and scopes.

The `landlock` package gives the filesystem access flags and the ABI version. Its ruleset only
carries filesystem rights, and its error check trusts a possibly stale errno, so the ruleset,
the rules (path and TCP port) and restrict_self are raw syscalls here, as rust-landlock does
them: a ruleset attribute sized for the ABI, with `handled_access_net` (ABI 4) and `scoped`
(ABI 6).
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass

from landlock import FSAccess

from . import paths
from .errors import EnforcementError

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_BY_ABI = {
    1: (FSAccess.EXECUTE | FSAccess.WRITE_FILE | FSAccess.READ_FILE | FSAccess.READ_DIR
        | FSAccess.REMOVE_DIR | FSAccess.REMOVE_FILE | FSAccess.MAKE_CHAR | FSAccess.MAKE_DIR
        | FSAccess.MAKE_REG | FSAccess.MAKE_SOCK | FSAccess.MAKE_FIFO | FSAccess.MAKE_BLOCK
        | FSAccess.MAKE_SYM),
    2: FSAccess.REFER,
    3: FSAccess.TRUNCATE,
    5: FSAccess.IOCTL_DEV,
}

READ = int(FSAccess.READ_FILE | FSAccess.READ_DIR)
WRITE = READ | int(FSAccess.WRITE_FILE | FSAccess.TRUNCATE | FSAccess.REMOVE_DIR
                   | FSAccess.REMOVE_FILE | FSAccess.MAKE_DIR | FSAccess.MAKE_REG
                   | FSAccess.MAKE_SOCK | FSAccess.MAKE_FIFO | FSAccess.MAKE_SYM | FSAccess.REFER)
EXECUTE = READ | int(FSAccess.EXECUTE)
# Rights that make sense on a file rather than a directory; the kernel rejects the others.
FILE_RIGHTS = int(FSAccess.EXECUTE | FSAccess.WRITE_FILE | FSAccess.READ_FILE
                  | FSAccess.TRUNCATE | FSAccess.IOCTL_DEV)


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel knows at this ABI."""
    rights = 0
    for level, flags in _FS_BY_ABI.items():
        if abi >= level:
            rights |= int(flags)
    return rights


def net_rights(abi: int) -> int:
    return ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def right_names(mask: int) -> list[str]:
    """Readable names of filesystem rights, for reports."""
    return [flag.name.lower() for flag in FSAccess if flag.name and mask & int(flag)]


@dataclass(frozen=True)
class LandlockRules:
    """A finished Landlock ruleset, already cut down to this kernel's ABI."""

    abi: int
    handled_fs: int
    handled_net: int
    scoped: int
    paths: tuple[tuple[str, int, bool], ...]     # path, rights, optional
    ports: tuple[tuple[int, int], ...]           # port, rights

    def to_json(self) -> dict[str, object]:
        return {"abi": self.abi, "handled_fs": self.handled_fs, "handled_net": self.handled_net,
                "scoped": self.scoped, "paths": [list(p) for p in self.paths],
                "ports": [list(p) for p in self.ports]}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "LandlockRules":
        return cls(int(data["abi"]), int(data["handled_fs"]), int(data["handled_net"]),  # type: ignore[arg-type]
                   int(data["scoped"]), tuple((str(p), int(r), bool(o)) for p, r, o in data["paths"]),  # type: ignore[union-attr]
                   tuple((int(p), int(r)) for p, r in data["ports"]))  # type: ignore[union-attr]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1   # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _check(result: int, libc: ctypes.CDLL, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise EnforcementError("landlock", f"{what}: {os.strerror(err)}")
    return result


def apply(rules: LandlockRules) -> list[str]:
    """Restrict this process (and its future children) to the ruleset; returns notes.

    Needs no_new_privs or CAP_SYS_ADMIN. Skips optional paths that do not exist.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr = _RulesetAttr(rules.handled_fs, rules.handled_net, rules.scoped)
    # The attribute size tells the kernel which fields we know; older ABIs reject larger ones
    # with E2BIG only if the extra fields are non-zero, so size it to what is used.
    size = 24 if rules.scoped else 16 if rules.handled_net else 8
    notes: list[str] = []
    ruleset = _check(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                  ctypes.c_uint32(0)), libc, "landlock_create_ruleset")
    try:
        for path, rights, optional in rules.paths:
            try:
                # The plan holds real paths: a symlink met now was planted since (ELOOP).
                fd = paths.open_no_symlinks(path)
            except FileNotFoundError:
                if optional:
                    notes.append(f"optional path {path} does not exist")
                    continue
                raise EnforcementError("landlock", f"granted path {path} does not exist") from None
            except OSError as exc:
                if exc.errno == 40:
                    raise EnforcementError("landlock", f"{path} has become a symlink since the "
                                                       "plan was made; it is not followed") from None
                raise
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    rights &= FILE_RIGHTS
                rights &= rules.handled_fs
                if not rights:
                    continue
                rule = _PathBeneathAttr(rights, fd)
                _check(libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule),
                                    ctypes.c_uint32(0)), libc, f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        for port, rights in rules.ports:
            net = _NetPortAttr(rights, port)
            _check(libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, ctypes.byref(net),
                                ctypes.c_uint32(0)), libc, f"landlock_add_rule(port {port})")
        _check(libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), libc,
               "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return notes
