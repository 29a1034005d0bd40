"""Compiled seccomp filters kept next to the code that compiles them, as `__pycache__` keeps bytecode.

libseccomp takes 1.5 to 4 ms to build and export a policy's filter, every time a launch, a
`CleanCoin-sandbox run` or a CleanCoin-node start fits a policy (and loading pyseccomp costs
about 1 ms more). The filter is a pure function of the filter spec (policy content), the
libseccomp that builds it, the kernel it asks about actions and the code that turns the spec
into rules: with all of those in the key, a finished program can be taken from disk.

Who may write the cache decides whether it can be trusted. A cache under $HOME would be
writable by any program confined under a policy that grants the home directory, running as
the same user: it could plant a weaker filter for the next launch of another policy (the
node's). This cache therefore lives in the installed package (`sandbox/__filter_cache__/`),
and is used only if the directory and each entry belong to the owner of the package's own
directory and no one else may write them: whoever can write there can rewrite seccomp.py
itself, which enforces every policy anyway. A system-wide install that the user cannot write
simply compiles every time, as before.

An entry is used only after it is checked: not a symlink (O_NOFOLLOW), a regular file of the
package's owner, not group- or world-writable, of bounded size, its header naming the
expected key, its BPF a whole number of instructions whose SHA-256 is the one in its header.
Anything else (stale, torn, tampered, foreign) is a miss: the filter is compiled, and the
entry rewritten. A cache that cannot be read or written is never an error.
"""

from __future__ import annotations

import json
import os
import stat
import sys

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:
    from .seccomp import CompiledFilter, FilterSpec

#: The cache's format: part of every key, so that a new format never reads an old entry.
FORMAT = "cleancoin-seccomp-bpf/1"
MAGIC = b"CCBPF1\n"
DIRNAME = "__filter_cache__"
#: An entry larger than this is not read (a filter is 4,096 instructions at most: 32 KiB).
MAX_ENTRY_BYTES = 256 * 1024
#: Entries kept; beyond that the oldest go when one is written (fuzz tests compile thousands).
MAX_ENTRIES = 256
#: The code whose behaviour the BPF depends on: a change in any of them changes every key.
_CODE = ("seccomp.py", "syscalls.py", "families.py", "filter_cache.py")
_HERE = os.path.dirname(os.path.abspath(__file__))


def package_dir() -> str:
    """The installed package directory whose owner the cache must have (module docstring)."""
    return _HERE


def cache_dir(dirname: str = DIRNAME) -> str:
    """Where the entries live: a directory of the installed package (module docstring)."""
    return os.path.join(package_dir(), dirname)


def _sha256(data: bytes) -> str:
    # CPython's built-in SHA-256, not hashlib's OpenSSL (seccomp._sha256 says why).
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(data).hexdigest()


def _libseccomp() -> tuple[str, int] | None:
    """(version, API level) of the libseccomp the filter would be built with; None if it
    cannot be asked (no cache then). The API level reflects the kernel's actions, so a kernel
    change changes the key."""
    from .seccomp import libseccomp_info
    return libseccomp_info()


def _code_digest() -> str | None:
    parts = []
    for name in _CODE:
        try:
            with open(os.path.join(_HERE, name), "rb") as handle:
                parts.append(_sha256(handle.read()))
        except OSError:
            return None
    try:
        import importlib.machinery
        spec = importlib.machinery.PathFinder.find_spec("pyseccomp")
        origin = spec.origin if spec is not None else None
        if not origin:
            return None
        with open(origin, "rb") as handle:
            parts.append(_sha256(handle.read()))
    except OSError:
        return None
    return ",".join(parts)


def key(spec: FilterSpec, notify_errno: bool) -> str | None:
    """The entry name of `spec`'s filter (a SHA-256, hex); None when one cannot be made.

    Everything the BPF depends on and nothing else: the spec without its source references
    (they only name lines in error messages, and a spec that fails to compile is never
    stored), the denial log's form or not, libseccomp's version and API level, the machine
    and kernel, the Python version and the code that builds the rules."""
    lib = _libseccomp()
    code = _code_digest()
    if lib is None or code is None:
        return None
    uname = os.uname()
    text = json.dumps([
        FORMAT, spec.default_action, sorted(spec.allowed),
        [[r.syscall, r.action, [[c.index, c.op, c.value, c.mask] for c in r.args], r.logged]
         for r in spec.rules],
        [[f.name, f.raw, f.datagram, f.socketpair_only] for f in spec.families],
        # Every derived rule's switch: until 12-08 (h108) deny_terminal_input was missing, and a
        # policy kept in the launcher's session got the filter its new-session twin had cached,
        # without the TIOCSTI refusal.
        spec.deny_namespace_clone, spec.deny_dumpable, spec.deny_suid_sgid, spec.deny_terminal_input,
        notify_errno,
        list(lib), uname.machine, uname.release, list(sys.version_info[:2]), code,
    ], separators=(",", ":"))
    return _sha256(text.encode())


def _trusted(st: os.stat_result, owner: int, kind: int) -> bool:
    """Of the package's owner, of the right kind, and writable by no one else."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == owner and not st.st_mode & 0o022


def _package_owner() -> int | None:
    try:
        st = os.stat(package_dir())
    except OSError:
        return None
    return st.st_uid if not st.st_mode & 0o022 else None


def _open_dir(create: bool, dirname: str = DIRNAME) -> tuple[int, int] | None:
    """The cache directory's descriptor and the owner it must have, or None if it is not to
    be trusted (or, with `create`, cannot be made)."""
    owner = _package_owner()
    if owner is None:
        return None
    path = cache_dir(dirname)
    if create and owner == os.geteuid():
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _trusted(os.fstat(fd), owner, stat.S_IFDIR):
            return fd, owner
    except OSError:
        pass
    os.close(fd)
    return None


def read_entry(name: str, dirname: str = DIRNAME) -> bytes | None:
    """The bytes of entry `name` of cache `dirname` if the directory and the file may be
    trusted (module docstring: owner, mode, no symlink, size), else None."""
    opened = _open_dir(False, dirname)
    if opened is None:
        return None
    dirfd, owner = opened
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        os.close(dirfd)
        return None
    try:
        st = os.fstat(fd)
        if not _trusted(st, owner, stat.S_IFREG) or st.st_size > MAX_ENTRY_BYTES:
            return None
        return os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
        os.close(dirfd)


def load(name: str) -> CompiledFilter | None:
    """The checked entry `name` (module docstring), or None: a miss, whatever the reason."""
    data = read_entry(name)
    return None if data is None else _parse(name, data)


def _parse(name: str, data: bytes) -> CompiledFilter | None:
    if not data.startswith(MAGIC):
        return None
    header, sep, bpf = data[len(MAGIC):].partition(b"\n")
    if not sep:
        return None
    try:
        meta = json.loads(header)
        if (not isinstance(meta, dict) or meta.get("key") != name
                or meta.get("sha256") != _sha256(bpf) or not bpf or len(bpf) % 8
                or meta.get("instructions") != len(bpf) // 8):
            return None
        allowed, conditional, unresolved = meta["allowed"], meta["conditional"], meta["unresolved"]
        if (not isinstance(allowed, int) or not isinstance(conditional, int)
                or not isinstance(unresolved, list) or not all(isinstance(u, str) for u in unresolved)):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    from .seccomp import CompiledFilter
    return CompiledFilter(bpf, meta["sha256"], len(bpf) // 8, allowed, conditional, tuple(unresolved))


def store(name: str, compiled: CompiledFilter) -> bool:
    """Write entry `name`; False when the cache is not there to be written (`write_entry`)."""
    header = json.dumps({"key": name, "sha256": compiled.sha256, "instructions": compiled.instructions,
                         "allowed": compiled.allowed, "conditional": compiled.conditional,
                         "unresolved": list(compiled.unresolved)}, separators=(",", ":"))
    return write_entry(name, MAGIC + header.encode() + b"\n" + compiled.bpf)


def write_entry(name: str, data: bytes, dirname: str = DIRNAME) -> bool:
    """Write entry `name` of cache `dirname` atomically (a temporary file renamed over it);
    False when the cache is not there to be written (not the package's owner, a read-only
    install, ...)."""
    opened = _open_dir(True, dirname)
    if opened is None:
        return False
    dirfd, owner = opened
    if owner != os.geteuid():
        os.close(dirfd)
        return False
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        _prune(dirfd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dirfd)
        try:
            with open(fd, "wb", closefd=True) as handle:
                handle.write(data)
            os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except OSError:
            try:
                os.unlink(tmp, dir_fd=dirfd)
            except OSError:
                pass
            return False
        return True
    except OSError:
        return False
    finally:
        os.close(dirfd)


def _prune(dirfd: int) -> None:
    """Keep at most MAX_ENTRIES - 1 entries before one more is written: the oldest go."""
    names = os.listdir(dirfd)
    if len(names) < MAX_ENTRIES:
        return
    aged = []
    for entry in names:
        try:
            aged.append((os.stat(entry, dir_fd=dirfd, follow_symlinks=False).st_mtime_ns, entry))
        except OSError:
            continue
    for _mtime, entry in sorted(aged)[:len(aged) - MAX_ENTRIES // 2]:
        try:
            os.unlink(entry, dir_fd=dirfd)
        except OSError:
            pass
