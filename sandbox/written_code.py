"""Where a sandboxed program may run code that an earlier run of it wrote: a variable the
policy sets, or keeps, that names a place beneath a write grant outliving the run.

Why: a program reads code and configuration from places its environment names, not only
from the search paths: Python's user site (`$HOME/.local/lib/pythonX.Y/site-packages`, its
usercustomize.py and .pth files run at every start), git's `~/.gitconfig` (an alias or
`core.pager` runs a command), a shell's rc files, `$XDG_CONFIG_HOME`'s programs. Until 12-08
`explain` flagged only the search paths (PYTHONPATH, LD_PRELOAD ...); shipped
examples/program set `HOME = "${datadir}"`, its write grant, and the usercustomize.py one run
planted ran in the next run's python3, a `.gitconfig` alias in its git (tests/test_cli_sandbox.py).
`explain` and `check` both print these lines (one list, from here).

A set variable is looked at by its value, whatever its name: any program may read code or
configuration from a path a variable names, so a list of names would always miss one. The
names below only say what is known to read from there. A kept variable (`environment`) has
its value at launch: it is named when a write grant could hold it.
"""

from __future__ import annotations

import fnmatch
import os

from .model import Policy

#: Variables that say where code is found. The loader's and the program search path run what
#: is there only where the policy also grants execute (write grants are mounted noexec
#: otherwise); everything else is read by an interpreter or a program that runs what it says.
EXEC_VARIABLES = ("PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT")
#: What is known to run code from the place a variable names (the rest: "a program that reads
#: configuration or code from there").
KNOWN_READERS = {
    "HOME": "python's user site-packages and usercustomize.py, git's ~/.gitconfig, a shell's rc files",
    "PYTHONUSERBASE": "python's user site-packages and usercustomize.py",
    "PYTHONPATH": "python's imports", "PYTHONHOME": "python's standard library",
    "PYTHONSTARTUP": "an interactive python", "PYTHONPYCACHEPREFIX": "python's compiled modules",
    "XDG_CONFIG_HOME": "git's config and other programs' configuration",
    "XDG_DATA_HOME": "programs' plugins and data", "BASH_ENV": "every non-interactive bash",
    "ENV": "an interactive sh", "ZDOTDIR": "zsh's rc files", "GIT_CONFIG_GLOBAL": "git",
    "PERL5LIB": "perl's modules", "RUBYLIB": "ruby's libraries", "NODE_PATH": "node's modules",
}
#: Kept from the launcher's environment, their value unknown until launch.
HOME_LIKE = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "PYTHONUSERBASE", "BASH_ENV", "ENV", "ZDOTDIR")


def _beneath(entry: str, roots: list[str]) -> str | None:
    return next((r for r in roots if entry == r or entry.startswith(r + "/") or r == ""), None)


def code_from_written_paths(policy: Policy) -> list[str]:
    """A line for each variable the policy sets to a path beneath a write grant that is not a
    private tmpfs (it outlives the run), and for each code or home variable it keeps from the
    launcher while it has such a grant; [] when none."""
    fs = policy.filesystem
    private = {g.value.rstrip("/") for g in fs.tmpfs}
    kept = [g.value.rstrip("/") for g in fs.write
            if g.value.rstrip("/") not in private and not g.value.startswith("/dev/")]
    executable = [g.value.rstrip("/") for g in fs.execute]
    lines = []
    for name, value in policy.process.set_environment:
        separator = " " if name == "LD_PRELOAD" else ":"
        for entry in value.split(separator):
            entry = entry.rstrip("/")
            root = _beneath(entry, kept) if entry.startswith(("/", "${")) else None
            if root is None or (name in EXEC_VARIABLES and _beneath(entry, executable) is None):
                continue
            readers = KNOWN_READERS.get(name, "a program that reads configuration or code from it")
            lines.append(f"RUNS CODE IT MAY WRITE: {name} names {entry}, beneath the write grant "
                         f"{root or '/'}: what it leaves there runs at its next start ({readers})")
    keeps = policy.process.environment
    if kept and not any(fnmatch.fnmatchcase("HOME", glob) for glob in keeps) and \
            "HOME" not in dict(policy.process.set_environment):
        # No HOME at all: python's site and git look the user's home up in the passwd file.
        home = _passwd_home()
        root = _beneath(home, [k for k in kept if k.startswith("/")]) if home else None
        if root is not None:
            lines.append(f"RUNS CODE IT MAY WRITE: without HOME its programs take the passwd file's "
                         f"home, {home}, beneath the write grant {root or '/'} ({KNOWN_READERS['HOME']})")
    if kept:
        for name in HOME_LIKE:
            if any(fnmatch.fnmatchcase(name, glob) for glob in keeps) and \
                    name not in dict(policy.process.set_environment):
                lines.append(f"RUNS CODE IT MAY WRITE where the launcher's {name} lies beneath a write "
                             f"grant ({', '.join(kept)}): {name} is kept from its environment "
                             f"({KNOWN_READERS[name]})")
    return lines


def _passwd_home() -> str | None:
    """This user's home in the passwd file (where a program without HOME looks), or None."""
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_dir.rstrip("/") or "/"
    except KeyError:
        return None
