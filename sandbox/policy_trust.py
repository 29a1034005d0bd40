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

What a walk cannot see (12-08): a process may hold a group the group and passwd files do not
list (systemd's SupplementaryGroups=, an NSS source that does not enumerate, newgrp with a
group password), so a group-writable file that passes as private can still be written by it;
and a descriptor opened for writing while a file was writable by others stays writable after
a chmod. A policy under review belongs in a directory no other group can write.

The check and the read are one walk (since 12-08): each directory is opened (O_PATH,
O_NOFOLLOW) from the descriptor of the one above it and checked by fstat of what was opened,
each link read from the descriptor that holds it, and the file itself opened from its checked
directory and checked by fstat of the descriptor `open_checked` returns, the one the loader
and the policy cache read. Until 12-08 the loader asked `problem(path)` when the path existed
and then opened the path again: a file of another uid that appeared under the name between
the two (a rename loop in a sticky /tmp directory) was loaded, 9 times in 10,658 loads of
3 s (tests/test_policy_trust.py).
"""

from __future__ import annotations

import errno
import os
import stat

#: Links followed while resolving one path before giving up (the kernel's own limit).
_MAX_LINKS = 40
#: A directory or link on the way: a handle to it, never its contents, and never followed.
_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
#: The file itself: read-only, a FIFO cannot hang the open, no controlling terminal taken.
_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC


class Untrusted(Exception):
    """The file, or a directory or link on the way to it, may have been changed by someone
    other than its owner; str() says which and why."""


def problem(path: str, safe_dirs: set[str] | None = None) -> str | None:
    """Why `path` may have been changed by someone other than its owner since it was
    reviewed, or None when it cannot have been (`open_checked`'s walk, the descriptor closed).
    `safe_dirs`: as `open_checked`'s."""
    try:
        os.close(open_checked(path, safe_dirs))
    except Untrusted as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot check {exc.filename or path}: {exc.strerror}"
    return None


def open_checked(path: str, safe_dirs: set[str] | None = None) -> int:
    """A descriptor of the file at `path` (read-only, non-blocking, close-on-exec), opened by
    the walk that found that no one but its owner (us or root) can change it, nor any
    directory or link on the way: read the policy from it, not from the path again. Each
    directory, link and the file are looked at as the kernel resolves the path, one link at a
    time (a link's `..` is its target's parent). Raises Untrusted, or OSError (its filename
    the place the walk stopped at) when something on the way cannot be opened. `safe_dirs`:
    directories already found safe by an earlier call (and added to), so that the files of
    one policy, which share most of their path, cost one check (the policy cache's hit path).
    """
    safe_dirs = set() if safe_dirs is None else safe_dirs
    trusted = (0, os.geteuid())
    root = os.open("/", _STEP | os.O_DIRECTORY)
    walked = [("/", root)]           # the directories the walk is in, each opened from the last
    try:
        # Not os.path.abspath: it drops `link/..` before the kernel has followed `link`.
        todo = [p for p in os.path.join(os.getcwd(), path).split("/") if p]
        _check(root, os.fstat(root), "/", trusted, final=False)
        links = 0
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                if len(walked) > 1:
                    os.close(walked.pop()[1])
                continue
            current, parent = walked[-1]
            here = current + name if current == "/" else f"{current}/{name}"
            if todo and here in safe_dirs:
                # Checked by an earlier call: a directory still (O_DIRECTORY), nothing to fstat.
                try:
                    walked.append((here, os.open(name, _STEP | os.O_DIRECTORY, dir_fd=parent)))
                    continue
                except OSError:
                    pass            # no longer a directory: looked at afresh below
            fd = _open_step(name, parent, here, final=not todo)
            try:
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    if st.st_uid not in trusted:
                        raise Untrusted(f"{here} is a symbolic link owned by uid {st.st_uid}, another user")
                    links += 1
                    if links > _MAX_LINKS:
                        raise Untrusted(f"{path}: too many symbolic links")
                    target = os.readlink("", dir_fd=fd)      # the link opened, not its name again
                    if target.startswith("/"):
                        while len(walked) > 1:
                            os.close(walked.pop()[1])
                    todo[:0] = [p for p in target.split("/") if p]
                    os.close(fd)
                    continue
                _check(fd, st, here, trusted, final=not todo)
            except BaseException:
                os.close(fd)
                raise
            if not todo:
                return fd
            safe_dirs.add(here)
            walked.append((here, fd))
        # A path that ends in a directory (`/`, `a/..`): what the kernel would open, checked.
        return os.open(".", _FILE, dir_fd=walked[-1][1])
    finally:
        for _where, fd in walked:
            os.close(fd)


def _open_step(name: str, parent: int, here: str, *, final: bool) -> int:
    """`name` in the directory `parent`: the file itself, opened to be read, when it is the
    last step; else, and for a link, a handle that follows nothing."""
    try:
        if final:
            try:
                return os.open(name, _FILE, dir_fd=parent)
            except OSError as exc:
                if exc.errno != errno.ELOOP:       # ELOOP: a link, looked at as one
                    raise
        return os.open(name, _STEP, dir_fd=parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, here) from None


def _check(fd: int, st: os.stat_result, where: str, trusted: tuple[int, int], *, final: bool) -> None:
    if (why := _unsafe(fd, st, where, trusted, final=final)) is not None:
        raise Untrusted(why)


def _unsafe(fd: int, st: os.stat_result, where: str, trusted: tuple[int, int], *, final: bool) -> str | None:
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
        if other := _acl_writer(fd, trusted):
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


def _acl_writer(fd: int, trusted: tuple[int, int]) -> str:
    """"uid N" or "gid N" of a named entry of the POSIX access ACL of what `fd` holds that may
    write and is not trusted (a named group: unless private), "" when none. An O_PATH handle
    has no xattr calls of its own: its /proc/self/fd link leads to the same inode. An ACL that
    cannot be read is taken for one that lets others write."""
    import struct
    try:
        acl = os.getxattr(f"/proc/self/fd/{fd}", "system.posix_acl_access")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return ""       # no ACL, or a file system without them
        return f"whoever its ACL names (it cannot be read: {exc.strerror})"
    for offset in range(4, len(acl) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", acl, offset)
        if perm & 2 and tag == 0x02 and ident not in trusted:                            # ACL_USER
            return f"uid {ident}"
        if perm & 2 and tag == 0x08 and not _private_group(ident, trusted):                 # ACL_GROUP
            return f"gid {ident}"
    return ""
