"""Filesystem attempts: reading, writing, linking and making device nodes outside the grants."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from .. import landlock
from .judge import _Judge, _Why
from .kernel_abi import (_CAP_MKNOD, _MAKE_CHAR, _MAKE_REG, _MAKE_SYM, _READ_DIR, _READ_FILE,
                         _REFER, _WRITE_FILE, _errname)
from .runner import Outcome, _Ctx, _ok, _Out
from .targets import _Targets


def _fs_read(path: str, ctx: _Ctx, expect_secret: bool) -> Outcome:
    try:
        with open(path, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", ENOENT="not visible in the sandbox's mounts")
    if expect_secret and data != ctx.targets.secret:
        return "allowed", f"opened, but the content differs from the canary ({len(data)} bytes)"
    return _ok(f"read {len(data)} bytes of {path}")


def _run_read_outside(ctx: _Ctx, out: _Out) -> Outcome:
    return _fs_read(ctx.targets.canary, ctx, expect_secret=True)


def _run_read_passwd(ctx: _Ctx, out: _Out) -> Outcome:
    return _fs_read("/etc/passwd", ctx, expect_secret=False)


def _run_list_root(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        names = os.listdir("/")
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock")
    return _ok(f"listed / ({len(names)} entries)")


def _run_write_outside(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.created
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", EROFS="read-only mount")
    os.write(fd, b"escaped")
    os.close(fd)
    return _ok(f"created {path}")


def _run_modify_canary(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        fd = os.open(ctx.targets.canary, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock", EROFS="read-only mount")
    os.write(fd, b"!")
    os.close(fd)
    return _ok(f"appended to {ctx.targets.canary}")


#: What fs-write-granted writes and reads back.
_WRITTEN = b"probe"


def _run_write_granted(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.probe_file("granted")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock")
    try:
        os.write(fd, _WRITTEN)
        os.lseek(fd, 0, os.SEEK_SET)
        back = os.read(fd, 16)
    except OSError as exc:      # a file size limit below what it writes (connect-broker's 0)
        return ctx.denied(exc, EFBIG="rlimits: the fsize limit")
    finally:
        os.close(fd)
        os.unlink(path)
    if back != b"probe":
        return "error", f"wrote 'probe' to {path} and read back {back!r}"
    return _ok(f"created, wrote, read back and removed {path}")


def _run_symlink(ctx: _Ctx, out: _Out) -> Outcome:
    link = ctx.targets.probe_file("symlink")
    try:
        os.symlink(ctx.targets.canary, link)
    except OSError as exc:
        out.note(f"symlink in the writable directory: {_errname(exc.errno or 0)}")
        return "denied", "could not plant the symlink, so the canary was not reached"
    out.note(f"planted {link} -> canary")
    try:
        with open(link, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock checks the target, not the link")
    finally:
        os.unlink(link)
    return _ok(f"read {len(data)} bytes of the canary through the symlink")


def _run_hardlink(ctx: _Ctx, out: _Out) -> Outcome:
    link = ctx.targets.probe_file("hardlink")
    try:
        os.link(ctx.targets.canary, link)
    except OSError as exc:
        return ctx.denied(exc, EXDEV="landlock refer rule, or the canary is on another mount",
                          EACCES="landlock", EPERM="kernel: protected_hardlinks")
    try:
        with open(link, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        os.unlink(link)
        return "allowed", f"linked the canary into the writable directory, reading it: {_errname(exc.errno or 0)}"
    os.unlink(link)
    return _ok(f"linked the canary into the writable directory and read {len(data)} bytes")


def _run_mknod(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.probe_file("mknod")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no make_char right",
                          EPERM="kernel: no CAP_MKNOD (or in a user namespace)")
    os.unlink(path)
    return _ok("created a character device (1:3) in the writable directory")


def _run_setuid(ctx: _Ctx, out: _Out) -> Outcome:
    """Give a file in the writable directory the set-user-ID bit: chmod, fchmod, and open with
    the bit in the mode. The view mounts the grant nosuid; the host does not, so such a file
    is a set-user-ID program of the sandbox's user for anyone who reaches it."""
    path = ctx.targets.probe_file("setuid")
    created = ctx.targets.probe_file("setuid-created")
    gained: list[str] = []
    refusals: list[OSError] = []
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no make_reg right")
    try:
        for how, call in (("chmod", lambda: os.chmod(path, 0o4755)), ("fchmod", lambda: os.fchmod(fd, 0o2755)),
                          ("open", lambda: os.close(os.open(created, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                                            0o4700)))):
            try:
                call()
            except OSError as exc:
                refusals.append(exc)
                continue
            target = created if how == "open" else path
            mode = os.stat(target).st_mode
            if mode & (stat.S_ISUID | stat.S_ISGID):
                gained.append(f"{how} made mode {mode & 0o7777:o}")
    finally:
        os.close(fd)
        for name in (path, created):
            try:
                os.unlink(name)
            except OSError:
                pass
    if gained:
        return _ok("; ".join(gained))
    return ctx.denied(refusals[0], EPERM="seccomp: set-user-ID and set-group-ID bits refused") \
        if refusals else ("denied", "the bits did not stay")


def _run_loosen_mode(ctx: _Ctx, out: _Out) -> Outcome:
    """Give a file of the writable directory group and other bits (chmod 0644, fchmod 0606).
    Where the datadir is reachable by others (bitcoind's -sysperms, a shared group), a
    component's modes are what keeps its files private; a policy that refuses the bits says
    so with a masked_ne rule on the mode (policies/wallet.toml)."""
    path = ctx.targets.probe_file("loosen")
    gained: list[str] = []
    refusals: list[OSError] = []
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no make_reg right")
    try:
        for how, call in (("chmod", lambda: os.chmod(path, 0o644)), ("fchmod", lambda: os.fchmod(fd, 0o606))):
            try:
                call()
            except OSError as exc:
                refusals.append(exc)
                continue
            mode = os.stat(path).st_mode & 0o7777
            if mode & 0o077:
                gained.append(f"{how} made mode {mode:o}")
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
    if gained:
        return _ok("; ".join(gained))
    return ctx.denied(refusals[0], EPERM="seccomp: group and other bits refused") \
        if refusals else ("denied", "the bits did not stay")


def _run_read_hidden(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.hidden_file
    assert path is not None
    directory, name = os.path.split(path)
    try:
        listed = name in os.listdir(directory)
    except OSError as exc:
        out.note(f"listing {directory}: {_errname(exc.errno or 0)}")
        listed = False
    if listed:
        out.note(f"the planted file shows in a listing of {directory}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(4096)
    except OSError as exc:
        if listed:
            return "allowed", f"listed the hidden directory's content, reading failed: {_errname(exc.errno or 0)}"
        return ctx.denied(exc, ENOENT="hide: covered by an empty tmpfs", EACCES="landlock")
    if data != ctx.targets.secret:
        return "allowed", f"opened, but the content differs from the canary ({len(data)} bytes)"
    return _ok(f"read the canary planted in the hidden directory {directory}")


# expectations ------------------------------------------------------------------------------

def _exp_read(path_of: Callable[[_Targets], str]) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        return j.ll(w, path_of(t), _READ_FILE, "read_file")
    return expect


def _exp_hidden(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    assert t.hidden_file is not None
    directory = os.path.dirname(t.hidden_file)
    j.sc(w, "openat")
    w.need(directory not in j.hidden,
           f"hide: an empty read-only tmpfs covers {directory}")
    return j.ll(w, t.hidden_file, _READ_FILE, "read_file")


def _exp_list_root(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "openat")
    return j.ll(w, "/", _READ_DIR, "read_dir")


def _exp_create(path_of: Callable[[_Targets], str]) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        return j.ll(w, path_of(t), _MAKE_REG | _WRITE_FILE, "make_reg/write_file")
    return expect


def _exp_write_granted(j: _Judge, t: _Targets) -> _Why:
    """Created as any file is (`_exp_create`), and written: a policy whose file size limit is
    below what is written (connect-broker's `fsize = 0`) refuses the control's write."""
    w = _exp_create(lambda t: t.probe_file("granted"))(j, t)
    fsize = j.file_size()
    return w.need(fsize is None or fsize >= len(_WRITTEN), f"rlimits: fsize {fsize}")


def _exp_modify_canary(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "openat")
    return j.ll(w, t.canary, _WRITE_FILE, "write_file")


def _exp_symlink(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "symlinkat")
    j.ll(w, t.probe_file("symlink"), _MAKE_SYM, "make_sym")
    return j.ll(w, t.canary, _READ_FILE, "read_file")


def _exp_hardlink(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "linkat")
    if j.plan.landlock is None:
        return w
    src, dst = j.ll_rights(t.canary), j.ll_rights(t.probe_file("hardlink"))
    handled = j.plan.landlock.handled_fs
    w.need(bool(handled & _REFER) and bool(src & _REFER) and bool(dst & _REFER),
           "landlock: no refer right between the canary's directory and the writable one")
    w.need(bool(dst & _MAKE_REG), "landlock: no make_reg right in the writable directory")
    w.need((dst & ~src & handled & landlock.FILE_RIGHTS) == 0,
           "landlock: the link would gain rights the canary does not have")
    return w


def _exp_setuid(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.ll(w, t.probe_file("setuid"), _MAKE_REG, "make_reg")
    j.sc(w, "chmod", {1: 0o4755})
    return w


def _exp_loosen_mode(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.ll(w, t.probe_file("loosen"), _MAKE_REG, "make_reg")
    j.sc(w, "chmod", {1: 0o644})
    return w


def _exp_mknod(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mknodat")
    j.ll(w, t.probe_file("mknod"), _MAKE_CHAR, "make_char")
    w.need(j.has_cap(_CAP_MKNOD), "capabilities: CAP_MKNOD dropped")
    return w.need("user" not in j.ns, "user namespace: no device nodes")


def _run_modify_protected(ctx: _Ctx, out: _Out) -> Outcome:
    """Change, replace or remove each file granted read-only inside a writable grant. Opening
    it for writing is the test (nothing is written); a rename over it or an unlink that goes
    through is undone at once, with the original content. The first file changed is the
    escape; every one must hold."""
    denied: Outcome = ("denied", "")
    for path in ctx.targets.protected_files:
        outcome = _modify_one(ctx, out, path)
        if outcome[0] != "denied":
            return outcome
        denied = outcome
    return denied


def _modify_one(ctx: _Ctx, out: _Out, path: str) -> Outcome:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        return _ok(f"opened {path} for writing")
    except OSError as exc:
        out.note(f"{os.path.basename(path)}: open for writing: {_errname(exc.errno or 0)}")
    with open(path, "rb") as handle:
        original = handle.read()
    replacement = os.path.join(os.path.dirname(path), f".cleancoin-probe-{ctx.targets.token}-replace")
    try:
        with open(replacement, "wb") as handle:
            handle.write(original)
        os.rename(replacement, path)
        return _ok(f"renamed another file over {path} (its content put back)")
    except OSError as exc:
        out.note(f"{os.path.basename(path)}: rename over it: {_errname(exc.errno or 0)}")
    finally:
        if os.path.exists(replacement):
            os.unlink(replacement)
    try:
        os.unlink(path)
    except OSError as exc:
        return ctx.denied(exc, EROFS="a read-only bind mount over the file",
                          EBUSY="the file is a mount point in the view")
    with open(path, "wb") as handle:
        handle.write(original)
    return _ok(f"removed {path} (then put it back)")


def _exp_protected(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    assert t.protected_files
    j.sc(w, "openat")
    w.need(j.view is None, f"view: {', '.join(t.protected_files)} bound read-only over the writable directory")
    return w
