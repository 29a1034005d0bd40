"""The compiled-filter cache (sandbox/filter_cache.py): a hit is the filter a fresh compile
gives; an entry that is stale, torn, tampered with, planted by another user, writable by
others or a symlink is never used (the filter is compiled again); and the cache lives only
where the code's owner writes, not where a confined program of the same user could.

Each test points the cache at a package directory of its own (`filter_cache.package_dir`), so
that the real files and permission checks are exercised without touching the installed one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

from cleancoin.sandbox import filter_cache, seccomp
from cleancoin.sandbox.filter_spec import filter_spec
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy

NOBODY = 65534



@pytest.fixture(scope="module")
def spec() -> seccomp.FilterSpec:
    return filter_spec(load_policy(shipped_policy("strict")))


def _entry(spec: seccomp.FilterSpec, notify: bool = False) -> str:
    name = filter_cache.key(spec, notify)
    assert name is not None
    return os.path.join(filter_cache.cache_dir(), name)


def test_a_hit_is_the_fresh_compile(package, spec) -> None:
    fresh = seccomp.compile_filter(spec, cached=False)
    first = seccomp.compile_filter(spec)            # a miss: compiled, stored
    path = _entry(spec)
    assert os.path.isfile(path)
    st = os.stat(path)
    assert st.st_uid == os.geteuid() and not st.st_mode & 0o077
    assert not os.stat(filter_cache.cache_dir()).st_mode & 0o077
    assert filter_cache.load(os.path.basename(path)) == fresh
    assert first == fresh and seccomp.compile_filter(spec) == fresh


def test_the_key_follows_everything_the_bpf_depends_on(package, spec) -> None:
    plain = filter_cache.key(spec, False)
    assert plain == filter_cache.key(spec, False)
    assert plain != filter_cache.key(spec, True)              # the denial log's form
    assert plain != filter_cache.key(dataclasses.replace(spec, allowed=spec.allowed | {"ptrace"}), False)
    assert plain != filter_cache.key(dataclasses.replace(spec, deny_dumpable=not spec.deny_dumpable), False)
    # Where a rule was written is not part of the filter: moving a policy keeps its entry.
    moved = dataclasses.replace(spec, where=dataclasses.replace(spec.where, file="/elsewhere.toml", line=9))
    assert plain == filter_cache.key(moved, False)
    # The notifying form's hit is that form, not the plain one.
    seccomp.compile_filter(spec)
    assert seccomp.compile_filter(spec, notify_errno=True) == seccomp.compile_filter(
        spec, notify_errno=True, cached=False)


def test_a_tampered_entry_is_compiled_again_and_rewritten(package, spec) -> None:
    fresh = seccomp.compile_filter(spec)
    path = _entry(spec)
    data = bytearray(open(path, "rb").read())
    # An attacker's edit: the last instruction (ALLOW for everything), header left as it was.
    allow = bytes.fromhex("060000000000ff7f")         # BPF_RET SECCOMP_RET_ALLOW
    data[-8:] = allow if data[-8:] != allow else bytes(8)
    open(path, "wb").write(bytes(data))
    assert filter_cache.load(os.path.basename(path)) is None
    assert seccomp.compile_filter(spec) == fresh
    assert filter_cache.load(os.path.basename(path)) == fresh     # rewritten


def test_a_forged_entry_with_a_matching_hash_but_another_key_is_refused(package, spec) -> None:
    """The header must name the entry's own key: another filter's entry (a wider policy's)
    copied under this name, or a stale one, is a miss."""
    wide = dataclasses.replace(spec, allowed=spec.allowed | {"ptrace", "mount"})
    seccomp.compile_filter(wide)
    seccomp.compile_filter(spec)
    target = _entry(spec)
    os.replace(_entry(wide), target)
    assert filter_cache.load(os.path.basename(target)) is None
    assert seccomp.compile_filter(spec).bpf == seccomp.compile_filter(spec, cached=False).bpf


@pytest.mark.parametrize("how", ["symlink", "group-writable", "another user", "torn", "too large"])
def test_an_entry_not_to_be_trusted_is_never_used(package, spec, how, tmp_path) -> None:
    """A planted entry with a self-consistent header (its hash matches its BPF) and an
    allow-everything program is refused for what it is, not for its content."""
    fresh = seccomp.compile_filter(spec)
    path = _entry(spec)
    name = os.path.basename(path)
    allow_all = bytes.fromhex("060000000000ff7f") * 2      # BPF_RET SECCOMP_RET_ALLOW
    header = json.dumps({"key": name, "sha256": filter_cache._sha256(allow_all),
                         "instructions": len(allow_all) // 8, "allowed": 1, "conditional": 0,
                         "unresolved": []}).encode()
    planted = filter_cache.MAGIC + header + b"\n" + allow_all
    os.unlink(path)
    if how == "symlink":
        elsewhere = tmp_path / "planted"
        elsewhere.write_bytes(planted)
        os.symlink(elsewhere, path)
    else:
        with open(path, "wb") as handle:
            handle.write(planted[:-3] if how == "torn" else planted)
        os.chmod(path, 0o620 if how == "group-writable" else 0o600)
        if how == "another user":
            os.chown(path, NOBODY, NOBODY)
        if how == "too large":
            with open(path, "ab") as handle:
                handle.write(b"\0" * filter_cache.MAX_ENTRY_BYTES)
    assert filter_cache.load(name) is None
    got = seccomp.compile_filter(spec)
    assert got == fresh and got.bpf != allow_all


def test_the_planted_entry_is_taken_when_trusted(package, spec) -> None:
    """The counterpart of the test above (so that it can fail): the same self-consistent
    entry, written by the owner with the right mode, IS what the cache returns. The trust is
    the owner's, as the code's (filter_cache's docstring)."""
    seccomp.compile_filter(spec)
    name = os.path.basename(_entry(spec))
    bpf = bytes.fromhex("060000000000ff7f")
    header = json.dumps({"key": name, "sha256": filter_cache._sha256(bpf), "instructions": 1,
                         "allowed": 1, "conditional": 0, "unresolved": []}).encode()
    with open(_entry(spec), "wb") as handle:
        handle.write(filter_cache.MAGIC + header + b"\n" + bpf)
    assert filter_cache.load(name).bpf == bpf


def test_a_cache_directory_others_may_write_is_not_used(package, spec) -> None:
    seccomp.compile_filter(spec)
    name = os.path.basename(_entry(spec))
    assert filter_cache.load(name) is not None
    os.chmod(filter_cache.cache_dir(), 0o777)
    assert filter_cache.load(name) is None
    assert not filter_cache.store(name, seccomp.compile_filter(spec, cached=False))
    os.chmod(filter_cache.cache_dir(), 0o700)
    os.chown(filter_cache.cache_dir(), NOBODY, NOBODY)
    assert filter_cache.load(name) is None


def test_a_package_others_may_write_gets_no_cache(package, spec) -> None:
    """A package directory anyone may write cannot vouch for anything: no cache at all."""
    os.chmod(package, 0o777)
    assert seccomp.compile_filter(spec) == seccomp.compile_filter(spec, cached=False)
    assert not os.path.exists(filter_cache.cache_dir())


def test_a_cache_directory_swapped_for_a_symlink_is_not_followed(package, spec, tmp_path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir(mode=0o700)
    os.symlink(decoy, filter_cache.cache_dir())
    seccomp.compile_filter(spec)
    assert os.listdir(decoy) == []
    assert filter_cache.load(filter_cache.key(spec, False)) is None


def test_the_cache_stays_bounded(package, spec, monkeypatch) -> None:
    monkeypatch.setattr(filter_cache, "MAX_ENTRIES", 8)
    for n in range(20):
        filter_cache.store(f"{n:064x}", seccomp.compile_filter(spec, cached=False))
    assert len(os.listdir(filter_cache.cache_dir())) <= 8
    assert stat.S_ISDIR(os.stat(filter_cache.cache_dir()).st_mode)


def test_the_installed_cache_is_beside_the_code() -> None:
    """Not under $HOME or XDG_CACHE_HOME, which a confined program of the same user may be
    granted: inside the package, which only the code's owner writes."""
    here = os.path.dirname(os.path.abspath(seccomp.__file__))
    assert filter_cache.cache_dir() == os.path.join(here, "__filter_cache__")
    assert not filter_cache.cache_dir().startswith(os.path.expanduser("~") + os.sep + ".cache")
