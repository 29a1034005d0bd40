"""Builds the compiled programs of the sandbox, the pid namespace's waiter
(sandbox/pidns_waiter.c, docs/sandbox.md "The waiting processes") and the denial log's
monitor (sandbox/denial_monitor.c, docs/sandbox.md "Denial log"), into the package beside
sandbox/pidns.py; everything else is in pyproject.toml. A C compiler is needed anyway
(python-prctl compiles against libcap); without one the install stops and says so."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: (source, installed program, what it is) for each compiled program.
PROGRAMS = ((Path("sandbox/pidns_waiter.c"), Path("cleancoin/sandbox/pidns-waiter"), "the pid namespace's waiter"),
            (Path("sandbox/denial_monitor.c"), Path("cleancoin/sandbox/denial-monitor"), "the denial log's monitor"))


class BuildPyWithWaiter(build_py):
    """build_py, then the compiled programs (cc -O2, dynamically linked: glibc's pages are shared)."""

    def run(self) -> None:
        super().run()
        compiler = shlex.split(os.environ.get("CC", "cc"))
        for source, target, what in PROGRAMS:
            if shutil.which(compiler[0]) is None:
                raise SystemExit(f"building {source} ({what}) needs a C compiler: "
                                 f"'{compiler[0]}' is not on PATH (Debian: apt-get install gcc)")
            out = Path(self.build_lib) / target
            out.parent.mkdir(parents=True, exist_ok=True)
            command = [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(source)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"building {source} ({what}) failed: "
                                 f"{' '.join(command)}\n{done.stderr}")
            out.chmod(0o755)


setup(cmdclass={"build_py": BuildPyWithWaiter})
