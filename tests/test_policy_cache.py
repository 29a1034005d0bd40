"""The validated-policy cache (sandbox/policy_cache.py): a hit is the policy a full load
gives, and any change that would make a full load give another policy (a file's bytes, a file
that now shadows a shipped one, a symlink pointing elsewhere), a tampered or planted entry,
or one that is not the package owner's is a miss, never a stale policy.

Each test points the cache at a package directory of its own (`filter_cache.package_dir`).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from cleancoin.sandbox import filter_cache, policy_cache
from cleancoin.sandbox.errors import PolicyErrors
from cleancoin.sandbox.policy_files import shipped_policy
from cleancoin.sandbox.policy_loader import load_policy

NOBODY = 65534

ROOT = Path(__file__).resolve().parent.parent
CHILD = """\
extends = ["base.toml"]

[policy]
name = "child"
description = "a policy built on a file beside it"
"""
BASE = """\
extends = ["base/python.toml"]

[policy]
name = "base"
description = "a base"

[namespaces]
net = {net}
"""



@pytest.fixture()
def policies(tmp_path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "child.toml").write_text(CHILD)
    (folder / "base.toml").write_text(BASE.format(net="true"))
    return folder


def _entry(path: str) -> str:
    name = policy_cache.key(path)
    assert name is not None
    return os.path.join(filter_cache.cache_dir(policy_cache.DIRNAME), name)


def test_a_hit_is_the_full_load(package, policies) -> None:
    path = str(policies / "child.toml")
    full = load_policy(path)
    assert policy_cache.load(path) is None                 # nothing stored yet
    assert policy_cache.load_policy(path) == full          # a miss: loaded in full, stored
    assert os.path.isfile(_entry(path))
    hit = policy_cache.load(path)
    assert hit == full and hit is not full and hit.files == full.files
    shipped = shipped_policy("node")
    assert policy_cache.load_policy(shipped) == load_policy(shipped) == policy_cache.load(shipped)


def test_a_changed_file_is_a_miss(package, policies) -> None:
    path = str(policies / "child.toml")
    assert policy_cache.load_policy(path).namespaces.net is True
    (policies / "base.toml").write_text(BASE.format(net="false"))   # an included file changes
    assert policy_cache.load(path) is None
    assert policy_cache.load_policy(path).namespaces.net is False
    assert policy_cache.load(path).namespaces.net is False          # and the entry follows


def test_an_entry_holds_the_digest_of_the_bytes_parsed_not_of_the_file_read_again(package, policies) -> None:
    """A file its owner changes between the full load and the entry's write: until 12-08 the
    entry took the digest of the file read again, and every later hit gave the policy of the
    old bytes for the new ones (net = true below, the file saying false), until the next edit.
    The loader's digests of what it parsed make that a miss."""
    path = str(policies / "child.toml")
    for digests, stale in ((None, True), ({}, False)):
        (policies / "base.toml").write_text(BASE.format(net="true"))
        edges: list[tuple[str, str, str]] = []
        policy = load_policy(path, edges, digests)
        (policies / "base.toml").write_text(BASE.format(net="false"))   # edited in between
        assert policy_cache.store(path, policy, edges, digests)
        hit = policy_cache.load(path)
        assert (hit is not None and hit.namespaces.net is True) == stale, (digests, hit)
    assert policy_cache.load_policy(path).namespaces.net is False


def test_a_file_that_now_shadows_a_shipped_policy_is_a_miss(package, policies) -> None:
    """`extends = ["base/python.toml"]` names the shipped base until a file of that name appears
    beside the policy: the loader then takes that file, and so must the cache."""
    path = str(policies / "base.toml")
    first = policy_cache.load_policy(path)
    assert first.files[0] == shipped_policy("base/python")
    (policies / "base").mkdir()
    (policies / "base" / "python.toml").write_text(
        (ROOT / "policies" / "base" / "python.toml").read_text().replace(
            'name = "base/python"', 'name = "base/python"\n# a local copy'))
    assert policy_cache.load(path) is None
    again = policy_cache.load_policy(path)
    assert again.files[0] == str(policies / "base" / "python.toml") == load_policy(path).files[0]


def test_an_include_whose_symlink_now_points_elsewhere_is_a_miss(package, policies, tmp_path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "base.toml").write_text(BASE.format(net="true"))     # the same bytes, elsewhere
    real = policies / "real-base.toml"
    os.replace(policies / "base.toml", real)
    os.symlink(real, policies / "base.toml")
    path = str(policies / "child.toml")
    policy_cache.load_policy(path)
    assert policy_cache.load(path) is not None
    os.unlink(policies / "base.toml")
    os.symlink(other / "base.toml", policies / "base.toml")
    assert policy_cache.load(path) is None


def test_a_policy_with_errors_is_never_stored(package, policies) -> None:
    (policies / "child.toml").write_text(CHILD + "\n[seccomp]\nallow = [\"no_such_syscall\"]\n")
    path = str(policies / "child.toml")
    for _ in range(2):
        with pytest.raises(PolicyErrors):
            policy_cache.load_policy(path)
    assert not os.path.exists(_entry(path))


def _forge(path: str, payload: bytes) -> None:
    """Rewrite the entry of `path` with `payload` and a header that matches it."""
    entry = _entry(path)
    data = open(entry, "rb").read()[len(policy_cache.MAGIC):]
    header = json.loads(data.partition(b"\n")[0])
    header["sha256"] = filter_cache._sha256(payload)
    with open(entry, "wb") as handle:
        handle.write(policy_cache.MAGIC + json.dumps(header).encode() + b"\n" + payload)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_payload_cannot_run_code(package, policies, tmp_path) -> None:
    """Even an entry that passes every check (owner, mode, key, hash, files) is read by an
    unpickler that knows only the model's classes."""
    path = str(policies / "child.toml")
    policy_cache.load_policy(path)
    marker = tmp_path / "ran"
    _forge(path, pickle.dumps(_RunsCode(str(marker))))
    assert policy_cache.load(path) is None
    assert not marker.exists()
    # A payload of the model's classes with a matching hash is taken (so the test can fail).
    _forge(path, pickle.dumps(load_policy(str(policies / "base.toml"))))
    assert policy_cache.load(path) is None        # its files are not the entry's files


def test_a_tampered_or_foreign_entry_is_a_miss(package, policies) -> None:
    path = str(policies / "child.toml")
    full = policy_cache.load_policy(path)
    entry = _entry(path)
    data = bytearray(open(entry, "rb").read())
    data[-5] ^= 0x01
    open(entry, "wb").write(bytes(data))
    assert policy_cache.load(path) is None
    assert policy_cache.load_policy(path) == full                  # rewritten
    assert policy_cache.load(path) == full
    os.chown(entry, NOBODY, NOBODY)
    assert policy_cache.load(path) is None
    os.chown(entry, os.geteuid(), os.getegid())
    os.chmod(entry, 0o666)
    assert policy_cache.load(path) is None


def test_run_takes_the_policy_from_the_cache_without_the_loader(tmp_path) -> None:
    """`CleanCoin-sandbox run` end to end, on the installed package: the second run finds the
    entry and imports neither the loader nor tomllib (the point of the cache), and its
    program's status still passes through."""
    import shutil
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="cleancoin-policy-cache-", dir="/var/tmp"))  # not /tmp: a tmpfs there
    policy = folder / "run.toml"
    policy.write_text(f'extends = ["{ROOT / "tests" / "policies" / "general.toml"}"]\n\n'
                      '[policy]\nname = "cached-run"\n\n[namespaces]\nnet = true\n\n'
                      '[filesystem]\nexecute = ["${base_prefix}", "${prefix}", "/usr/bin", "/usr/lib"]\n\n'
                      '[seccomp]\nallow = [{ syscall = "execve", reason = "run execs" }]\n')
    data = folder / "data"
    data.mkdir()
    tool = str(Path(sys.executable).parent / "CleanCoin-sandbox")
    argv = [tool, "run", "--policy", str(policy), "--datadir", str(data), "--",
            sys.executable, "-c", "raise SystemExit(7)"]
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 7
    probe = ("import sys, runpy; sys.argv = " + repr(argv) + "\n"
             "from cleancoin.cli import sandbox_main\n"
             "code = sandbox_main.main(sys.argv[1:])\n"
             "print('LOADER' if 'cleancoin.sandbox.policy_loader' in sys.modules else 'NO-LOADER',"
             " 'TOML' if 'tomllib' in sys.modules else 'NO-TOML', code)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[-3:] == ["NO-LOADER", "NO-TOML", "7"], (out.stdout, out.stderr)
    # The same policy edited: the loader runs again and sees the change.
    policy.write_text(policy.read_text().replace('net = true', 'net = false'))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[-3:] == ["LOADER", "TOML", "7"], (out.stdout, out.stderr)
    shutil.rmtree(folder, ignore_errors=True)
