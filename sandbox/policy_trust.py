"""Whether a policy file is the one that was reviewed: no one but its owner (us or root) can
change it, nor any directory or symbolic link on the way to it (sshd's StrictModes).

Why: until 12-07 a reviewed policy could `extends` a file that another user could write (a
base in a group-writable or world-writable directory, one owned by another uid, or reached
through a link that another user can re-point), and the launcher ran whatever that file said
at launch. The loader and the policy cache ask `problem()` of every file of a policy, the
named one included, so `check`, `explain`, `diff`, `run` and the components refuse alike.

A directory on the way that others may write is fine when it is sticky (/tmp): they cannot
rename or remove what we own in it. Group-writable is refused whatever the group (stricter
than components/common/conf.py's `refuse_others`, which the layout keeps out of the sandbox
package's reach: a policy's directory has no reason to be shared). That covers POSIX ACLs too:
a named user's or group's entry writes only through the mask, which the group bits show.
"""

from __future__ import annotations

import os
import stat

#: Links followed while resolving one path before giving up (the kernel's own limit).
_MAX_LINKS = 40


def problem(path: str) -> str | None:
    """Why `path` may have been changed by someone other than its owner since it was
    reviewed, or None when it cannot have been. Each directory, link and the file are looked
    at as the kernel resolves the path, one link at a time."""
    trusted = (0, os.geteuid())
    # Not os.path.abspath: it drops `link/..` before the kernel has followed `link`.
    todo = [p for p in os.path.join(os.getcwd(), path).split("/") if p]
    current, links = "/", 0
    try:
        if (why := _unsafe(os.stat(current), current, trusted, final=False)) is not None:
            return why
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                current = os.path.dirname(current)
                continue
            here = os.path.join(current, name)
            st = os.lstat(here)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in trusted:
                    return f"{here} is a symbolic link owned by uid {st.st_uid}, another user"
                links += 1
                if links > _MAX_LINKS:
                    return f"{path}: too many symbolic links"
                target = os.readlink(here)
                if target.startswith("/"):
                    current = "/"
                todo[:0] = [p for p in target.split("/") if p]
                continue
            if (why := _unsafe(st, here, trusted, final=not todo)) is not None:
                return why
            current = here
    except OSError as exc:
        return f"cannot check {current}: {exc.strerror}"
    return None


def _unsafe(st: os.stat_result, where: str, trusted: tuple[int, int], *, final: bool) -> str | None:
    if st.st_uid not in trusted:
        return f"{where} is owned by uid {st.st_uid}, another user, who can change it"
    mode = stat.S_IMODE(st.st_mode)
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and not final
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir:
        whom = "other users" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
        return f"{where} is writable by {whom} (mode {mode:04o}); chmod go-w {where}"
    return None

