"""Builds the one compiled program of the sandbox, the pid namespace's waiter
(sandbox/pidns_waiter.c, docs/sandbox.md "The waiting processes"), into the package beside
sandbox/pidns.py, and the batch signature verifier (components/common/sigbatch.c, a shared
library) beside components/common/sigbatch.py; everything else is in pyproject.toml. A C compiler is needed anyway
(python-prctl compiles against libcap); without one the install stops and says so."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path("sandbox/pidns_waiter.c")
TARGET = Path("cleancoin/sandbox/pidns-waiter")
# The batch signature verifier (components/common/sigbatch.c, loaded by sigbatch.py with
# ctypes): a shared library that calls coincurve's libsecp256k1 through addresses it is given.
SIG_SOURCE = Path("components/common/sigbatch.c")
SIG_TARGET = Path("cleancoin/components/common/_sigbatch.so")


class BuildPyWithWaiter(build_py):
    """build_py, then the waiter program (cc -O2, dynamically linked: glibc's pages are shared)."""

    def run(self) -> None:
        super().run()
        compiler = shlex.split(os.environ.get("CC", "cc"))
        if shutil.which(compiler[0]) is None:
            raise SystemExit(f"building {SOURCE} (the pid namespace's waiter) needs a C compiler: "
                             f"'{compiler[0]}' is not on PATH (Debian: apt-get install gcc)")
        out = Path(self.build_lib) / TARGET
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"building {SOURCE} (the pid namespace's waiter) failed: "
                             f"{' '.join(command)}\n{done.stderr}")
        out.chmod(0o755)
        lib = Path(self.build_lib) / SIG_TARGET
        lib.parent.mkdir(parents=True, exist_ok=True)
        command = [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread", "-o", str(lib),
                   str(SIG_SOURCE)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"building {SIG_SOURCE} (the batch signature verifier) failed: "
                             f"{' '.join(command)}\n{done.stderr}")


setup(cmdclass={"build_py": BuildPyWithWaiter})
