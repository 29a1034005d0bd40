"""The escape battery's wall time: `CleanCoin-sandbox probe --policy strict`, as CI calls it.

Each attempt runs in its own sandboxed child started through a zygote (the path every
component takes), so the battery's time grows with the number of attempts times a sandboxed
spawn. Measured against, in the same run and interleaved: `CleanCoin-sandbox check strict`
(the tool's own start and the policy's load, which every call pays). Then one battery run in
this process, timed per attempt: the zygote's start, each attempt's spawn (its sandbox up),
the rest of each attempt (it runs, answers, and its exit event arrives), and the attempts
the parent runs itself.

No issue sets a target for it; a run with an escape is still a measurement (the escape is
printed), a run that could not probe at all is broken.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from figures import broken, median, out, p90

from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from cleancoin.sandbox.probe import parent as probe_parent

RUNS = 5
TOOL = str(Path(sys.executable).parent / "CleanCoin-sandbox")
_SUMMARY = re.compile(r"^(\d+) attempts, (\d+) escapes?$", re.MULTILINE)


def _timed(argv: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    t0 = time.perf_counter_ns()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    took = (time.perf_counter_ns() - t0) / 1e9
    if res.returncode not in ok:
        broken(f"{' '.join(argv)} exited with {res.returncode}: {res.stderr[-600:]}")
    return took, res.stdout


def test_probe_battery_wall_time(datadir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = [TOOL, "probe", "--policy", "strict", "--datadir", datadir]
    check = [TOOL, "check", "strict"]
    _timed(check)
    walls: dict[str, list[float]] = {"probe": [], "check": []}
    counts: set[tuple[int, int]] = set()
    for i in range(RUNS):
        for kind in (("probe", "check") if i % 2 == 0 else ("check", "probe")):
            # Exit status 1 means an escape was found: still a complete battery.
            took, stdout = _timed(probe if kind == "probe" else check, ok=(0, 1) if kind == "probe" else (0,))
            walls[kind].append(took)
            if kind == "probe":
                found = _SUMMARY.search(stdout)
                if not found:
                    broken(f"no summary line in the probe's output: {stdout[-400:]}")
                counts.add((int(found.group(1)), int(found.group(2))))
    attempts = max(n for n, _ in counts)
    escapes = max(e for _, e in counts)
    p, c = median(walls["probe"]), median(walls["check"])

    timing = _battery_in_process(datadir, monkeypatch)
    out()
    out("=" * 78)
    out(f"PROBE BATTERY: CleanCoin-sandbox probe --policy strict ({attempts} attempts, "
        f"{escapes} escapes), {RUNS} runs each, interleaved")
    out("=" * 78)
    out(f"    {'':52}{'median s':>9}{'p90 s':>8}")
    out(f"    {'CleanCoin-sandbox check strict (the baseline)':52}{c:9.3f}{p90(walls['check']):8.3f}")
    out(f"    {'CleanCoin-sandbox probe --policy strict':52}{p:9.3f}{p90(walls['probe']):8.3f}")
    out(f"    ratio {p / c:.1f}x; the battery itself {p - c:.2f} s = {(p - c) / attempts * 1e3:.1f} ms per attempt")
    out(f"  one battery in this process ({timing['wall']:.2f} s):")
    n = len(timing["spawn"])
    rows = [("zygote start (fresh interpreter, ready)", f"{timing['zygote'] * 1e3:6.1f} ms"),
            (f"{n} attempts in children: spawn (their sandbox up)",
             f"median {median(timing['spawn']) * 1e3:5.1f} ms, sum {sum(timing['spawn']):5.2f} s"),
            ("  then the attempt runs, answers, its exit event comes",
             f"median {median(timing['rest']) * 1e3:5.1f} ms, sum {sum(timing['rest']):5.2f} s")]
    if timing["parent"]:
        rows.append((f"{len(timing['parent'])} attempts the parent runs (each its own launch)",
                     f"sum {sum(timing['parent'].values()):5.2f} s"))
    for label, value in rows:
        out(f"    {label:<58}{value}")
    slowest = sorted(timing["attempt"].items(), key=lambda kv: kv[1], reverse=True)[:6]
    out("    slowest attempts: " + ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in slowest))
    assert p > 0 and c > 0 and attempts > 0


def _battery_in_process(datadir: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """probe_parent.probe() with the zygote's start, each spawn and each attempt timed."""
    timing: dict[str, Any] = {"zygote": 0.0, "spawn": [], "rest": [], "attempt": {}, "parent": {}}
    zygote_class = probe_parent.Zygote

    class TimedZygote(zygote_class):  # type: ignore[misc, valid-type]
        @classmethod
        def start(cls, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            z = super().start(*args, **kwargs)
            timing["zygote"] = time.perf_counter() - t0
            return z

        def spawn(self, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super().spawn(*args, **kwargs)
            finally:
                timing["last_spawn"] = time.perf_counter() - t0

    run_attempt = probe_parent._run_attempt

    def timed_attempt(zygote: Any, spec: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = run_attempt(zygote, spec, *args, **kwargs)
        took = time.perf_counter() - t0
        timing["attempt"][spec.name] = took
        timing["spawn"].append(timing["last_spawn"])
        timing["rest"].append(took - timing["last_spawn"])
        return result

    monkeypatch.setattr(probe_parent, "Zygote", TimedZygote)
    monkeypatch.setattr(probe_parent, "_run_attempt", timed_attempt)
    for name, run in list(probe_parent.PARENT_RUNS.items()):
        def timed_parent_run(*args: Any, _name: str = name, _run: Any = run) -> Any:
            t0 = time.perf_counter()
            try:
                return _run(*args)
            finally:
                took = time.perf_counter() - t0
                timing["parent"][_name] = took
                timing["attempt"][_name] = took
        monkeypatch.setitem(probe_parent.PARENT_RUNS, name, timed_parent_run)
    t0 = time.perf_counter()
    result = probe_parent.probe(load_policy(shipped_policy("strict")), {"datadir": datadir})
    timing["wall"] = time.perf_counter() - t0
    if not result.attempts or not timing["spawn"]:
        broken("the in-process battery ran no attempt in a child")
    if len(timing["attempt"]) != len(result.attempts):
        broken(f"timed {len(timing['attempt'])} attempts of {len(result.attempts)}")
    return timing
