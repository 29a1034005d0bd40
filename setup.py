"""Builds the compiled parts into the package: the sandbox's two programs, the pid namespace's
waiter (sandbox/pidns_waiter.c, docs/sandbox.md "The waiting processes") and the denial log's
monitor (sandbox/denial_monitor.c, docs/sandbox.md "Denial log"), and the node's batch
signature verifier (components/common/sigbatch.c, a shared library sigbatch.py loads with
ctypes, docs/node.md), and the import path's guard, 00-cleancoin-import-path.pth
(sandbox/import_path.py); everything else is in pyproject.toml. A C compiler is needed anyway
(python-prctl compiles against libcap); without one the install stops and says so."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: (source, installed file, what it is, extra compiler flags) for each compiled part.
PROGRAMS = ((Path("sandbox/pidns_waiter.c"), Path("cleancoin/sandbox/pidns-waiter"), "the pid namespace's waiter", ()),
            (Path("sandbox/denial_monitor.c"), Path("cleancoin/sandbox/denial-monitor"), "the denial log's monitor", ()),
            # A shared library that calls coincurve's libsecp256k1 through addresses it is given.
            (Path("components/common/sigbatch.c"), Path("cleancoin/components/common/_sigbatch.so"),
             "the batch signature verifier", ("-shared", "-fPIC", "-pthread")))

#: Sorted before setuptools' distutils-precedence.pth, which imports from the path.
IMPORT_PATH_PTH = "00-cleancoin-import-path.pth"


def _without_docstrings(source: str) -> str:
    """`source` as ast.unparse writes it, without docstrings or comments (the .pth line holds
    2 KiB of it instead of 5)."""
    import ast
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


class BuildPyWithWaiter(build_py):
    """build_py, then the compiled programs (cc -O2, dynamically linked: glibc's pages are shared)."""

    def run(self) -> None:
        super().run()
        compiler = shlex.split(os.environ.get("CC", "cc"))
        for source, target, what, extra in PROGRAMS:
            if shutil.which(compiler[0]) is None:
                raise SystemExit(f"building {source} ({what}) needs a C compiler: "
                                 f"'{compiler[0]}' is not on PATH (Debian: apt-get install gcc)")
            out = Path(self.build_lib) / target
            out.parent.mkdir(parents=True, exist_ok=True)
            command = [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", *extra, "-o", str(out), str(source)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"building {source} ({what}) failed: "
                                 f"{' '.join(command)}\n{done.stderr}")
            out.chmod(0o755)
        # The import path's guard (sandbox/import_path.py: no working directory on the path of
        # CleanCoin's interpreters), run by `site` at every start from site-packages itself:
        # before the console scripts' first import, sitecustomize and the other .pth files.
        source = _without_docstrings(Path("sandbox/import_path.py").read_text())
        pth = Path(self.build_lib) / IMPORT_PATH_PTH
        # Compiled only where PYTHONPATH has an entry to drop: exec'ing the whole file took about
        # 2.2 ms of every start of every interpreter of the installation (load 9, 2 cores); the
        # line as it is, 0.15-0.22 ms (setuptools' distutils-precedence.pth: 0.06-0.13 ms).
        pth.write_text("import os, sys; p = os.environ.get('PYTHONPATH', ''); p and not sys.flags.ignore_environment "
                       "and not all(map(os.path.isabs, p.split(os.pathsep))) and "
                       f"exec({source!r}, {{'__name__': '_cleancoin_import_path'}})\n")


setup(cmdclass={"build_py": BuildPyWithWaiter})
