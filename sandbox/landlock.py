"""The Landlock step: filesystem paths, TCP ports and scopes.

The `landlock` package's ruleset only carries filesystem rights, and its error check trusts a
possibly stale errno, so the ruleset, the rules (path and TCP port) and restrict_self are raw
syscalls here, as rust-landlock does them: a ruleset attribute sized for the ABI, with
`handled_access_net` (ABI 4) and `scoped` (ABI 6). The filesystem access flags are the
kernel's (include/uapi/linux/landlock.h), written out below rather than taken from the
package's `FSAccess`: importing the package costs every launcher and zygote a few
milliseconds (it imports `platform`), and tests/test_sandbox_startup.py checks the table against it.
"""

from __future__ import annotations

import ctypes
import os
import stat

from . import paths, syscalls
from .errors import EnforcementError
from .records import Record, record

_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# LANDLOCK_ACCESS_FS_*, in the order the `landlock` package's FSAccess lists them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_TRUNCATE = 1 << 14       # ABI 3
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13          # ABI 2
FS_IOCTL_DEV = 1 << 15      # ABI 5
#: Name (as reports spell it) -> flag, in FSAccess's order.
FS_ACCESS: dict[str, int] = {
    "execute": FS_EXECUTE, "write_file": FS_WRITE_FILE, "read_file": FS_READ_FILE,
    "truncate": FS_TRUNCATE, "read_dir": FS_READ_DIR, "remove_dir": FS_REMOVE_DIR,
    "remove_file": FS_REMOVE_FILE, "make_char": FS_MAKE_CHAR, "make_dir": FS_MAKE_DIR,
    "make_reg": FS_MAKE_REG, "make_sock": FS_MAKE_SOCK, "make_fifo": FS_MAKE_FIFO,
    "make_block": FS_MAKE_BLOCK, "make_sym": FS_MAKE_SYM, "refer": FS_REFER,
    "ioctl_dev": FS_IOCTL_DEV,
}

_FS_BY_ABI = {
    1: (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_READ_DIR | FS_REMOVE_DIR | FS_REMOVE_FILE
        | FS_MAKE_CHAR | FS_MAKE_DIR | FS_MAKE_REG | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_BLOCK
        | FS_MAKE_SYM),
    2: FS_REFER,
    3: FS_TRUNCATE,
    5: FS_IOCTL_DEV,
}

READ = FS_READ_FILE | FS_READ_DIR
WRITE = READ | (FS_WRITE_FILE | FS_TRUNCATE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR
                | FS_MAKE_REG | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_SYM | FS_REFER)
EXECUTE = READ | FS_EXECUTE
# Rights that make sense on a file rather than a directory; the kernel rejects the others.
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


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
    return [name for name, flag in FS_ACCESS.items() if mask & flag]


@record
class LandlockRules(Record):
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


def _check(result: int, what: str) -> int:
    try:
        return syscalls.check(result, what)
    except OSError as exc:
        raise EnforcementError("landlock", exc.strerror or str(exc)) from None


def apply(rules: LandlockRules) -> list[str]:
    """Restrict this process (and its future children) to the ruleset; returns notes.

    Needs no_new_privs or CAP_SYS_ADMIN. Skips optional paths that do not exist.
    """
    attr = _RulesetAttr(rules.handled_fs, rules.handled_net, rules.scoped)
    # The attribute size tells the kernel which fields we know; older ABIs reject larger ones
    # with E2BIG only if the extra fields are non-zero, so size it to what is used.
    size = 24 if rules.scoped else 16 if rules.handled_net else 8
    notes: list[str] = []
    ruleset = _check(syscalls.syscall(syscalls.SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                                      ctypes.c_size_t(size), ctypes.c_uint32(0)), "landlock_create_ruleset")
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
                _check(syscalls.syscall(syscalls.SYS_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH,
                                        ctypes.byref(rule), ctypes.c_uint32(0)), f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        for port, rights in rules.ports:
            net = _NetPortAttr(rights, port)
            _check(syscalls.syscall(syscalls.SYS_LANDLOCK_ADD_RULE, ruleset, _RULE_NET_PORT,
                                    ctypes.byref(net), ctypes.c_uint32(0)), f"landlock_add_rule(port {port})")
        _check(syscalls.syscall(syscalls.SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return notes
