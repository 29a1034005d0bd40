"""Property-based tests of the policy loader (hypothesis): arbitrary TOML documents, arbitrary
values in the right places, arbitrary bytes and mutated shipped policies.

The property: `load_policy` either returns a Policy or raises PolicyErrors whose every entry
is a PolicyError naming a file, a line (0 when there is none) and a key; never any other
exception. A policy it accepts must also be accepted by the launch preparation
(`compile_plan`: variables, paths, Landlock, the seccomp filter, rlimits), which may only
refuse it with a PolicyError or an EnforcementError (a path that does not exist here, a
kernel feature missing), and `explain` must describe it.

Examples per test: the hypothesis profile of tests/conftest.py (`ci`: 100, `fuzz`: 5000).
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleancoin.sandbox import kernel
from cleancoin.sandbox.errors import EnforcementError, PolicyError, PolicyErrors, PolicyFileError
from cleancoin.sandbox.explain import explain
from cleancoin.sandbox.model import Policy
from cleancoin.sandbox.plan_compiler import compile_plan
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from cleancoin.sandbox.policy_spec import RLIM_MAX, RLIMITS, SECTIONS, TOP_LEVEL
from cleancoin.sandbox.variables import KNOWN

EXAMPLES = settings.default.max_examples
SHIPPED = ["wallet", "node", "strict", "base/python"]

# ------------------------------------------------------------------------------- strategies

KEY_NAMES = sorted({*SECTIONS, *TOP_LEVEL, *(k for keys in SECTIONS.values() for k in keys),
                    *RLIMITS, "path", "reason", "optional", "syscall", "family", "raw", "index",
                    "op", "value", "mask", "soft", "hard", "action", "args", "name"})
EDGE_INTS = [0, 1, -1, 5, 6, 64, 65, 1023, 65535, 65536, 2**31 - 64, 2**31, 2**32, 2**63 - 1,
             2**63, 2**64 - 1, 2**64, 10**20, 10**100, -(2**63)]
EDGE_STRINGS = ["/", "/usr", "/usr/lib", "/tmp", "/proc/self", "/nonexistent/x", "relative/path",
                "${datadir}", "${walletdir}/x", "${tmpdir}", "${port}", "${nope}", "$", "$$",
                "${", "${}", "read", "write", "execve", "ptrace", "@system-service", "@privileged",
                "@nope", "openat2", "not_a_syscall", "unix", "inet", "inet6", "packet", "netlink",
                "kill_process", "log", "allow", "errno:EPERM", "errno:NOPE", "errno:", "eq",
                "masked_eq", "hard", "soft", "best_effort", "infinity", "unlimited", "any",
                "cap_net_raw", "sys_admin", "NAME", "A*", "", " ", "a\u0000b", "\u202e", "é" * 3,
                "x" * 300, "[", "]", "{", "#", '"', "'", "\\", "\n"]

scalars = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(EDGE_STRINGS), st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)), st.dates(), st.times(),
)
keys = st.sampled_from(KEY_NAMES) | st.text(st.characters(exclude_categories=("Cs",)),
                                             min_size=1, max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=25)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") \
            if value in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    """A TOML text for `doc`: plain keys first, then one [table] per dict value (its values
    inline), and [[array of tables]] for a list of dicts."""
    head, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(f"[{toml_key(key)}]")
            tables += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables.append(f"[[{toml_key(key)}]]")
                tables += [f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()]
        else:
            head.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(head + tables) + "\n"


@st.composite
def policy_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents shaped like policies: known sections and keys most of the time, values that
    are sometimes of the right kind and sometimes anything."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["extends"] = draw(st.lists(st.sampled_from(
            [shipped_policy("base/python"), "base.toml", "missing.toml", "policy.toml", "/",
             "", "a\u0000"]) | st.text(max_size=10), max_size=2))
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)) | keys, max_size=4, unique=True)):
        known = SECTIONS.get(section, {})
        body: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(list(known)) | keys if known else keys,
                                 max_size=5, unique=True)):
            body[key] = draw(values)
        doc[section] = body if draw(st.integers(0, 9)) else draw(values)
    return doc


def mutate(text: str, data: st.DataObject) -> str:
    """A shipped policy with a few random edits: cut a range, insert text, repeat a line."""
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["cut", "insert", "repeat"]))
        if kind == "cut":
            text = text[:where] + text[where + data.draw(st.integers(1, 40)):]
        elif kind == "insert":
            text = text[:where] + data.draw(st.sampled_from(
                ["[", "]", "{", '"', "\n[seccomp]\n", " = ", "\u0000", "99999999999999999999",
                 "1e23", "${", "[[seccomp.rules]]\n", "\n[process.rlimits]\nnofile = "])
                | st.text(max_size=20)) + text[where:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = data.draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
            text = "".join(lines)
    return text


# ----------------------------------------------------------------------------- the property

@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-policy")


@pytest.fixture(scope="module")
def launch(workdir: Path) -> tuple[dict[str, str], kernel.KernelFeatures]:
    """Launch variables for every known name, and this kernel's features (detected once)."""
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    values = {name: str(data) for name in KNOWN}
    values.update(port="18444", rpcport="18443", ipcport="18445")
    return values, kernel.detect()


def load_cleanly(path: Path) -> Policy | None:
    """The property of the loader; the Policy when it accepts the file."""
    try:
        return load_policy(str(path))
    except PolicyErrors as errors:
        assert errors.errors
        for error in errors.errors:
            assert type(error) in (PolicyError, PolicyFileError), error
            assert isinstance(error.where.line, int) and error.where.line >= 0
            assert isinstance(error.where.key, str) and error.where.file
            assert str(error).startswith(error.where.file)
            assert "Traceback" not in str(error)
        return None


def launch_cleanly(policy: Policy, launch: tuple[dict[str, str], kernel.KernelFeatures]) -> None:
    """A policy check accepted: explain describes it; the launch preparation accepts it or
    refuses it with a clean error, and its rlimits are numbers setrlimit takes."""
    assert explain(policy).to_text()
    values, features = launch
    try:
        plan = compile_plan(policy, values, features)
    except (PolicyError, EnforcementError):
        return
    for _name, _number, soft, hard in plan.rlimits:
        for limit in (soft, hard):
            assert limit is None or 0 <= limit <= RLIM_MAX


def write(workdir: Path, text: str | bytes, name: str = "policy.toml") -> Path:
    path = workdir / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@settings(max_examples=EXAMPLES)
@given(doc=policy_documents(), base=st.none() | policy_documents())
def test_policy_shaped_documents(workdir: Path, launch: Any, doc: dict[str, Any],
                                 base: dict[str, Any] | None) -> None:
    base_path = workdir / "base.toml"
    if base is None:
        base_path.unlink(missing_ok=True)
    else:
        write(workdir, toml_document(base), "base.toml")
    policy = load_cleanly(write(workdir, toml_document(doc)))
    if policy is not None:
        launch_cleanly(policy, launch)


@given(doc=st.dictionaries(keys, values, max_size=6))
def test_arbitrary_toml_documents(workdir: Path, launch: Any, doc: dict[str, Any]) -> None:
    policy = load_cleanly(write(workdir, toml_document(doc)))
    if policy is not None:
        launch_cleanly(policy, launch)


@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes(workdir: Path, raw: bytes) -> None:
    load_cleanly(write(workdir, raw))


@given(name=st.sampled_from(SHIPPED), data=st.data())
def test_mutated_shipped_policies(workdir: Path, launch: Any, name: str, data: st.DataObject) -> None:
    text = Path(shipped_policy(name)).read_text()
    # The shipped files extend each other by relative path: keep the bases reachable.
    text = text.replace('"base/python.toml"', f'"{shipped_policy("base/python")}"')
    policy = load_cleanly(write(workdir, mutate(text, data)))
    if policy is not None:
        launch_cleanly(policy, launch)


def test_the_generators_reach_both_outcomes(workdir: Path, launch: Any) -> None:
    """The property is not vacuous: a shipped policy loads and launches; a broken one fails
    with file, line and key."""
    text = Path(shipped_policy("wallet")).read_text().replace(
        '"base/python.toml"', f'"{shipped_policy("base/python")}"')
    policy = load_cleanly(write(workdir, text))
    assert policy is not None
    launch_cleanly(policy, launch)
    assert load_cleanly(write(workdir, toml_document({"process": {"rlimits": {"nofile": 10**20}}}))) is None
    assert toml_value(float("inf")) == "inf" and toml_value(float("nan")) == "nan"
    assert os.path.exists(workdir / "policy.toml")


@given(depth=st.integers(0, 3000), kind=st.sampled_from(["array", "table", "dotted", "header"]),
       section=st.sampled_from(["process", "policy", "seccomp", "x"]))
def test_nesting_of_any_depth(workdir: Path, depth: int, kind: str, section: str) -> None:
    if kind == "array":
        text = f"[{section}]\nfds = " + "[" * depth + "]" * depth + "\n"
    elif kind == "table":
        text = f"[{section}]\nname = " + "{a = " * depth + "1" + "}" * depth + "\n"
    elif kind == "dotted":
        text = f"[{section}]\n" + "a." * depth + "b = 1\n"
    else:
        text = f"[{section}." + ".".join(["a"] * (depth + 1)) + "]\n"
    load_cleanly(write(workdir, text))
