"""No working directory on the import path of CleanCoin's interpreters.

A PYTHONPATH with an empty or relative entry ("/x:", ":/x", the result of the common
`PYTHONPATH=$PYTHONPATH:/x` with PYTHONPATH unset, or ".") puts the working directory on
sys.path, ahead of the standard library and site-packages, already made absolute when the
interpreter starts. Where a confined process can write into that directory (a node started from
its datadir, `CleanCoin-sandbox run` from its program's ${datadir}, the GUI's node), the next
interpreter started there imported what it left: `re.py` before a console script's first line
ran, `sitecustomize.py` or `_distutils_hack.py` while `site` started, a `cleancoin/` package in
place of the installed one (found 12-08, h108: each ran unconfined). The `-P` of the zygote,
the GUI's node and the demo drops the script's directory only, and the zygote's own filter of
relative entries saw them absolute already.

So the installation carries `00-cleancoin-import-path.pth` (setup.py writes it from this
file's source): `site` runs it before every other .pth file (setuptools' distutils hack
imports from the path) and before sitecustomize, in every interpreter of that installation,
and it drops those entries where the interpreter runs a CleanCoin program (a script named
CleanCoin*, or `-m cleancoin.`...). Other programs of the installation keep their PYTHONPATH
as they were given it. Each entry point calls `drop_relative` again (an installation without
the .pth file: the modules imported after that point are safe at least).

This file must import nothing that is not loaded when `site` runs (os and sys are): anything
else would be looked up on the very path it is about to clean.
"""

import os
import sys


def relative_entries(pythonpath: str, cwd: str) -> list[str]:
    """The sys.path entries PYTHONPATH's empty or relative items became (as `site` makes them:
    joined to the working directory and normalized), less any an absolute item names too."""
    items = pythonpath.split(os.pathsep) if pythonpath else []
    absolute = {os.path.normpath(item) for item in items if os.path.isabs(item)}
    found = []
    for item in items:
        if not os.path.isabs(item):
            entry = os.path.normpath(os.path.join(cwd, item))
            if entry not in absolute and entry not in found:
                found.append(entry)
    return found


def runs_cleancoin(argv: list[str]) -> bool:
    """Whether an interpreter's command line (sys.orig_argv) runs a CleanCoin program: a script
    named CleanCoin* (the console scripts), or a module of the cleancoin package (`-m`)."""
    args = argv[1:]
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "-c", "-m"):
        if args[i].startswith("-m"):            # -mmodule
            return args[i][2:].split(".")[0] == "cleancoin"
        i += 2 if args[i] in ("-W", "-X") else 1
    if i >= len(args) or args[i] in ("-", "-c"):
        return False
    if args[i] == "-m":
        return i + 1 < len(args) and args[i + 1].split(".")[0] == "cleancoin"
    return os.path.basename(args[i]).startswith("CleanCoin")


def drop_relative() -> list[str]:
    """Take PYTHONPATH's relative entries off sys.path (the first place each holds: they come
    before the installation's own); the entries dropped. Not where the interpreter ignores the
    environment (-E, -I), nor where an entry is the standard library's or a site-packages
    directory (a working directory there: dropping it would break the interpreter, and who
    can write there has the installation anyway)."""
    if sys.flags.ignore_environment:
        return []
    own = {os.path.dirname(getattr(os, "__file__", "") or "")}
    site = sys.modules.get("site")
    if site is not None and hasattr(site, "getsitepackages"):
        own.update(site.getsitepackages())
    dropped = []
    for entry in relative_entries(os.environ.get("PYTHONPATH", ""), os.getcwd()):
        if entry in sys.path and entry not in own:
            sys.path.remove(entry)
            dropped.append(entry)
    return dropped


def _at_site() -> None:
    """What the .pth file runs."""
    if runs_cleancoin(list(getattr(sys, "orig_argv", ()))):
        drop_relative()


if __name__ == "_cleancoin_import_path":     # exec'd by the .pth file (setup.py)
    try:
        _at_site()
    except Exception as exc:    # noqa: BLE001 - a .pth error must not stop every interpreter
        sys.stderr.write(f"cleancoin: could not clean the import path: {exc}\n")
