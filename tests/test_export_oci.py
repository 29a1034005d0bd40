"""`export --format oci` and `import --format oci`: the OCI runtime seccomp format.

The export is proven with a real OCI runtime: the same program makes the same syscalls under
runc with the exported profile and under our own launcher, and gets the same answers. The
import is proven on Docker's default profile: imported to TOML and exported back, it decides
every syscall (and every argument value its rules test) as the original does, up to the
differences the importer names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cleancoin.sandbox import seccomp
from cleancoin.sandbox.export import equivalence, oci
from cleancoin.sandbox.filter_spec import filter_spec
from cleancoin.sandbox.policy_loader import load_policy
from cleancoin.sandbox.syscalls import MODE_SETTING_SYSCALLS

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
DOCKER = Path("/work/shared/testdata/oci/docker-default.json")
RUNC = shutil.which("runc")
PYTHON = "/usr/bin/python3"

# Each attempt is one syscall whose answer depends on the filter alone: an allowed call with
# harmless or invalid arguments fails (or works) in the kernel the same way under both.
SYSCALLS = r'''
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def sock(family, kind):
    try:
        socket.socket(family, kind).close()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
# A pipe, not a device: Landlock (ABI 5) would refuse ioctls on a device opened inside.
pipe, _ = os.pipe()
results = {
    "getppid": call(110),
    "socket-unix": sock(socket.AF_UNIX, socket.SOCK_STREAM),
    "socket-inet": sock(socket.AF_INET, socket.SOCK_STREAM),
    "socket-netlink": sock(socket.AF_NETLINK, socket.SOCK_RAW),
    "socketpair-unix": call(53, 1, 1, 0, 0),
    "unshare-user": call(272, 0x10000000),
    "clone3": call(435, 0, 0),
    "personality-query": call(135, 0xFFFFFFFF),
    "ioctl-tiocsti": call(16, pipe, 0x5412, 0),
    "ioctl-tcgets": call(16, pipe, 0x5401, 0),
    "prctl-dumpable-on": call(157, 4, 1),
    "prctl-get-dumpable": call(157, 3),
    "keyctl": call(250, 0, 0xFFFFFFFD),
    "io_uring_setup": call(425, 0, 0),
    "setns": call(308, 0xFFFFFFFF, 0),
    "fchown": call(93, 0xFFFFFFFF, 0, 0),
    "kcmp": call(312, 1, 1, 0, 0, 0),
    "mremap-bad": call(25, 0, 0, 0, 0, 0),
}
print(json.dumps(results))
'''


def _policy(tmp_path: Path, default: str) -> Path:
    """examples/program (a program that execs) with the given default action and a few
    more denials, so that the comparison covers errno defaults and derived rules."""
    path = tmp_path / f"runc-{default.replace(':', '-')}.toml"
    path.write_text(f'extends = ["examples/program"]\n[policy]\nname = "runc-check"\n'
                    f'[seccomp]\ndefault_action = "{default}"\ndeny = ["mremap"]\n')
    return path


def _ours(policy: Path, datadir: Path) -> tuple[int, str]:
    result = subprocess.run([TOOL, "run", "--policy", str(policy), "--datadir", str(datadir), "--",
                             PYTHON, str(datadir / "syscalls.py")], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout


def _bundle(tmp_path: Path, profile: dict[str, object], script_dir: Path) -> Path:
    """A runc bundle: an empty rootfs with the host's /usr and /etc bound read-only (the
    merged-/usr links recreated), the script's directory, no capabilities, the profile."""
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    for name in ("usr", "etc", "proc", "dev", "tmp", "work"):
        (rootfs / name).mkdir(parents=True)
    mounts = [{"destination": "/proc", "type": "proc", "source": "proc"},
              {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
              {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}]
    for name in ("usr", "etc"):
        mounts.append({"destination": f"/{name}", "type": "bind", "source": f"/{name}",
                       "options": ["rbind", "ro", "nosuid", "nodev"]})
    for name in ("bin", "lib", "lib64", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            os.symlink(os.readlink(host), rootfs / name)
        elif host.is_dir():
            (rootfs / name).mkdir()
            mounts.append({"destination": f"/{name}", "type": "bind", "source": str(host),
                           "options": ["rbind", "ro", "nosuid", "nodev"]})
    mounts.append({"destination": "/work", "type": "bind", "source": str(script_dir),
                   "options": ["rbind", "ro", "nosuid", "nodev"]})
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0},
                    "args": [PYTHON, "/work/syscalls.py"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
                    "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "ambient", "inheritable")},
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                  "seccomp": profile},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def _runc(bundle: Path) -> tuple[int, str]:
    name = f"cleancoin-{uuid.uuid4().hex[:12]}"
    try:
        result = subprocess.run([RUNC, "run", "--bundle", str(bundle), name], capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run([RUNC, "delete", "--force", name], capture_output=True, timeout=30)
    return result.returncode, result.stdout


@pytest.mark.skipif(RUNC is None or os.geteuid() != 0 or not os.path.exists(PYTHON),
                    reason="needs runc (make setup installs it), root and /usr/bin/python3")
@pytest.mark.parametrize("default", ["errno:EACCES", "kill_process"])
def test_runc_with_the_exported_profile_decides_as_our_launcher(tmp_path: Path, default: str) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    (datadir / "syscalls.py").write_text(SYSCALLS)
    policy = _policy(tmp_path, default)
    exported = subprocess.run([TOOL, "export", "--format", "oci", str(policy)], capture_output=True,
                              text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    profile = json.loads(exported.stdout)
    code_ours, out_ours = _ours(policy, datadir)
    code_runc, out_runc = _runc(_bundle(tmp_path, profile, datadir))
    if default == "errno:EACCES":
        assert code_ours == 0 and code_runc == 0, (out_ours, out_runc)
        ours, theirs = json.loads(out_ours), json.loads(out_runc)
        assert ours == theirs
        # The answers are the filter's: allowed, refused by the default, by a rule, by a
        # derived rule, by a socket family, by the fixed clone3 answer.
        assert ours["getppid"] == "ok" and ours["socket-unix"] == "ok" and ours["ioctl-tcgets"] == "ENOTTY"
        assert ours["unshare-user"] == "EACCES" and ours["io_uring_setup"] == "EACCES"
        assert ours["ioctl-tiocsti"] == "EPERM" and ours["prctl-dumpable-on"] == "EPERM"
        assert ours["socket-inet"] == "EAFNOSUPPORT" and ours["clone3"] == "ENOSYS"
        assert ours["mremap-bad"] == "EACCES" and ours["fchown"] == "EACCES"
    else:
        # Under kill_process the first refused call (unshare: after the allowed and the
        # errno-answered ones) ends both with SIGSYS, and nothing is printed.
        assert code_ours == 128 + 31 and code_runc == 128 + 31, (code_ours, code_runc, out_ours, out_runc)


def test_docker_default_round_trip_allows_the_same(tmp_path: Path) -> None:
    imported = tmp_path / "docker-default.toml"
    result = subprocess.run([TOOL, "import", "--format", "oci", str(DOCKER), "--out", str(imported),
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    notes = json.loads(result.stdout)["notes"]
    check = subprocess.run([TOOL, "check", str(imported)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    exported = subprocess.run([TOOL, "export", "--format", "oci", str(imported)], capture_output=True,
                              text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    original = json.loads(DOCKER.read_text())
    back = json.loads(exported.stdout)
    policy = load_policy(str(imported))
    table = seccomp.rule_table(filter_spec(policy))
    conditions = equivalence.conditions_of(((e.name, e.args) for e in oci.effective(original).entries),
                                           ((r.syscall, r.args) for r in table.rules))
    ours = seccomp.compile_filter(filter_spec(policy)).bpf
    for name, filt in (("imported policy", ours), ("exported profile", oci.compile_profile(back))):
        differences = equivalence.compare(oci.compile_profile(original), filt, conditions)
        # What the importer says differs, and nothing else: socket() of a family the kernel
        # does not have (0, 46 and up: EAFNOSUPPORT from the kernel or from the filter),
        # alg and vsock (refused both ways, EAFNOSUPPORT instead of EPERM), and socketpair
        # beyond unix (unix only: the kernel itself has it for unix, and tipc where loaded).
        for diff in differences:
            if diff.syscall == "socket":
                family = diff.args[0]
                assert family in (0, 38, 40) or family >= 46, (name, diff)
                assert diff.b == "errno:97", (name, diff)
            elif diff.syscall in MODE_SETTING_SYSCALLS:
                # Stricter than Docker's profile by design: every filter of ours refuses the
                # set-user-ID and set-group-ID bits in a mode (seccomp.rule_table).
                assert diff.args[MODE_SETTING_SYSCALLS[diff.syscall][0]] & 0o6000 and diff.b == "errno:1", (name, diff)
            elif diff.syscall == "openat2":
                assert diff.b == "errno:38", (name, diff)       # its mode is unreadable: ENOSYS
            else:
                assert diff.syscall == "socketpair" and diff.args[0] != 1 and diff.b == "errno:97", (name, diff)
        assert any("socketpair is allowed for unix only" in n for n in notes)
        assert any("alg, vsock" in n for n in notes)
    # Our export of the imported policy is our own filter, rule for rule.
    assert equivalence.compare(ours, oci.compile_profile(back), conditions) == []
