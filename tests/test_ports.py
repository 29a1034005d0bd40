"""tests/ports.py: the functional runner gives each file running side by side its own slice
of test ports, so that two never pick the same one (a rare CI failure: "address already in
use" between two test processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ports import PORTS_ENV, slice_of


def test_runner_slots_get_disjoint_slices_that_free_port_keeps_to() -> None:
    slices = [slice_of(slot, 2) for slot in range(2)]
    (a_low, a_high), (b_low, b_high) = (tuple(map(int, s.split("-"))) for s in slices)
    assert a_high <= b_low and a_low >= 20000 and b_high <= 32768
    code = "import ports; print(sorted({ports.free_port() for _ in range(50)}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent, env={**os.environ, PORTS_ENV: slices[1]})
    picked = eval(out.stdout)  # noqa: S307 - our own list of ints
    assert len(picked) == 50 and all(b_low <= p < b_high for p in picked), picked
