"""No working directory on the import path of CleanCoin's interpreters (sandbox/import_path.py).

Attack test: a program confined by `CleanCoin-sandbox run --policy examples/program` writes
modules into its ${datadir}, the operator's working directory. The operator's PYTHONPATH has
an empty entry (`PYTHONPATH=$PYTHONPATH:/x` with PYTHONPATH unset: ":/x"), or a relative one.
Found 12-08 (h108): the next CleanCoin program started there imported them unconfined: `re.py`
before a console script's first line ran, `_distutils_hack.py` while `site` started (setuptools'
.pth file imports it), a `cleancoin/` package in place of the installed one, for the console
scripts and for the node the GUI and the demo start (`python -P -m cleancoin.cli.mp_node_main`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TOOL = str(BIN / "CleanCoin-sandbox")

#: What the confined program leaves in ${datadir}: modules that mark that they ran.
_PLANT = """
set -e
cd "$1"
for name in re _distutils_hack sitecustomize; do
    printf 'open("%s/ran-%s", "w").close()\\n' "$1" "$name" > "$name.py"
done
mkdir -p cleancoin rel
printf 'open("%s/ran-cleancoin", "w").close()\\n' "$1" > cleancoin/__init__.py
cp re.py rel/re.py
"""

#: The interpreters started from the datadir: each console script a user types, and the node
#: the GUI and the demo start (-P, as they do).
_STARTS = {
    "CleanCoin-sandbox": [TOOL, "--help"],
    "CleanCoin-cli": [str(BIN / "CleanCoin-cli"), "-version"],
    "CleanCoind": [str(BIN / "CleanCoind"), "-version"],
    "CleanCoin-node": [str(BIN / "CleanCoin-node"), "-version"],
    "CleanCoin-wallet": [str(BIN / "CleanCoin-wallet"), "-version"],
    "CleanCoin-gui": [str(BIN / "CleanCoin-gui"), "-version"],
    "GUI's node": [sys.executable, "-P", "-m", "cleancoin.cli.mp_node_main", "-version"],
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datadir the confined program wrote its modules into."""
    data = tmp_path_factory.mktemp("import-path") / "data"
    data.mkdir()
    done = subprocess.run([TOOL, "run", "--policy", "examples/program", "--datadir", str(data), "--",
                           "/bin/sh", "-c", _PLANT, "plant", str(data)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (data / "re.py").exists() and (data / "cleancoin" / "__init__.py").exists()
    return data


@pytest.mark.parametrize("pythonpath", [":{abs}", "{abs}:rel:"])
@pytest.mark.parametrize("start", list(_STARTS))
def test_what_a_confined_program_writes_into_the_working_directory_never_runs(
        planted: Path, tmp_path: Path, start: str, pythonpath: str) -> None:
    """Started from the datadir with a PYTHONPATH that names it (empty or relative entry), no
    planted module runs and the program works; next to it, the absolute entry is honoured: its
    sitecustomize.py runs (the operator's own)."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text(f"open({str(tmp_path / 'ran-own')!r}, 'w').close()\n")
    for old in planted.glob("ran-*"):
        old.unlink()
    env = {**os.environ, "PYTHONPATH": pythonpath.format(abs=own)}
    done = subprocess.run(_STARTS[start], cwd=planted, env=env, capture_output=True, text=True, timeout=60)
    ran = sorted(p.name for p in planted.glob("ran-*"))
    assert ran == [], (ran, done.stderr[-2000:])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ran-own").exists()


def test_relative_entries_are_found_as_site_makes_them(tmp_path: Path) -> None:
    """The entries PYTHONPATH's empty and relative items become, and which command lines are
    CleanCoin's (the .pth file cleans only theirs)."""
    from cleancoin.sandbox.import_path import relative_entries, runs_cleancoin
    assert relative_entries(":/x::rel:./rel/../rel2:/w", "/w") == ["/w/rel", "/w/rel2"]   # /w: also absolute
    assert relative_entries(":/x", "/w") == ["/w"] and relative_entries("", "/w") == []
    py = sys.executable
    assert runs_cleancoin([py, str(BIN / "CleanCoind"), "-version"])
    assert runs_cleancoin([py, "-P", "-m", "cleancoin.cli.mp_node_main"])
    assert runs_cleancoin([py, "-X", "dev", "-mcleancoin.sandbox.zygote"])
    assert not runs_cleancoin([py, "-m", "pytest"]) and not runs_cleancoin([py, "-c", "import cleancoin"])
    assert not runs_cleancoin([py, "/usr/bin/tool", "CleanCoind"]) and not runs_cleancoin([py])
