"""Whether a policy file is the one that was reviewed: no one but its owner (us or root) can
change it, nor any directory or symbolic link on the way to it (sshd's StrictModes).

Why: until 12-07 a reviewed policy could `extends` a file that another user could write (a
base in a group-writable or world-writable directory, one owned by another uid, or reached
through a link that another user can re-point), and the launcher ran whatever that file said
at launch. The loader and the policy cache ask `problem()` of every file of a policy, the
named one included, so `check`, `explain`, `diff`, `run` and the components refuse alike.

A directory on the way that others may write is fine when it is sticky (/tmp): they cannot
rename or remove what we own in it. Group-writable is refused unless every member of the group
is us or root (a user-private group under umask 002: a venv made so is group-writable), as
components/common/conf.py's `refuse_others` rules for a datadir; the layout keeps that module
out of the sandbox package's reach (tests/test_layout.py), hence `_private_group` here. A
named ACL entry writes only through the mask, which the group bits show: a group-writable
file or directory with a named entry of another user or group is refused too.
"""

from __future__ import annotations

import os
import stat

#: Links followed while resolving one path before giving up (the kernel's own limit).
_MAX_LINKS = 40


def problem(path: str, safe_dirs: set[str] | None = None) -> str | None:
    """Why `path` may have been changed by someone other than its owner since it was
    reviewed, or None when it cannot have been. Each directory, link and the file are looked
    at as the kernel resolves the path, one link at a time. `safe_dirs`: directories already
    found safe by an earlier call (and added to), so that the files of one policy, which
    share most of their path, cost one walk (the policy cache's hit path)."""
    safe_dirs = set() if safe_dirs is None else safe_dirs
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
            if todo and here in safe_dirs:
                current = here
                continue
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
            if todo:
                safe_dirs.add(here)
            current = here
    except OSError as exc:
        return f"cannot check {current}: {exc.strerror}"
    return None


def _unsafe(st: os.stat_result, where: str, trusted: tuple[int, int], *, final: bool) -> str | None:
    if st.st_uid not in trusted:
        return f"{where} is owned by uid {st.st_uid}, another user, who can change it"
    mode = stat.S_IMODE(st.st_mode)
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and not final
    if sticky_dir:
        return None
    if st.st_mode & stat.S_IWOTH:
        return f"{where} is writable by other users (mode {mode:04o}); chmod o-w {where}"
    if st.st_mode & stat.S_IWGRP:
        if not _private_group(st.st_gid, trusted):
            return (f"{where} is writable by group {st.st_gid}, which has members other than you and "
                    f"root, or none the system knows (mode {mode:04o}); chmod g-w {where}")
        if other := _acl_writer(where, trusted):
            return f"{where} is writable by {other} through its ACL (getfacl {where})"
    return None


def _private_group(gid: int, trusted: tuple[int, int]) -> bool:
    """Every member of group `gid` (by primary group or the group's list) is trusted, and it
    has one at least: a group without members the system knows is a setgid program's."""
    import grp
    import pwd
    try:
        names = grp.getgrgid(gid).gr_mem
        members = {user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid}
        members |= {pwd.getpwnam(name).pw_uid for name in names}
    except KeyError:
        return False
    return bool(members) and members <= set(trusted)


def _acl_writer(where: str, trusted: tuple[int, int]) -> str:
    """"uid N" or "gid N" of a named entry of `where`'s POSIX access ACL that may write and is
    not trusted (a named group: unless private), "" when none."""
    import struct
    try:
        acl = os.getxattr(where, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return ""       # no ACL (ENODATA) or a file system without them (ENOTSUP)
    for offset in range(4, len(acl) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", acl, offset)
        if perm & 2 and tag == 0x02 and ident not in trusted:                            # ACL_USER
            return f"uid {ident}"
        if perm & 2 and tag == 0x08 and not _private_group(ident, trusted):                 # ACL_GROUP
            return f"gid {ident}"
    return ""

