"""`CleanCoin-sandbox import --format oci` on malformed profiles: a profile comes from anyone
(a vendor, a pull request), so each bad value is refused with the JSON path of it, status 125
and nothing written; never a traceback, never a policy made of what was misread (before 12-06:
a name 1 or an argument index 9 went into the policy, 1e400 raised OverflowError, and wrong
types answered with Python's own messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def _entry(**changes: Any) -> dict[str, Any]:
    return {"names": ["read"], "action": "SCMP_ACT_ALLOW", **changes}


def _profile(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": list(entries), **top}


def _arg(**changes: Any) -> dict[str, Any]:
    return {"index": 0, "value": 1, "op": "SCMP_CMP_EQ", **changes}


CASES = [
    (_profile(_entry(names="read")), "syscalls[0].names: expected an array of strings, got 'read'"),
    (_profile(_entry(names=[1])), "syscalls[0].names[0]: expected a name"),
    (_profile(_entry(names=["read\n[filesystem]"])), "syscalls[0].names[0]: expected a name"),
    (_profile(_entry(names=[])), None),       # an entry without names allows nothing: fine
    (_profile(_entry(args=[_arg(index=9)])), "syscalls[0].args[0].index: expected an integer from 0 to 5, got 9"),
    (_profile(_entry(args=[_arg(index=True)])), "syscalls[0].args[0].index: expected an integer"),
    (_profile(_entry(args=[_arg(value=-1)])), "syscalls[0].args[0].value: expected an integer from 0 to"),
    (_profile(_entry(args=[_arg(value=1e400)])), "syscalls[0].args[0].value: expected an integer from 0 to"),
    (_profile(_entry(args=[_arg(value=2**64)])), "syscalls[0].args[0].value: expected an integer from 0 to"),
    (_profile(_entry(args=[_arg(op=None)])), "syscalls[0].args[0].op: expected a name"),
    (_profile(_entry(args={"index": 0})), "syscalls[0].args: expected an array of conditions"),
    (_profile(_entry(args=["x"])), "syscalls[0].args[0]: expected an object, got 'x'"),
    (_profile(_entry(action="SCMP_ACT_ERRNO", errnoRet="x")), "syscalls[0].errnoRet: expected an integer from 1 to 4095"),
    (_profile(_entry(includes={"caps": 7})), "syscalls[0].includes.caps: expected an array of strings, got 7"),
    (_profile(_entry(excludes=[])), "syscalls[0].excludes: expected an object, got []"),
    (_profile(_entry(includes={"minKernel": 5})), "syscalls[0].includes.minKernel: expected a name"),
    (_profile(_entry(action=3)), "syscalls[0].action: expected a name"),
    (_profile({"action": "SCMP_ACT_ALLOW"}), "syscalls[0]: no names"),
    (_profile("read"), "syscalls[0]: expected an object, got 'read'"),
    (_profile(architectures=7), "architectures: expected an array of strings, got 7"),
    (_profile(archMap=[{"architecture": 1}]), "archMap[0].architecture: expected a name"),
    (_profile(defaultErrnoRet=0), "defaultErrnoRet: expected an integer from 1 to 4095, got 0"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": ["read"]}}, "syscalls: expected an array of objects"),
    ({"defaultAction": 5}, "defaultAction: expected a name"),
    ([], "not an OCI seccomp profile: no defaultAction"),
]


@pytest.mark.parametrize("profile,error", CASES, ids=[str(i) for i in range(len(CASES))])
def test_a_malformed_profile_is_refused_where_it_is_wrong(tmp_path: Path, profile: Any, error: str | None) -> None:
    source = tmp_path / "profile.json"
    source.write_text(json.dumps(profile))
    out = tmp_path / "imported.toml"
    result = subprocess.run([TOOL, "import", "--format", "oci", str(source), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    if error is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 125, (result.returncode, result.stdout, result.stderr)
    assert f"{source}: {error}" in result.stderr, result.stderr
    assert not out.exists()


def test_a_policy_the_loader_refuses_is_never_written() -> None:
    """The safety net behind the checks: what the importer makes is loaded before it is
    written; a policy that does not load is an error naming the policy's own key."""
    from cleancoin.sandbox.export import oci
    with pytest.raises(oci.FormatError) as caught:
        oci._check_loads('[policy]\nname = "x"\n[seccomp]\nallow = [1]\n', "x")   # noqa: SLF001
    message = str(caught.value)
    assert message.startswith("the policy made from it does not load, so none is written: x.toml:")
    assert "seccomp.allow" in message, message
