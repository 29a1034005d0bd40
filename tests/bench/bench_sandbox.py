"""Sandbox benchmarks: spawn overhead, restrict_self, the exec path, seccomp steady state,
and the size of each shipped policy's filter (`make bench`).

Every figure is printed next to a baseline measured in the same run, interleaved with it so
that drift (other load on the machine, CPU frequency) hits both sides alike. Targets are
printed beside their figure (MET/MISS) and never fail the run. A run fails only when a
measurement itself is broken: a child that does not echo, a report without step timings, a
"sandboxed" loop that runs without its filter, a loop that took no time.

1. Spawn overhead on the component path (`launcher.spawn(plan, target=fn)`, what the zygote
   does per component and the probe per attempt): spawn() to the child's first echo on its
   socket, strict policy vs no sandbox; then where the sandboxed time goes (each step of
   sandbox/steps.py, the report, the hand-over to the target) and namespace variants.
   Both kinds are forks of this pytest process: fork costs grow with the parent's memory, so
   bench_zygote.py measures the same through the small zygote, as a node spawns its wallet.
2. restrict_self of the node policy (CleanCoin-node's own confinement), in forks of this
   process, against a fork that does nothing.
3. The exec path (`launcher.spawn(plan, [program])`, `CleanCoin-sandbox run`): in process,
   and the tool itself against the program started plainly (issue #16's target).
4. Seccomp steady state: syscall loops with only the strict BPF loaded vs an allow-all filter
   and vs no filter; also under the whole strict sandbox.
5. Each shipped policy's filter: BPF instructions and syscalls allowed.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import dataclasses
import fcntl
import gc
import json
import mmap
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from figures import bootstrap_interval, broken, median, out, p90, verdict

from cleancoin.sandbox import control, launcher, seccomp, steps
from cleancoin.sandbox import report as reports
from cleancoin.sandbox.plan import Plan
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy

SPAWN_TARGET_MS = 5.0          # issue #2: the whole sandbox adds at most this much to a spawn
SECCOMP_TARGET_PCT = 3.0       # issue #16: a filtered syscall loop at most this much slower than allow-all
RUN_TARGET_MS = 10.0           # issue #16: `CleanCoin-sandbox run` adds at most this to a plain start
SPAWN_RUNS = 50                # per kind, interleaved
SPAWN_WARMUP = 3
DECOMP_RUNS = 15
VARIANT_ROUNDS = 10
RESTRICT_RUNS = 12
EXEC_RUNS = 15
CLI_RUNS = 12
LOOP_ROUNDS = 5                # children per kind, interleaved
LOOP_REPS = 3                  # repetitions of each loop inside one child
ECHO_TIMEOUT = 20.0
GENERAL_POLICY = Path(__file__).resolve().parents[1] / "policies" / "general.toml"
SHIPPED = ("base/python", "strict", "node", "wallet", "wallet-standalone")
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_SECCOMP = 21
_LIBC = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------------------------
# marks: timestamps any process of a launch writes into memory shared with this one

class Marks:
    """monotonic_ns timestamps in a MAP_SHARED anonymous mapping: a fork (and its forks, the
    pid namespace's init and component) write, this process reads."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.slot = {name: i for i, name in enumerate(self.names)}
        self.buf = mmap.mmap(-1, 8 * len(self.names))     # MAP_SHARED | MAP_ANONYMOUS

    def reset(self) -> None:
        self.buf[:] = bytes(len(self.buf))

    def mark(self, name: str, ns: int | None = None) -> None:
        struct.pack_into("q", self.buf, 8 * self.slot[name], time.monotonic_ns() if ns is None else ns)

    def read(self) -> dict[str, int]:
        values = struct.unpack_from(f"{len(self.names)}q", self.buf)
        return {name: v for name, v in zip(self.names, values) if v}


STEP_NAMES = [s.name for s in steps.STEPS]
MARK_NAMES = ["spawn", "child", *(f"step:{n}" for n in STEP_NAMES), "built", "sent", "returned",
              "target", "answered"]


@contextlib.contextmanager
def instrumented(marks: Marks) -> Iterator[None]:
    """Mark the child's way through launcher._child: entry, the end of every step, the report
    built and sent. The patches are made here and inherited by each fork."""
    with pytest.MonkeyPatch.context() as mp:
        def timed_step(step: steps.Step) -> steps.Step:
            def run(ctx: steps.Context) -> object:
                result = step.run(ctx)
                marks.mark(f"step:{step.name}")
                return result
            return dataclasses.replace(step, run=run)

        mp.setattr(steps, "STEPS", tuple(timed_step(s) for s in steps.STEPS))
        run_steps = steps.run

        def entered(ctx: steps.Context) -> object:
            marks.mark("child")
            return run_steps(ctx)
        mp.setattr(steps, "run", entered)
        unconfined = launcher._unconfined

        def entered_unconfined(*a: object) -> object:
            marks.mark("child")
            return unconfined(*a)
        mp.setattr(launcher, "_unconfined", entered_unconfined)
        build = reports.build

        def built(*a: object, **k: object) -> object:
            result = build(*a, **k)
            marks.mark("built")
            return result
        mp.setattr(reports, "build", built)
        send = control.send

        def sent(fd: int, message: object) -> None:
            # Marked before the write: once written, the parent may run before this child
            # is scheduled again.
            if isinstance(message, dict) and "report" in message:
                marks.mark("sent")
            send(fd, message)
        mp.setattr(control, "send", sent)
        yield


# --------------------------------------------------------------------------------------------
# an echo component, spawned the way the zygote spawns one

def _echo_target(fd: int, marks: Marks | None) -> Callable[[int], int]:
    def target(control_fd: int) -> int:
        if marks is not None:
            marks.mark("target")
        while data := os.read(fd, 65536):
            os.write(fd, data)
        return 0
    return target


@dataclasses.dataclass
class EchoRun:
    total_ms: float          # spawn() called -> echo received
    returned_ms: float       # spawn() called -> spawn() returned (report received)
    report: object
    marks: dict[str, int]


def spawn_echo(plan: Plan | None, marks: Marks | None = None) -> EchoRun:
    """Spawn an echo target under `plan` (None: no sandbox) and wait for its echo of b"ping"."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(ECHO_TIMEOUT)
    fd = theirs.fileno()
    child = None
    data = b""
    if marks is not None:
        marks.reset()
    try:
        t0 = time.monotonic_ns()
        child = launcher.spawn(plan, target=_echo_target(fd, marks), pass_fds=[fd])
        t_ret = time.monotonic_ns()
        theirs.close()
        ours.sendall(b"ping")
        while len(data) < 4:
            chunk = ours.recv(64)
            if not chunk:
                break
            data += chunk
        t_ans = time.monotonic_ns()
    except socket.timeout:
        if child is not None:
            child.kill()
        broken(f"no echo within {ECHO_TIMEOUT} s (policy {getattr(plan, 'policy', None)})")
    finally:
        theirs.close()
        ours.close()
        rc = child.wait() if child is not None else None
    if data != b"ping":
        broken(f"child echoed {data!r} instead of b'ping'")
    if rc != 0:
        broken(f"echo child exited with {rc}")
    if plan is not None and (child.report is None or not child.report.timings_us):
        broken("sandboxed child sent no report or a report without step timings")
    got: dict[str, int] = {}
    if marks is not None:
        marks.mark("spawn", t0)
        marks.mark("returned", t_ret)
        marks.mark("answered", t_ans)
        got = marks.read()
    return EchoRun((t_ans - t0) / 1e6, (t_ret - t0) / 1e6, child.report, got)


# --------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    # Not under /tmp: the policies mount a fresh tmpfs there.
    path = tempfile.mkdtemp(prefix="cleancoin-bench-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def variables(workdir: str) -> dict[str, str]:
    data = os.path.join(workdir, "data")
    os.makedirs(data, exist_ok=True)
    return {"datadir": data}


@pytest.fixture(scope="module")
def strict(variables: dict[str, str]):
    """(policy, plan, first load_policy ms, prepare ms list)."""
    t = time.perf_counter()
    policy = load_policy(shipped_policy("strict"))
    load_ms = (time.perf_counter() - t) * 1e3
    prep: list[float] = []
    plan = None
    for _ in range(10):
        t = time.perf_counter()
        plan = launcher.prepare(policy, variables)
        prep.append((time.perf_counter() - t) * 1e3)
    return policy, plan, load_ms, prep


# --------------------------------------------------------------------------------------------
# 1. spawn overhead

def test_spawn_overhead(strict, variables, workdir) -> None:
    policy, plan, load_ms, prep = strict
    out()
    out("=" * 78)
    out("SPAWN OVERHEAD: launcher.spawn(plan, target=echo) -> the child answers b'ping' on its socket")
    out("=" * 78)
    out("  the component path: every step of sandbox/steps.py in the forked child, then the target")
    out(f"  launcher process RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB "
        "(pytest; fork cost grows with it: bench_zygote.py spawns from the small zygote)")
    out("  plan preparation, once per policy, NOT in the per-spawn figures:")
    out(f"    load_policy(strict), first call in process (incl. pyseccomp import): {load_ms:7.2f} ms")
    out(f"    launcher.prepare(strict): first {prep[0]:.2f} ms, median of {len(prep)} "
        f"{median(prep):.2f} ms")

    for _ in range(SPAWN_WARMUP):
        spawn_echo(plan)
        spawn_echo(None)
    sand: list[float] = []
    base: list[float] = []
    ready: list[float] = []
    step_us: dict[str, list[int]] = {}
    for i in range(SPAWN_RUNS):
        for p in ((plan, None) if i % 2 == 0 else (None, plan)):
            run = spawn_echo(p)
            if p is None:
                base.append(run.total_ms)
                continue
            sand.append(run.total_ms)
            ready.append(run.returned_ms)
            for k, v in run.report.timings_us.items():
                step_us.setdefault(k, []).append(v)
            if set(run.report.namespaces) != set(plan.namespaces):
                broken(f"report namespaces {run.report.namespaces} != plan {plan.namespaces}")
            if not run.report.fully_enforced():
                broken(f"the strict policy is not fully enforced:\n{run.report.to_text()}")
    diff_med = median(sand) - median(base)
    out()
    out(f"  {SPAWN_RUNS} runs each, interleaved      median ms     p90 ms     min ms")
    out(f"    no sandbox (plan None)      {median(base):11.2f} {p90(base):10.2f} {min(base):10.2f}")
    out(f"    strict policy               {median(sand):11.2f} {p90(sand):10.2f} {min(sand):10.2f}")
    out(f"    difference                  {diff_med:+11.2f} {p90(sand) - p90(base):+10.2f} "
        f"{min(sand) - min(base):+10.2f}")
    out(f"    ratio strict / none         {median(sand) / median(base):11.3f} "
        f"{p90(sand) / p90(base):10.3f}")
    out(f"    strict: spawn() returned (report received) at median {median(ready):.2f} ms")
    lo, hi = bootstrap_interval(sand, base)
    out(f"    90 % bootstrap interval of the median difference: [{lo:+.2f}, {hi:+.2f}] ms")
    out(f"  target (issue #2): the sandbox adds <= {SPAWN_TARGET_MS:.1f} ms (median difference): "
        f"{diff_med:+.2f} ms -> {verdict(diff_med <= SPAWN_TARGET_MS)}")
    out()
    out("  steps in the child (report.timings_us), median over the strict runs:")
    total_us = 0.0
    for k, v in step_us.items():
        out(f"    {k:<22} {median(v):7.0f} us")
        total_us += median(v)
    out(f"    {'sum':<22} {total_us:7.0f} us")

    decompose(plan)
    variants(variables, workdir)


# --- 1b. where the time goes ----------------------------------------------------------------

def _phases(marks: dict[str, int]) -> dict[str, float]:
    """ms per phase of one instrumented run. The chain spawn -> child -> steps -> built -> sent
    -> returned -> answered (each from the previous mark present); the target's start is
    concurrent with the parent reading the report, so it is measured from `sent` aside."""
    chain = ["spawn", "child", *(f"step:{n}" for n in STEP_NAMES), "built", "sent", "returned", "answered"]
    present = [m for m in chain if m in marks]
    phases = {m: (marks[m] - marks[p]) / 1e6 for p, m in zip(present, present[1:])}
    if "target" in marks:
        phases["to_target"] = (marks["target"] - marks["spawn"]) / 1e6
        if "sent" in marks:
            phases["sent->target"] = (marks["target"] - marks["sent"]) / 1e6
    phases["total"] = (marks["answered"] - marks["spawn"]) / 1e6
    return phases


PHASE_LABELS = {
    "child": "parent: spawn() set-up + fork() until the child runs",
    **{f"step:{n}": f"step {n}" for n in STEP_NAMES},
    "built": "report.build",
    "sent": "report.to_dict",
    "returned": "report sent and received, Report.from_dict, spawn() returns",
    "answered": "parent: ping -> echo",
}


def decompose(plan: Plan) -> None:
    marks = Marks(MARK_NAMES)
    runs: dict[str, list[dict[str, float]]] = {"none": [], "strict": []}
    with instrumented(marks):
        for _ in range(2):
            spawn_echo(plan, marks)
            spawn_echo(None, marks)
        for i in range(DECOMP_RUNS):
            for kind, p in ((("strict", plan), ("none", None)) if i % 2 == 0 else (("none", None), ("strict", plan))):
                run = spawn_echo(p, marks)
                if "target" not in run.marks or (p is not None and "sent" not in run.marks):
                    broken(f"instrumented {kind} run is missing marks: {sorted(run.marks)}")
                runs[kind].append(_phases(run.marks))

    def col(kind: str, key: str) -> float | None:
        values = [r[key] for r in runs[kind] if key in r]
        return median(values) if values else None

    out()
    out(f"  WHERE THE TIME GOES: instrumented spawns ({DECOMP_RUNS} each, interleaved); marks written")
    out("  through shared memory by the child (and the pid namespace's component) as it passes")
    out("  each step; each phase ends at its mark and starts at the previous one; medians, ms.")
    out(f"    {'phase':<60}{'strict':>9}")
    for key, label in PHASE_LABELS.items():
        s = col("strict", key)
        if s is not None:
            out(f"    {label:<60}{s:9.2f}")
    out(f"    {'child: report sending -> target called (environment swapped)':<60}"
        f"{col('strict', 'sent->target') or 0:9.2f}")
    out(f"    {'':<60}{'none':>9}{'strict':>9}{'diff':>9}")
    for key, label in (("to_target", "spawn() -> the component's code starts"),
                       ("total", "spawn() -> echo received")):
        b, s = col("none", key), col("strict", key)
        assert b is not None and s is not None
        out(f"    {label:<60}{b:9.2f}{s:9.2f}{s - b:+9.2f}")
    groups = [
        ("parent set-up and fork", ("child",)),
        ("pid namespace (2 forks: PID 1 and the component)", ("step:pid namespace",)),
        ("filesystem view (tmpfs root, bind mounts, pivot_root, /proc)", ("step:filesystem view",)),
        ("namespaces + id maps + private mounts + hostname",
         ("step:namespaces", "step:id maps", "step:private mounts", "step:hostname")),
        ("landlock + capabilities + seccomp + mdwe + no_new_privs + dumpable",
         ("step:landlock", "step:capabilities", "step:seccomp", "step:mdwe", "step:no_new_privs",
          "step:dumpable")),
        ("the other steps (signals, session, stdio, fds, rlimits, ...)",
         tuple(f"step:{n}" for n in STEP_NAMES if n not in (
             "pid namespace", "filesystem view", "namespaces", "id maps", "private mounts", "hostname",
             "landlock", "capabilities", "seccomp", "mdwe", "no_new_privs", "dumpable"))),
        ("report built, sent, received", ("built", "sent", "returned")),
    ]
    out("  grouped (strict, sum of the phase medians):")
    for label, keys in groups:
        total = sum(col("strict", k) or 0.0 for k in keys)
        out(f"    {label:<66}{total:7.2f} ms")


# --- 1c. namespace variants -------------------------------------------------------------------

VARIANTS: list[tuple[str, dict[str, bool] | None]] = [
    ("no namespaces", {}),
    ("user", {"user": True}),
    ("user+ipc+uts", {"user": True, "ipc": True, "uts": True}),
    ("user+net", {"user": True, "net": True}),
    ("user+mount (filesystem view)", {"user": True, "mount": True}),
    ("user+pid (2 more forks, no /proc)", {"user": True, "pid": True}),
    ("user+mount+pid (view + /proc)", {"user": True, "mount": True, "pid": True}),
    ("strict as shipped (all six)", None),
]


def _variant_policy(workdir: str, index: int, ns: dict[str, bool]) -> str:
    """The strict policy with its namespaces set to `ns` (extends it). The base's tmpfs needs
    a mount namespace, so a variant without one extends a copy of strict over a copy of the
    base without the tmpfs."""
    parent = shipped_policy("strict")
    if not ns.get("mount"):
        text = Path(shipped_policy("base/python")).read_text()
        text = "\n".join(line for line in text.splitlines() if not line.startswith("tmpfs = ")) + "\n"
        base_copy = os.path.join(workdir, "base-without-tmpfs.toml")
        Path(base_copy).write_text(text)
        strict_text = Path(parent).read_text()
        if "\ntmpfs = " in text or 'extends = ["base/python.toml"]' not in strict_text:
            broken("the shipped base or strict policy changed shape: update _variant_policy")
        parent = os.path.join(workdir, "strict-without-tmpfs.toml")
        Path(parent).write_text(strict_text.replace('extends = ["base/python.toml"]',
                                                    f'extends = ["{base_copy}"]'))
    keys = ("user", "mount", "pid", "net", "ipc", "uts")
    body = (f'extends = ["{parent}"]\n[policy]\nname = "bench-variant-{index}"\n[namespaces]\n'
            + "".join(f"{k} = {'true' if ns.get(k) else 'false'}\n" for k in keys))
    if not any(ns.values()):
        body += 'reason = "benchmark: what the namespaces cost"\n'
    path = os.path.join(workdir, f"variant{index}.toml")
    Path(path).write_text(body)
    return path


def variants(variables: dict[str, str], workdir: str) -> None:
    plans: list[tuple[str, Plan | None]] = [("no sandbox (plan None)", None)]
    for index, (label, ns) in enumerate(VARIANTS):
        path = shipped_policy("strict") if ns is None else _variant_policy(workdir, index, ns)
        plan = launcher.prepare(load_policy(path), variables)
        want = set(plan.namespaces)
        expected = {"user", "mount", "pid", "net", "ipc", "uts"} if ns is None else {k for k, v in ns.items() if v}
        if want != expected:
            broken(f"variant {label}: plan namespaces {sorted(want)} != {sorted(expected)}")
        plans.append((label, plan))
    marks = Marks(MARK_NAMES)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in plans}
    with instrumented(marks):
        for _, p in plans:
            spawn_echo(p, marks)
        for i in range(VARIANT_ROUNDS):
            rotated = plans[i % len(plans):] + plans[:i % len(plans)]
            for label, p in rotated:
                runs[label].append(_phases(spawn_echo(p, marks).marks))

    def col(label: str, key: str) -> float:
        values = [r.get(key, 0.0) for r in runs[label]]
        return median(values)

    base_target, base_total = col(plans[0][0], "to_target"), col(plans[0][0], "total")
    out()
    out(f"  NAMESPACE VARIANTS: the strict policy with its namespaces set as shown, {VARIANT_ROUNDS} "
        "instrumented spawns each,")
    out("  round-robin. Landlock, seccomp, capabilities, rlimits are the same in all. Medians, ms;")
    out("  to target = spawn() -> the component's code starts.")
    out(f"    {'variant':<36}{'to target':>10}{'vs none':>9}{'pid ns':>8}{'view':>7}{'total':>8}{'vs none':>9}")
    for label, _ in plans:
        t, tot = col(label, "to_target"), col(label, "total")
        out(f"    {label:<36}{t:10.2f}{t - base_target:+9.2f}{col(label, 'step:pid namespace'):8.2f}"
            f"{col(label, 'step:filesystem view'):7.2f}{tot:8.2f}{tot - base_total:+9.2f}")


# --------------------------------------------------------------------------------------------
# 2. restrict_self of the node policy

def _node_variables(workdir: str) -> dict[str, str]:
    datadir = os.path.join(workdir, "node", "regtest")
    os.makedirs(os.path.join(datadir, "wallets"), mode=0o700, exist_ok=True)
    return {"datadir": datadir, "port": "18444", "rpcport": "18443", "ipcport": "18443"}


# A process like CleanCoin-node at the point where it confines itself: the node's modules
# imported, the wallet's policy fitted (for its zygote); then restrict_self("node"), timed
# inside, with its two halves (prepare_self: load and fit the policy; steps.run). With argv[2]
# "skip" it does everything but the restrict_self call: the baseline.
RESTRICT_SCRIPT = """\
import ctypes, json, os, sys, time
libc = ctypes.CDLL(None)
from cleancoin.components.init import cleancoin_node
from cleancoin.sandbox import launcher, self_restrict, steps
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
cleancoin_node._import_node_modules()
variables = json.loads(sys.argv[1])
launcher.prepare(load_policy(shipped_policy("wallet")),
                 {"walletdir": os.path.join(variables["datadir"], "wallets")})
halves = {}
def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter_ns()
        try:
            return fn(*a, **k)
        finally:
            halves[name] = (time.perf_counter_ns() - t) / 1e6
    return wrapper
self_restrict.prepare_self = timed("prepare_self", self_restrict.prepare_self)
steps.run = timed("steps", steps.run)
result = {}
if sys.argv[2] == "restrict":
    t = time.perf_counter_ns()
    report = self_restrict.restrict_self("node", variables, keep_fds={0, 1, 2})
    result = {"ms": (time.perf_counter_ns() - t) / 1e6, "halves": halves,
              "timings": report.timings_us, "fully": report.fully_enforced(),
              "namespaces": report.namespaces}
    result["seccomp"] = libc.prctl(21, 0, 0, 0, 0)      # PR_GET_SECCOMP
print(json.dumps(result))
"""


def _node_process(variables: dict[str, str], what: str) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter_ns()
    res = subprocess.run([sys.executable, "-c", RESTRICT_SCRIPT, json.dumps(variables), what],
                         capture_output=True, text=True, timeout=120, check=False)
    wall = (time.perf_counter_ns() - t0) / 1e6
    if res.returncode != 0:
        broken(f"restrict_self script ({what}) exited with {res.returncode}: {res.stderr[-600:]}")
    return wall, json.loads(res.stdout)


def test_restrict_self_node(workdir) -> None:
    variables = _node_variables(workdir)
    walls: dict[str, list[float]] = {"restrict": [], "skip": []}
    results: list[dict[str, object]] = []
    for i in range(RESTRICT_RUNS + 1):
        for what in (("restrict", "skip") if i % 2 == 0 else ("skip", "restrict")):
            wall, result = _node_process(variables, what)
            if i == 0:
                continue     # warm-up
            walls[what].append(wall)
            if what == "restrict":
                results.append(result)
    last = results[-1]
    if last.get("seccomp") != 2 or not last.get("fully"):
        broken(f"restrict_self(node) did not confine the process: {last}")
    inside = [float(r["ms"]) for r in results]  # type: ignore[arg-type]
    halves = {k: median([r["halves"][k] for r in results]) for k in ("prepare_self", "steps")}  # type: ignore[index]
    timings: dict[str, list[int]] = {}
    for r in results:
        for k, v in r["timings"].items():  # type: ignore[union-attr]
            timings.setdefault(k, []).append(v)
    skip, restricted = walls["skip"], walls["restrict"]
    out()
    out("=" * 78)
    out("RESTRICT_SELF(node): a process like CleanCoin-node confining itself")
    out("=" * 78)
    out("  each run a fresh interpreter: the node's imports, the wallet's policy fitted, then")
    out(f"  restrict_self(\"node\", ...) or not (the baseline); {RESTRICT_RUNS} runs each, interleaved")
    out(f"  namespaces entered: {', '.join(last['namespaces'])}; every mechanism fully enforced")  # type: ignore[arg-type]
    out(f"    {'':44}{'median ms':>10}{'p90 ms':>9}")
    out(f"    {'process without restrict_self (baseline)':44}{median(skip):10.2f}{p90(skip):9.2f}")
    out(f"    {'process with restrict_self(node)':44}{median(restricted):10.2f}{p90(restricted):9.2f}")
    out(f"    {'difference, ratio':44}{median(restricted) - median(skip):+10.2f}"
        f"{median(restricted) / median(skip):8.2f}x")
    out(f"    {'restrict_self(node), timed inside':44}{median(inside):10.2f}{p90(inside):9.2f}")
    out(f"    {'  of which prepare_self (load + fit)':44}{halves['prepare_self']:10.2f}")
    out(f"    {'  of which the steps (steps.run)':44}{halves['steps']:10.2f}")
    out("  the steps (report.timings_us), medians:")
    total = 0.0
    for k, v in timings.items():
        out(f"    {k:<22} {median(v):7.0f} us")
        total += median(v)
    out(f"    {'sum':<22} {total:7.0f} us")


# --------------------------------------------------------------------------------------------
# 3. the exec path: launcher.spawn(plan, [program]) and `CleanCoin-sandbox run`

RUN_POLICY = """\
extends = ["{general}"]

[policy]
name = "bench-run"
description = "The strict shape (no network, one data directory) that may run programs"

[namespaces]
net = true

[filesystem]
write = ["${{datadir}}"]
execute = ["${{base_prefix}}", "${{prefix}}", "/usr/bin", "/usr/lib"]

[seccomp]
allow = [{{ syscall = "execve", reason = "run execs the program inside the sandbox" }}]
"""

#: What CleanCoin-sandbox run cannot do without before its own code runs: the policy
#: (_pickle, from the policy cache; pickle and tomllib only when the cache misses:
#: sandbox/policy_cache.py), the models (dataclasses, which imports inspect and re), the
#: launch (_socket for its socketpair, json for the child's report, threading for the output
#: relay) and the syscalls (ctypes). Its options need no argparse since 12-07
#: (cli/run_args.py); nor the socket and pickle modules since later that day; nor the inspect
#: that dataclasses imports since 12-08 (sandbox/dataclass_import.py).
STDLIB_FLOOR = ("from cleancoin.sandbox.dataclass_import import import_dataclasses; import_dataclasses(); "
                "import json, _pickle, _socket, threading, ctypes")

EXEC_ECHO = ("import os, sys\nfd = int(sys.argv[1])\n"
             "while data := os.read(fd, 65536):\n    os.write(fd, data)\n")


def spawn_exec_echo(plan: Plan | None) -> float:
    """ms from spawn() of `python -c EXEC_ECHO fd` to its echo of b"ping"."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(ECHO_TIMEOUT)
    fd = theirs.fileno()
    child = None
    data = b""
    try:
        t0 = time.perf_counter_ns()
        child = launcher.spawn(plan, [sys.executable, "-c", EXEC_ECHO, str(fd)], pass_fds=[fd])
        theirs.close()
        ours.sendall(b"ping")
        while len(data) < 4 and (chunk := ours.recv(64)):
            data += chunk
        took = (time.perf_counter_ns() - t0) / 1e6
    except socket.timeout:
        if child is not None:
            child.kill()
        broken("the exec'd echo did not answer")
    finally:
        theirs.close()
        ours.close()
        rc = child.wait() if child is not None else None
        if child is not None and child.output is not None:
            child.output.join()
    if data != b"ping" or rc != 0:
        broken(f"exec'd echo: {data!r}, exit {rc}")
    return took


def _timed(argv: Sequence[str]) -> float:
    t0 = time.perf_counter_ns()
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    took = (time.perf_counter_ns() - t0) / 1e6
    if res.returncode != 0:
        broken(f"{' '.join(argv)} exited with {res.returncode}: {res.stderr.decode()[-400:]}")
    return took


def test_exec_path(variables, workdir) -> None:
    policy_path = os.path.join(workdir, "run.toml")
    Path(policy_path).write_text(RUN_POLICY.format(general=GENERAL_POLICY))
    plan = launcher.prepare(load_policy(policy_path), variables)
    if not plan.exec_allowed:
        broken("the run policy does not allow execve")
    for _ in range(2):
        spawn_exec_echo(plan)
        spawn_exec_echo(None)
    runs: dict[str, list[float]] = {"none": [], "run": []}
    for i in range(EXEC_RUNS):
        for kind in (("run", "none") if i % 2 == 0 else ("none", "run")):
            runs[kind].append(spawn_exec_echo(plan if kind == "run" else None))

    tool = str(Path(sys.executable).parent / "CleanCoin-sandbox")
    run = [tool, "run", "--policy", policy_path, "--datadir", variables["datadir"], "--"]
    commands = {
        "/bin/true (plain start, the baseline)": ["/bin/true"],
        "CleanCoin-sandbox run -- /bin/true": [*run, "/bin/true"],
        "CleanCoin-sandbox check POLICY (start + load)": [tool, "check", policy_path],
        "python -c pass": [sys.executable, "-c", "pass"],
        "python importing the stdlib the tool needs (its floor)": [sys.executable, "-c", STDLIB_FLOOR],
        "CleanCoin-sandbox run -- python -c pass": [*run, sys.executable, "-c", "pass"],
    }
    for argv in commands.values():
        _timed(argv)
    cli: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(CLI_RUNS):
        names = list(commands)
        for name in names[i % len(names):] + names[:i % len(names)]:
            cli[name].append(_timed(commands[name]))
    out()
    out("=" * 78)
    out("EXEC PATH: launcher.spawn(plan, [python, -c, echo]) and CleanCoin-sandbox run")
    out("=" * 78)
    out("  a copy of the strict shape that may execve (the shipped policies may not; `run` needs it)")
    out(f"  in process, spawn() -> exec'd echo answers, {EXEC_RUNS} runs each, interleaved:   median ms   p90 ms")
    n, r = runs["none"], runs["run"]
    out(f"    no sandbox                                                   {median(n):9.2f} {p90(n):8.2f}")
    out(f"    the run policy                                               {median(r):9.2f} {p90(r):8.2f}")
    out(f"    difference {median(r) - median(n):+.2f} ms, ratio {median(r) / median(n):.3f}")
    out(f"  the tool, {CLI_RUNS} runs each, round-robin (subprocess.run wall time):        median ms   p90 ms")
    for name, values in cli.items():
        out(f"    {name:<60} {median(values):9.2f} {p90(values):8.2f}")
    base = median(cli["/bin/true (plain start, the baseline)"])
    added = median(cli["CleanCoin-sandbox run -- /bin/true"]) - base
    start = median(cli["CleanCoin-sandbox check POLICY (start + load)"]) - base
    py_added = median(cli["CleanCoin-sandbox run -- python -c pass"]) - median(cli["python -c pass"])
    out(f"    run adds {added:+.2f} ms to /bin/true ({added + base:.1f} / {base:.1f} = "
        f"{(added + base) / base:.1f}x), {py_added:+.2f} ms to python -c pass; "
        f"the tool's own start and policy load: {start:.1f} ms of it")
    floor = median(cli["python importing the stdlib the tool needs (its floor)"]) - base
    out(f"    a Python tool that reads a cached policy (pickle), defines dataclasses, talks JSON over a socket and "
        f"calls ctypes adds {floor:.1f} ms before it does anything, the interpreter "
        f"{median(cli['python -c pass']) - base:.1f} ms of it (docs/audit.md, \"Start-up time\")")
    out(f"  target (issue #16): CleanCoin-sandbox run adds <= {RUN_TARGET_MS:.0f} ms to a plain start: "
        f"{added:+.2f} ms -> {verdict(added <= RUN_TARGET_MS)}")


# --------------------------------------------------------------------------------------------
# 4. seccomp steady state

def _loops(reps: int) -> dict[str, float]:
    """Best ns per iteration of each loop over `reps` repetitions."""
    target = os.__file__            # under ${base_prefix}: granted by the strict policy
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    rp, wp = os.pipe()
    getppid, read, stat, open_, close = os.getppid, os.read, os.stat, os.open, os.close
    ioctl, fionread, buf = fcntl.ioctl, termios.FIONREAD, b"\0\0\0\0"
    flags = os.O_RDONLY | os.O_CLOEXEC

    def l_getppid(n: int) -> None:
        for _ in range(n):
            getppid()

    def l_read(n: int) -> None:
        for _ in range(n):
            read(null, 1)

    def l_ioctl(n: int) -> None:
        for _ in range(n):
            ioctl(rp, fionread, buf)

    def l_stat(n: int) -> None:
        for _ in range(n):
            stat(target)

    def l_open(n: int) -> None:
        for _ in range(n):
            close(open_(target, flags))

    loops: list[tuple[str, Callable[[int], None], int]] = [
        ("getppid", l_getppid, 200_000), ("read(/dev/null, 1)", l_read, 100_000),
        ("ioctl(pipe, FIONREAD)", l_ioctl, 100_000), ("stat(granted file)", l_stat, 30_000),
        ("open+close(granted file)", l_open, 30_000)]
    best: dict[str, float] = {}
    gc.disable()
    for name, fn, n in loops:
        fn(n // 10)
        for _ in range(reps):
            t = time.perf_counter_ns()
            fn(n)
            dt = (time.perf_counter_ns() - t) / n
            best[name] = min(best.get(name, dt), dt)
    for fd in (null, rp, wp):
        os.close(fd)
    return best


# One instruction, `return SECCOMP_RET_ALLOW`: what merely having a filter costs.
ALLOW_ALL_BPF = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)


def _loop_child(mode: str, bpf: bytes, out_fd: int) -> int:
    """Runs in the forked child; writes a repr'd dict to out_fd."""
    try:
        info: dict[str, object] = {}
        if mode != "full":
            if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
            if mode == "allow-all":
                seccomp.load_filter(ALLOW_ALL_BPF)
            elif mode == "seccomp":
                seccomp.load_filter(bpf)
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(("Speculation_Store_Bypass", "Seccomp_filters")):
                        key, value = line.split(":", 1)
                        info[key] = value.strip()
        info["seccomp_mode"] = _LIBC.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0)
        # "/" is in every filesystem view, and Landlock grants no right to list it.
        try:
            os.listdir("/")
            info["landlock_blocks"] = False
        except PermissionError:
            info["landlock_blocks"] = True
        info["loops"] = _loops(LOOP_REPS)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        info = {"error": repr(exc)}
        code = 1
    os.write(out_fd, repr(info).encode())
    os.close(out_fd)
    return code


def _read_result(fd: int, what: str) -> dict[str, object]:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            broken(f"{what}: no result within 120 s")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    if not chunks:
        broken(f"{what}: child wrote no result")
    result = ast.literal_eval(b"".join(chunks).decode())
    if "error" in result:
        broken(f"{what}: {result['error']}")
    return result


def run_loop_child(mode: str, plan: Plan) -> dict[str, object]:
    r, w = os.pipe()
    try:
        if mode == "full":
            child = launcher.spawn(plan, target=lambda *_: _loop_child(mode, b"", w), pass_fds=[w])
            os.close(w)
            w = -1
            result = _read_result(r, mode)
            rc = child.wait()
        else:
            pid = os.fork()
            if pid == 0:
                os.close(r)
                code = 1
                try:
                    code = _loop_child(mode, plan.seccomp_bpf, w)
                finally:
                    os._exit(code)
            os.close(w)
            w = -1
            result = _read_result(r, mode)
            rc = launcher.returncode(os.waitpid(pid, 0)[1])
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    if rc != 0:
        broken(f"{mode} loop child exited with {rc}")
    return result


def test_seccomp_steady_state(strict) -> None:
    _, plan, _, _ = strict
    if not plan.seccomp_bpf:
        broken("the strict plan has no seccomp filter")
    modes = ("plain", "allow-all", "seccomp", "full")
    per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    infos: dict[str, dict[str, object]] = {}
    for i in range(LOOP_ROUNDS):
        for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
            res = run_loop_child(mode, plan)
            infos[mode] = res
            per_mode[mode].append(res["loops"])  # type: ignore[arg-type]
    # A loop that ran without the filter it claims, or with Landlock where none should be,
    # measures the wrong thing.
    expect = {"plain": (0, False), "allow-all": (2, False), "seccomp": (2, False), "full": (2, True)}
    for mode, (sc, ll) in expect.items():
        if infos[mode]["seccomp_mode"] != sc:
            broken(f"{mode} child: PR_GET_SECCOMP = {infos[mode]['seccomp_mode']}, expected {sc}")
        if infos[mode]["landlock_blocks"] != ll:
            broken(f"{mode} child: Landlock {'not ' if ll else ''}blocking a listing of /")
    names = list(per_mode["plain"][0])
    for mode in modes:
        for run in per_mode[mode]:
            for name in names:
                if not run.get(name, 0) > 0:
                    broken(f"{mode}: loop {name} took no time")

    def best(mode: str, name: str) -> float:
        return min(r[name] for r in per_mode[mode])

    def med(mode: str, name: str) -> float:
        return median([r[name] for r in per_mode[mode]])

    out()
    out("=" * 78)
    out("SECCOMP STEADY STATE: ns per loop iteration (a Python loop around one syscall)")
    out("=" * 78)
    ssb_path = "/sys/devices/system/cpu/vulnerabilities/spec_store_bypass"
    ssb = open(ssb_path).read().strip() if os.path.exists(ssb_path) else "?"
    out(f"  strict filter: {len(plan.seccomp_bpf) // 8} BPF instructions. Kernel spec_store_bypass: "
        f"{ssb}; child Speculation_Store_Bypass: plain '{infos['plain'].get('Speculation_Store_Bypass')}'"
        f", filtered '{infos['seccomp'].get('Speculation_Store_Bypass')}'")
    out(f"  {LOOP_ROUNDS} children per kind, interleaved, {LOOP_REPS} reps of each loop per child; "
        "best = min over all reps, med = median of the per-child bests")
    out("    plain     = fork + no_new_privs, no filter")
    out("    allow-all = fork + no_new_privs + a 1-instruction RET_ALLOW filter (the baseline: any filter costs this)")
    out("    strict    = fork + no_new_privs + the strict policy's BPF only (seccomp isolated)")
    out("    full      = launcher.spawn(strict plan, target=...): every step, the view, Landlock, seccomp")
    out("    (percentages against plain)")
    for how, fn in (("best", best), ("med", med)):
        out(f"    {'loop (' + how + ')':<26}{'plain':>8}{'allow-all':>18}{'strict':>25}{'full':>25}")
        for name in names:
            p = fn("plain", name)
            cells = []
            for mode in ("allow-all", "seccomp", "full"):
                v = fn(mode, name)
                cells.append(f"{v:7.1f} {(v / p - 1) * 100:+6.1f}% {v - p:+7.1f}ns")
            out(f"    {name:<26}{p:8.1f}  " + "  ".join(cells))
    out(f"  target (issue #16, restated against allow-all): the strict BPF adds <= {SECCOMP_TARGET_PCT:.0f} % "
        "to any filter (best):")
    for name in names:
        pct = (best("seccomp", name) / best("allow-all", name) - 1) * 100
        vs_plain = (best("seccomp", name) / best("plain", name) - 1) * 100
        out(f"    {name:<26} {pct:+6.1f} % -> {verdict(pct <= SECCOMP_TARGET_PCT)}   "
            f"(against no filter at all: {vs_plain:+.1f} %)")


# --------------------------------------------------------------------------------------------
# 5. the shipped policies' filters

def test_shipped_policy_filters(workdir) -> None:
    node = _node_variables(workdir)
    variables = {**node, "walletdir": os.path.join(node["datadir"], "wallets")}
    rows = []
    for name in SHIPPED:
        policy = load_policy(shipped_policy(name))
        t = time.perf_counter()
        plan = launcher.prepare(policy, variables)
        prep_ms = (time.perf_counter() - t) * 1e3
        if not plan.seccomp_bpf or len(plan.seccomp_bpf) % 8:
            broken(f"{name}: no seccomp filter in the plan")
        rows.append((name, len(policy.allowed_syscalls), len(policy.seccomp.rules),
                     len(plan.seccomp_bpf) // 8, prep_ms, plan.exec_allowed))
    base_instr = rows[0][3]
    out()
    out("=" * 78)
    out("SHIPPED POLICIES: the seccomp filter of each (as `CleanCoin-sandbox explain` counts)")
    out("=" * 78)
    out(f"    {'policy':<20}{'syscalls allowed':>17}{'arg rules':>10}{'BPF instr':>10}{'vs base':>8}"
        f"{'prepare ms':>11}{'execve':>7}")
    for name, allowed, rules, instr, prep_ms, execve in rows:
        out(f"    {name:<20}{allowed:>17}{rules:>10}{instr:>10}{instr / base_instr:7.2f}x{prep_ms:11.2f}"
            f"{'yes' if execve else 'no':>7}")
