"""Validated policies kept beside the code, as compiled filters are (filter_cache.py).

Loading a policy (TOML parsing, the line of every key for messages, validation against the
format and libseccomp's syscall names) takes 3 to 5 ms, and importing the loader (tomllib with
the `string` and `datetime` it pulls in, the policy format, pyseccomp) about 12 ms more, at
every `CleanCoin-sandbox run` and for each of the two policies CleanCoin-node fits at start.
A loaded `Policy` depends only on the bytes of its files, on how each `extends` entry was
resolved, on the code and on libseccomp: with all of them checked, it can be taken from disk.

Trust is the filter cache's, for the same reason (its docstring): the entries live in the
installed package (`sandbox/__policy_cache__/`), and are read only if the directory and the
file belong to the package directory's owner, no one else may write them and they are not
symlinks. On top of that each entry is checked against the world as it is now, and any
difference is a miss (the policy is loaded and validated in full, and the entry rewritten):

- its key: the policy's path as given (made absolute), the installed code of the sandbox
  package (name, size and modification time of every module, as `__pycache__` checks a
  module), libseccomp's version and API level, and the Python version;
- the SHA-256 of its payload;
- every file of the policy, read again: same real path, same SHA-256 of its bytes, read from
  the descriptor of the walk that found it writable by its owner alone (us or root), as
  every directory and link above it (policy_trust.py; since 12-07, the same descriptor since
  12-08): else the loader refuses it, saying why;
- every `extends` entry resolved again from the file that names it (a file that has appeared
  beside it takes precedence over a shipped policy of that name): same target.

The payload is a pickle read by an unpickler that knows only the policy model's classes, so
that even an entry that passed every check cannot name any other callable. A policy with
errors is never stored: its errors come from the loader every time.
"""

from __future__ import annotations

import io
import json
import os
import sys

from . import filter_cache, policy_trust

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:
    from .model import Policy

DIRNAME = "__policy_cache__"
FORMAT = "cleancoin-policy/1"
MAGIC = b"CCPOL1\n"
#: What the payload may name: the model's classes and the built-in containers it uses.
_ALLOWED = {
    "cleancoin.sandbox.model": None,        # any class of the model module
    "cleancoin.sandbox.errors": {"SourceRef"},
    "cleancoin.sandbox.mechanisms": None,
    "builtins": {"frozenset", "set", "tuple", "list", "dict"},
}


def _code_state() -> list[list[object]] | None:
    """Name, size and modification time of every module of the sandbox package."""
    try:
        with os.scandir(os.path.dirname(os.path.abspath(__file__))) as entries:
            state = [[e.name, st.st_size, st.st_mtime_ns] for e in entries
                     if e.name.endswith(".py") for st in [e.stat(follow_symlinks=False)]]
    except OSError:
        return None
    return sorted(state)


def key(path: str) -> str | None:
    """The entry name for the policy at `path` (a SHA-256, hex), or None if none can be made."""
    lib = filter_cache._libseccomp()    # noqa: SLF001 - the same question, asked once here too
    code = _code_state()
    if lib is None or code is None:
        return None
    text = json.dumps([FORMAT, os.path.abspath(path), list(lib), list(sys.version_info[:2]), code],
                      separators=(",", ":"))
    return filter_cache._sha256(text.encode())   # noqa: SLF001


def _file_sha256(path: str, safe_dirs: set[str] | None = None) -> str | None:
    """The SHA-256 of the file's bytes as read from the descriptor the trust walk opened and
    checked (policy_trust.open_checked, since 12-08: not the path opened again); None when
    it cannot be read or others may have changed it (the loader says why)."""
    try:
        fd = policy_trust.open_checked(path, safe_dirs)
    except (OSError, policy_trust.Untrusted):
        return None
    try:
        with open(fd, "rb") as handle:
            return filter_cache._sha256(handle.read())   # noqa: SLF001
    except OSError:
        return None


def _unpickle(payload: bytes) -> object:
    # _pickle's Unpickler is the very class pickle.Unpickler names; the pickle module itself
    # (with struct and a search of sys.path for Jython's org.python.core) is about 2 ms of
    # CPU of every `CleanCoin-sandbox run` that only the cache's writer needs.
    import _pickle

    class ModelOnly(_pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            allowed = _ALLOWED.get(module, set())
            if module not in _ALLOWED or (allowed is not None and name not in allowed):
                raise _pickle.UnpicklingError(f"{module}.{name} is not part of the policy model")
            found = super().find_class(module, name)
            if not isinstance(found, type):      # classes only: no function to be called
                raise _pickle.UnpicklingError(f"{module}.{name} is not a class")
            return found

    return ModelOnly(io.BytesIO(payload)).load()


def load(path: str) -> Policy | None:
    """The policy at `path` from a checked entry (module docstring), or None: a miss."""
    name = key(path)
    if name is None:
        return None
    data = filter_cache.read_entry(name, DIRNAME)
    if data is None or not data.startswith(MAGIC):
        return None
    header, sep, payload = data[len(MAGIC):].partition(b"\n")
    if not sep:
        return None
    try:
        meta = json.loads(header)
        if (not isinstance(meta, dict) or meta.get("key") != name
                or meta.get("sha256") != filter_cache._sha256(payload)):   # noqa: SLF001
            return None
        files, edges = meta["files"], meta["edges"]
        safe_dirs: set[str] = set()
        for file, real, digest in files:
            # The bytes hashed are those of the file the trust walk checked (else a miss: the
            # loader says why, policy_trust's docstring).
            if os.path.realpath(file) != real or _file_sha256(file, safe_dirs) != digest:
                return None
        from .policy_files import extended_path
        for written, including, target in edges:
            if extended_path(written, including) != target:
                return None
        policy = _unpickle(payload)
    except Exception:  # noqa: BLE001 - whatever is wrong with an entry, it is a miss
        return None
    from .model import Policy
    if not isinstance(policy, Policy) or list(policy.files) != [f[0] for f in files]:
        return None
    return policy


def store(path: str, policy: Policy, edges: list[tuple[str, str, str]],
          digests: dict[str, str] | None = None) -> bool:
    """Write the entry of a policy just loaded in full from `path`; False if not written.
    `digests`: the SHA-256 of the bytes the loader parsed, file by file (since 12-08; a file
    hashed again here could have been changed since, by its owner, and the entry would have
    given the old policy for the new bytes)."""
    name = key(path)
    if name is None:
        return False
    files = []
    for file in policy.files:
        digest = (digests or {}).get(file) or _file_sha256(file)
        if digest is None:
            return False
        files.append([file, os.path.realpath(file), digest])
    import pickle
    payload = pickle.dumps(policy, protocol=pickle.HIGHEST_PROTOCOL)
    header = json.dumps({"key": name, "sha256": filter_cache._sha256(payload),   # noqa: SLF001
                         "files": files, "edges": [list(e) for e in edges]}, separators=(",", ":"))
    if len(header) + len(payload) + 64 > filter_cache.MAX_ENTRY_BYTES:
        return False
    return filter_cache.write_entry(name, MAGIC + header.encode() + b"\n" + payload, DIRNAME)


def load_policy(path: str) -> Policy:
    """`policy_loader.load_policy`, from the cache when a checked entry is there; otherwise
    loaded and validated in full (raising its PolicyErrors) and stored."""
    cached = load(path)
    if cached is not None:
        return cached
    from .policy_loader import load_policy as load_in_full
    edges: list[tuple[str, str, str]] = []
    digests: dict[str, str] = {}
    policy = load_in_full(path, edges, digests)
    store(path, policy, edges, digests)
    return policy
