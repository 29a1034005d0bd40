"""Run a command as a real unprivileged uid that can use this checkout's Python, whatever
directory the checkout and its interpreter lie in (test support; run as root).

    python as_user.py --uid U --gid G --home DIR [--expose PATH ...] -- COMMAND ARG...

The Python that runs the tests (its venv, its base installation, the checkout) may lie below
a directory another uid cannot enter: /root (0700) here, where pyenv keeps the interpreter,
or wherever CI clones the repository. Changing the host (chmod 711 /root) is not for a test.
So, as bubblewrap would, this helper enters a private mount namespace, and covers each
directory on the way to a needed path that the uid cannot search with a tmpfs (mode 0711,
search only: nothing else of it is listed or readable) onto which only the needed paths are
bind-mounted back, at their own paths. Which directories those are is found by asking the
kernel, as the uid (a forked child that has dropped to it), not by reading mode bits, so ACLs
and the like count. Then it drops to the uid and gid with no supplementary groups and no
capabilities (setresgid, setgroups, setresuid: the kernel clears every capability of a
process whose uids all become non-zero) and execs COMMAND with HOME set and the environment
otherwise as given.

Exit status 125 with a line on stderr when it cannot do this (a needed path that the uid could
not use even through the namespace); otherwise COMMAND's.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_BIND, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x1000, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {source} on {target}")


def blocked_at(paths: list[str], uid: int, gid: int) -> str | None:
    """The first directory (an ancestor of one of `paths`, or the path itself) that `uid`
    cannot search, asked of the kernel in a child that has become `uid`; None when every
    path can be reached."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        answer = ""
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for path in paths:
                parts = path.strip("/").split("/")
                for depth in range(len(parts) + 1):
                    here = "/" + "/".join(parts[:depth])
                    if os.path.isdir(here) and not os.access(here, os.X_OK):
                        answer = here
                        break
                    if not os.path.lexists(here):    # not there at all: nothing to expose
                        break
                if answer:
                    break
        finally:
            os.write(write_end, answer.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read().decode()
    os.waitpid(pid, 0)
    return answer or None


def expose(blocking: str, needed: list[str]) -> None:
    """Cover `blocking` with a search-only tmpfs holding the `needed` paths below it, each
    bind-mounted back at its own path (the original opened before the cover hides it)."""
    below = sorted({p for p in needed if p.startswith(blocking.rstrip("/") + "/")})
    # A path inside another needed path comes along with it.
    below = [p for p in below if not any(p != q and p.startswith(q + "/") for q in below)]
    fds = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in below]
    _mount("tmpfs", blocking, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711")
    for path, fd in fds:
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o711, exist_ok=True)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(path, 0o711)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def enter_view(paths: list[str], uid: int, gid: int) -> str | None:
    """Enter a private mount namespace in which `uid` can reach every one of `paths` (still
    as root: drop to the uid after). Returns what went wrong, or None."""
    needed = [os.path.realpath(p) for p in paths]
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for _ in range(16):
        blocking = blocked_at(needed, uid, gid)
        if blocking is None:
            return None
        if blocking in needed:
            return f"uid {uid} cannot search {blocking}, which it needs"
        expose(blocking, needed)
    return f"still blocked at {blocking}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--expose", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or os.geteuid() != 0:
        print("as_user: needs root and a command", file=sys.stderr)
        return 125
    problem = enter_view([*args.expose, args.home], args.uid, args.gid)
    if problem:
        print(f"as_user: {problem}", file=sys.stderr)
        return 125
    os.setgroups([])
    os.setresgid(args.gid, args.gid, args.gid)
    os.setresuid(args.uid, args.uid, args.uid)
    os.chdir(args.home)
    os.umask(0o022)
    os.execvpe(command[0], command, {**os.environ, "HOME": args.home})
    return 127      # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- The tests' side: who to run as, and the command line that does it. ---------------------

def interpreter_paths() -> list[str]:
    """What a process of another uid needs to reach to run this venv's executables: the venv,
    the interpreter it links to (every link on the way resolved), the base installation."""
    import sysconfig
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    link = os.path.join(os.path.dirname(sys.executable), "python")
    paths.add(os.path.realpath(link if os.path.exists(link) else sys.executable))
    return sorted(os.path.realpath(p) for p in paths)


def skip_reason() -> str | None:
    """Why tests cannot act as another uid here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to act as other uids"
    for name, refusing in (("user/max_user_namespaces", "0"), ("kernel/unprivileged_userns_clone", "0"),
                           ("kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            value = open(f"/proc/sys/{name}").read().strip()
        except OSError:
            continue        # the knob is not there: nothing refuses
        if value == refusing:
            return f"unprivileged user namespaces are off ({name} = {value}): a non-root operator's sandbox needs them"
    return None


class Account:
    """A local user without a passwd entry (the kernel needs none): a uid and gid of its own,
    a home directory it owns (mode `home_mode`) below `base`."""

    def __init__(self, uid: int, base: str, name: str, home_mode: int = 0o755) -> None:
        self.uid = self.gid = uid
        self.home = os.path.join(base, name)
        os.mkdir(self.home, home_mode)
        os.chown(self.home, uid, uid)
        os.chmod(self.home, home_mode)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a login of this user: no root's variables (XDG_RUNTIME_DIR,
        PYTHONPATH, the node's CleanCoinD)."""
        bin_dir = os.path.dirname(sys.executable)
        return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "USER": f"u{self.uid}",
                "LOGNAME": f"u{self.uid}", "LANG": "C.UTF-8", **extra}

    def command(self, *argv: str, expose: tuple[str, ...] = ()) -> list[str]:
        """`argv` run as this user, the interpreter (and `expose`) reachable."""
        exposed = [f"--expose={p}" for p in (*interpreter_paths(), *expose)]
        return [sys.executable, "-I", os.path.abspath(__file__), f"--uid={self.uid}", f"--gid={self.gid}",
                f"--home={self.home}", *exposed, "--", *argv]

    def python(self, code: str, *args: str) -> list[str]:
        """The venv's Python running `code` (with `args`) as this user."""
        return self.command(sys.executable, "-I", "-c", code, *args)
