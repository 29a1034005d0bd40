"""The filesystem view: an empty root holding exactly the policy's grants, as bubblewrap builds it.

Landlock (ABI <= 7) cannot restrict connect(2) to a named unix socket, and only mounts can take
a directory out of a granted parent. So a component in a mount namespace does not look at the
host's tree at all: it gets a fresh tmpfs as its root, with each grant attached at its own path
as a detached clone of the host's mount (read-only, nosuid, nodev, noexec as the grant says,
submounts included), fresh tmpfs where the policy asks for one, empty read-only covers over
hidden directories, a /proc, and the root's own symlinks into the view. Then pivot_root, and
the old root is detached. A socket, device or file no grant names is not even visible.

Sources are opened with openat2(RESOLVE_NO_SYMLINKS) (the plan holds real paths: a symlink
now was planted after planning) and cloned with open_tree(OPEN_TREE_CLONE | AT_RECURSIVE),
before anything is mounted, so later mounts cannot change what a clone shows. mount_setattr
sets the flags on the whole clone (the old remount only reached the top mount).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import paths, syscalls
from .errors import EnforcementError
from .plan import Mount

#: Where the new root is assembled before pivot_root: a tmpfs mounted over it in the
#: component's own mount namespace (bubblewrap uses /tmp the same way).
STAGING = "/tmp"
_TMPFS_OPTIONS = "size=256m,nr_inodes=65536"
_ROOT_OPTIONS = "mode=0755,size=1m,nr_inodes=4096"


@dataclass
class _Clone:
    """A detached clone of a grant's mount tree (`_clone`), to be attached in the new root."""

    mount: Mount
    tree: int          # descriptor of the detached clone
    is_dir: bool


def _attrs(mount: Mount, is_device: bool) -> int:
    attrs = syscalls.MOUNT_ATTR_NOSUID
    if not is_device:
        attrs |= syscalls.MOUNT_ATTR_NODEV
    if not mount.writable:
        attrs |= syscalls.MOUNT_ATTR_RDONLY
    # Written-to places hold nothing to run: no mmap(PROT_EXEC) of a dropped library either,
    # which Landlock's execute right does not cover.
    if mount.writable and not mount.executable:
        attrs |= syscalls.MOUNT_ATTR_NOEXEC
    return attrs


def _clone(mount: Mount) -> _Clone | None:
    """A detached, flag-set clone of the grant's mount tree; None for a missing optional one."""
    try:
        fd = paths.open_no_symlinks(mount.path)
    except FileNotFoundError:
        if mount.optional:
            return None
        raise EnforcementError("filesystem view", f"granted path {mount.path} does not exist") from None
    except OSError as exc:
        if exc.errno == 40:   # ELOOP: a symlink where the plan saw a real path
            raise EnforcementError("filesystem view", f"{mount.path} has become a symlink since the "
                                                      "plan was made; it is not followed") from None
        raise
    try:
        info = os.fstat(fd)
        tree = syscalls.open_tree(fd, "", syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC
                                  | syscalls.AT_RECURSIVE | syscalls.AT_EMPTY_PATH)
    finally:
        os.close(fd)
    device = stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
    syscalls.mount_setattr(tree, "", syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE,
                           _attrs(mount, device))
    return _Clone(mount, tree, stat.S_ISDIR(info.st_mode))


def _host_proc() -> int:
    tree = syscalls.open_tree(syscalls.AT_FDCWD, "/proc", syscalls.OPEN_TREE_CLONE
                              | syscalls.OPEN_TREE_CLOEXEC | syscalls.AT_RECURSIVE)
    syscalls.mount_setattr(tree, "", syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE,
                           syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOSUID
                           | syscalls.MOUNT_ATTR_NODEV | syscalls.MOUNT_ATTR_NOEXEC)
    return tree


def _mountpoint(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))


def build(mounts: tuple[Mount, ...], fresh_proc: bool) -> list[str]:
    """Build the view and pivot into it; returns notes for the report. Needs a mount
    namespace of the caller's own (with private propagation) and a user namespace's rights."""
    notes: list[str] = []
    clones: dict[str, _Clone] = {}
    proc_tree = -1
    try:
        for mount in mounts:
            if mount.kind == "bind":
                clone = _clone(mount)
                if clone is None:
                    notes.append(f"optional path {mount.path} does not exist")
                else:
                    clones[mount.path] = clone
            elif mount.kind == "proc" and not fresh_proc:
                proc_tree = _host_proc()
        syscalls.mount("tmpfs", STAGING, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, _ROOT_OPTIONS)
        root_bound = False
        for mount in mounts:
            target = STAGING + mount.path if mount.path != "/" else STAGING
            if mount.kind == "bind" and mount.path in clones:
                clone = clones[mount.path]
                _mountpoint(target, clone.is_dir)
                syscalls.move_mount(clone.tree, "", syscalls.AT_FDCWD, target,
                                    syscalls.MOVE_MOUNT_F_EMPTY_PATH)
                root_bound = root_bound or mount.path == "/"
            elif mount.kind == "tmpfs":
                _mountpoint(target, True)
                mode = "1777" if mount.path == "/tmp" else "0700"
                syscalls.mount("tmpfs", target, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV
                               | syscalls.MS_NOEXEC, f"mode={mode},{_TMPFS_OPTIONS}")
            elif mount.kind == "hide":
                if not os.path.isdir(target):
                    raise EnforcementError("filesystem view", f"{mount.path}: the directory to hide "
                                                              "does not exist in the view")
                syscalls.mount("tmpfs", target, "tmpfs", syscalls.MS_RDONLY | syscalls.MS_NOSUID
                               | syscalls.MS_NODEV | syscalls.MS_NOEXEC, "mode=0555,size=4k,nr_inodes=1")
            elif mount.kind == "proc":
                _mountpoint(target, True)
                if fresh_proc:
                    syscalls.mount("proc", target, "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV
                                   | syscalls.MS_NOEXEC)
                else:
                    syscalls.move_mount(proc_tree, "", syscalls.AT_FDCWD, target,
                                        syscalls.MOVE_MOUNT_F_EMPTY_PATH)
            elif mount.kind == "symlink":
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                if not os.path.lexists(target):
                    os.symlink(mount.target, target)
        os.chdir(STAGING)
        # pivot_root(".", "."): the old root ends up under the new one, on the same path;
        # detaching it leaves only the view (runc does the same).
        syscalls.pivot_root(".", ".")
        syscalls.umount2(".", syscalls.MNT_DETACH)
        os.chdir("/")
        if not root_bound:
            # The root itself holds only mount points: nothing may be created there.
            syscalls.mount_setattr(syscalls.AT_FDCWD, "/", 0, syscalls.MOUNT_ATTR_RDONLY
                                   | syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV)
    finally:
        for clone in clones.values():
            os.close(clone.tree)
        if proc_tree >= 0:
            os.close(proc_tree)
    return notes
