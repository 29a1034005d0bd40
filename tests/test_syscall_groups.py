"""Tests for the systemd-style syscall groups in `cleancoin.sandbox.syscall_groups`.

The membership facts checked here come from systemd's src/shared/seccomp-util.c
(`syscall_filter_sets[]`). If one of them fails, either the table was mistyped or systemd
changed. Look at seccomp-util.c before "fixing" the test.
"""

from __future__ import annotations

import dataclasses
import re
import types

import pyseccomp
import pytest

from cleancoin.sandbox import syscall_groups as sg
from cleancoin.sandbox.syscall_groups import GROUPS, GroupDef, expand_group, groups_containing, is_group

# systemd's groups, minus @known (generated from the kernel's syscall list, deliberately left out).
SYSTEMD_GROUP_NAMES = frozenset(
    {
        "@aio", "@basic-io", "@chown", "@clock", "@cpu-emulation", "@debug", "@default",
        "@file-system", "@io-event", "@ipc", "@keyring", "@memlock", "@module", "@mount",
        "@network-io", "@obsolete", "@pkey", "@privileged", "@process", "@raw-io", "@reboot",
        "@resources", "@sandbox", "@setuid", "@signal", "@swap", "@sync", "@system-service",
        "@timer",
    }
)

# Names in systemd's table that libseccomp 2.5.4 does not know on any architecture, either
# because they are newer than that release or because libseccomp spells the call differently
# (newfstat/fstatat/llseek). A subset check, so a newer libseccomp that knows more still passes.
UNKNOWN_TO_LIBSECCOMP_2_5_4 = frozenset(
    {
        "file_getattr", "file_setattr", "fstatat", "getxattrat", "listmount", "listxattrat",
        "llseek", "lsm_get_self_attr", "lsm_list_modules", "mseal", "newfstat",
        "open_tree_attr", "removexattrat", "riscv_hwprobe", "setxattrat", "statmount",
        "uretprobe",
    }
)

# Groups that exist for other architectures, so few of their members are x86_64 calls.
MOSTLY_OTHER_ARCH = frozenset({"@cpu-emulation", "@raw-io", "@obsolete"})

SYSCALL_NAME = re.compile(r"^[a-z0-9_]+$")
GROUP_NAME = re.compile(r"^@[a-z][a-z0-9-]*$")

# libseccomp's __NR_SCMP_ERROR: the name is unknown to libseccomp on every architecture.
# (Other negative numbers are pseudo-syscalls: known, but not present on the asked arch.)
SCMP_ERROR = -1


def _x86_64_number(name: str) -> int:
    # Resolve for x86_64 explicitly, not NATIVE, so the test means the same on any build host.
    return pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)


def _all_syscall_names() -> set[str]:
    return {m for g in GROUPS.values() for m in g.members if not is_group(m)}


# --- shape of the table ---------------------------------------------------------------------


def test_group_names_are_exactly_systemds() -> None:
    assert set(GROUPS) == SYSTEMD_GROUP_NAMES


def test_keys_match_definitions_and_descriptions_are_present() -> None:
    for key, group in GROUPS.items():
        assert isinstance(group, GroupDef)
        assert group.name == key
        assert group.description.strip(), key
        assert isinstance(group.members, tuple) and group.members, key


def test_groups_table_is_read_only() -> None:
    assert isinstance(GROUPS, types.MappingProxyType)
    with pytest.raises(TypeError):
        GROUPS["@mine"] = GroupDef("@mine", "x", ("read",))  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        GROUPS["@swap"].members = ("read",)  # type: ignore[misc]


def test_every_name_is_a_syscall_name_or_group_reference() -> None:
    for group in GROUPS.values():
        for member in group.members:
            if is_group(member):
                assert GROUP_NAME.match(member), (group.name, member)
            else:
                assert SYSCALL_NAME.match(member), (group.name, member)


def test_members_follow_systemds_layout() -> None:
    # systemd lists group references first, then syscall names in strcmp order, with no
    # duplicates. Keeping that order lets a reader diff this table against seccomp-util.c.
    for group in GROUPS.values():
        refs = [m for m in group.members if is_group(m)]
        names = [m for m in group.members if not is_group(m)]
        assert list(group.members) == refs + names, group.name
        assert refs == sorted(refs), group.name
        assert names == sorted(names), group.name
        assert len(set(group.members)) == len(group.members), group.name


def test_every_group_reference_is_defined() -> None:
    for group in GROUPS.values():
        for member in group.members:
            if is_group(member):
                assert member in GROUPS, f"{group.name} refers to undefined {member}"


def test_no_cycles_between_groups() -> None:
    # Walk the reference graph here, independently of expand_group, so a bug in the module's
    # own cycle guard cannot hide a cycle in the table.
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "cycle: " + " -> ".join((*path, name))
        if name in done:
            return
        for member in GROUPS[name].members:
            if is_group(member):
                visit(member, (*path, name))
        done.add(name)

    for name in GROUPS:
        visit(name, ())
    assert done == set(GROUPS)


def test_cycle_guard_reports_the_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    looped = types.MappingProxyType(
        {
            "@a": GroupDef("@a", "a", ("@b", "read")),
            "@b": GroupDef("@b", "b", ("@a", "write")),
        }
    )
    monkeypatch.setattr(sg, "GROUPS", looped)
    # __wrapped__ skips the lru_cache, so this fake table never leaks into the cached results.
    with pytest.raises(ValueError, match="@a -> @b -> @a"):
        expand_group.__wrapped__("@a")


def test_reference_to_undefined_group_raises_key_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.MappingProxyType({"@a": GroupDef("@a", "a", ("@gone", "read"))})
    monkeypatch.setattr(sg, "GROUPS", broken)
    with pytest.raises(KeyError, match="@gone"):
        expand_group.__wrapped__("@a")


# --- libseccomp names -----------------------------------------------------------------------


def test_every_syscall_name_is_known_to_libseccomp_or_listed_as_newer() -> None:
    # libseccomp knows every arch's names (other archs' calls come back as negative
    # pseudo-numbers), so __NR_SCMP_ERROR means a typo, unless the name is a known newcomer.
    unknown = {n for n in _all_syscall_names() if _x86_64_number(n) == SCMP_ERROR}
    assert unknown <= UNKNOWN_TO_LIBSECCOMP_2_5_4, sorted(unknown - UNKNOWN_TO_LIBSECCOMP_2_5_4)


def test_most_names_are_real_x86_64_syscalls() -> None:
    names = _all_syscall_names()
    native = {n for n in names if _x86_64_number(n) >= 0}
    # 359 of 481 with libseccomp 2.5.4; the rest are 32-bit, other-arch or newer names.
    assert len(native) / len(names) >= 0.7


@pytest.mark.parametrize("name", sorted(SYSTEMD_GROUP_NAMES))
def test_each_group_is_mostly_x86_64_syscalls(name: str) -> None:
    own = [m for m in GROUPS[name].members if not is_group(m)]
    native = [m for m in own if _x86_64_number(m) >= 0]
    if name in MOSTLY_OTHER_ARCH:
        assert native, f"{name} has no x86_64 member at all"
    else:
        assert len(native) / len(own) >= 0.5, (name, sorted(set(own) - set(native)))


def test_system_service_expansion_is_mostly_x86_64_syscalls() -> None:
    expanded = expand_group("@system-service")
    native = {n for n in expanded if _x86_64_number(n) >= 0}
    assert len(native) >= 250
    assert len(native) / len(expanded) >= 0.7


# --- expand_group / is_group / groups_containing --------------------------------------------


def test_is_group() -> None:
    assert is_group("@system-service")
    assert is_group("@nosuch")  # names a reference, defined or not
    assert not is_group("read")
    assert not is_group("")


def test_expand_group_unknown_raises_key_error() -> None:
    with pytest.raises(KeyError):
        expand_group("@nosuch")
    with pytest.raises(KeyError):
        expand_group("system-service")  # the "@" is part of the name
    with pytest.raises(KeyError):
        expand_group("read")


def test_expansion_holds_only_syscall_names() -> None:
    for name in GROUPS:
        expanded = expand_group(name)
        assert isinstance(expanded, frozenset)
        assert expanded
        assert not any(is_group(m) for m in expanded), name


def test_expansion_includes_nested_groups() -> None:
    for name, group in GROUPS.items():
        for member in group.members:
            if is_group(member):
                assert expand_group(member) <= expand_group(name), (name, member)


def test_system_service_allows_what_services_need() -> None:
    expanded = expand_group("@system-service")
    for call in ("read", "write", "openat", "epoll_wait", "socket", "execve", "close", "mmap"):
        assert call in expanded, call
    # Services may tighten their own sandbox: @default includes @sandbox.
    assert {"seccomp", "landlock_create_ruleset", "landlock_restrict_self"} <= expanded


def test_system_service_excludes_privileged_operations() -> None:
    expanded = expand_group("@system-service")
    for call in ("mount", "ptrace", "bpf", "kexec_load", "init_module", "reboot", "swapon",
                 "chroot", "pivot_root", "iopl", "settimeofday", "perf_event_open"):
        assert call not in expanded, call


def test_privileged_facts() -> None:
    expanded = expand_group("@privileged")
    # Directly listed.
    for call in ("chroot", "pivot_root", "bpf", "acct", "capset", "sethostname", "setuid",
                 "open_by_handle_at", "quotactl", "vhangup"):
        assert call in expanded, call
    # Through its nested groups: @chown, @clock, @module, @raw-io, @reboot, @swap.
    for call in ("chown", "settimeofday", "init_module", "iopl", "kexec_load", "reboot", "swapon"):
        assert call in expanded, call
    # mount() is only in @mount; ptrace() only in @debug.
    assert "mount" not in expanded
    assert "ptrace" not in expanded
    # systemd lists the uid calls one by one because setgid() is not necessarily privileged.
    assert "setgid" not in expanded
    assert "@setuid" not in GROUPS["@privileged"].members


def test_small_groups_match_systemd() -> None:
    assert expand_group("@reboot") == {"kexec_file_load", "kexec_load", "reboot"}
    assert expand_group("@swap") == {"swapoff", "swapon"}
    assert expand_group("@module") == {"delete_module", "finit_module", "init_module"}
    assert expand_group("@keyring") == {"add_key", "keyctl", "request_key"}
    assert expand_group("@pkey") == {"pkey_alloc", "pkey_free", "pkey_mprotect"}
    assert expand_group("@sandbox") == {
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "seccomp",
    }
    assert {"mount", "umount2", "pivot_root", "chroot", "fsmount", "move_mount"} <= expand_group("@mount")
    assert "ptrace" in expand_group("@debug")


def test_system_service_is_built_from_systemds_subgroups() -> None:
    refs = {m for m in GROUPS["@system-service"].members if is_group(m)}
    assert refs == {
        "@aio", "@basic-io", "@chown", "@default", "@file-system", "@io-event", "@ipc",
        "@keyring", "@memlock", "@network-io", "@process", "@resources", "@setuid", "@signal",
        "@sync", "@timer",
    }


def test_groups_containing() -> None:
    assert groups_containing("read") == ("@basic-io", "@system-service")
    assert groups_containing("ptrace") == ("@debug",)
    assert groups_containing("mount") == ("@mount",)
    assert groups_containing("chroot") == ("@mount", "@privileged")
    assert groups_containing("seccomp") == ("@default", "@sandbox", "@system-service")
    assert groups_containing("no_such_call") == ()


def test_groups_containing_agrees_with_expand_group() -> None:
    for call in _all_syscall_names():
        found = groups_containing(call)
        assert list(found) == sorted(found)
        assert set(found) == {g for g in GROUPS if call in expand_group(g)}, call
