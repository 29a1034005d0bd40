"""Grant paths that cannot be redirected.

A grant is written as a path but enforced on whatever the kernel opens, and the kernel follows
symlinks. Any directory the confined side can write (its data directory, its temporary
directory) could hold a symlink by the next launch: a wallet that swaps its tmpdir for a link
to `/` would be granted the whole filesystem on restart. Hence two rules:

- When a plan is made, each grant path is resolved component by component (`resolve`). A
  symlink is followed only where the confined side could not have made it: a link that lies
  in a directory at or beneath a writable root (the policy's write grants, plus roots the
  caller names, such as the node's datadir for the wallet) is refused, naming the path and
  the link. The plan then holds real paths only, and the danger checks judge those.
- When the plan is applied, every grant is opened again with openat2(RESOLVE_NO_SYMLINKS)
  (`open_no_symlinks`): the plan's paths are real, so any symlink met then was planted after
  planning, and the launch fails rather than follow it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from . import syscalls

_MAX_LINKS = 40      # the kernel's limit on symlinks in one lookup


class SymlinkRefused(Exception):
    """A grant path runs through a symlink the confined side could have planted."""

    def __init__(self, path: str, link: str, target: str, root: str) -> None:
        self.path, self.link, self.target, self.root = path, link, target, root
        where = "is" if link == path else f"runs through {link!r}, which is"
        super().__init__(f"{path!r} {where} a symlink (to {target!r}) inside {root!r}, a "
                         "directory the sandbox can write; it could have been swapped to widen "
                         "the sandbox, so it is not followed: use the real path")


def beneath(path: str, root: str) -> bool:
    """True when `path` is `root` or lies beneath it (both absolute and normalised)."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def resolve(path: str, untrusted: Iterable[str] = ()) -> str:
    """The real path of `path`, following only symlinks outside the `untrusted` roots.

    Like os.path.realpath, a missing component ends the walk: the rest is appended as
    written (the caller decides whether a missing path is an error). Raises SymlinkRefused,
    or OSError(ELOOP) after too many links.
    """
    roots = [os.path.normpath(r) for r in untrusted]
    pending = [c for c in path.split("/") if c]
    pending.reverse()          # a stack: the next component is at the end
    current = "/"
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            rest = list(reversed(pending))
            return os.path.normpath(os.path.join(candidate, *rest))
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        target = os.readlink(candidate)
        for root in roots:
            if beneath(current, root):
                raise SymlinkRefused(path, candidate, target, root)
        links += 1
        if links > _MAX_LINKS:
            raise OSError(40, f"{path}: too many levels of symbolic links")
        pending.extend(reversed([c for c in target.split("/") if c]))
        if target.startswith("/"):
            current = "/"
    return current


def open_no_symlinks(path: str) -> int:
    """An O_PATH descriptor of `path`, refusing any symlink or magic link on the way.

    For the plan's real paths at enforcement time: a symlink there was planted after the
    plan was made (OSError ELOOP). No O_NOFOLLOW: with it, openat2 hands out a descriptor
    of a trailing symlink itself instead of refusing it.
    """
    return syscalls.openat2(syscalls.AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC,
                            syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS)


def spelled(path: str) -> str:
    """A grant path (variables kept) as a launch spells it once they are filled
    (`plan_compiler._substituted` normalises): `//`, `/./` and a trailing slash collapse, so
    that the tools compare what the launch compares. `..` cannot occur (the loader refuses it)."""
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def beneath_tmpfs(path: str, tmpfs: Iterable[str]) -> str | None:
    """The tmpfs of `tmpfs` that `path` lies strictly beneath (all spelled alike), or None.
    A grant there is the host's path, bound into the view over the fresh tmpfs."""
    return next((t for t in tmpfs if t != path and beneath(path, t) and t != "/"), None)


def real_grant(text: str) -> str:
    """Where a grant as written (variables kept) points on this machine, for the tools that
    judge a policy without launching it (`diff`, `explain`).

    A launch grants the real path (`resolve`): a grant of `/usr/lib/ssl/private` is Landlock
    on `/etc/ssl/private` (a Debian symlink), not a place inside `/usr/lib`. So the literal
    head of the path, up to the directory holding its first `${variable}`, is resolved here,
    following every symlink (the most a launch could follow; it refuses some), and the rest is
    kept as written. A path that cannot be resolved is returned as written.
    """
    if not text.startswith("/"):
        return text
    cut = text.find("${")
    if cut < 0:
        head, tail = text, ""
    else:
        slash = text.rfind("/", 0, cut)
        head, tail = text[:slash] or "/", text[slash:]
    try:
        real = resolve(head)
    except (SymlinkRefused, OSError):
        return text
    return real + tail if real != "/" or not tail else tail
