"""`make demo` (python -m cleancoin.cli.demo): a regtest CleanCoin-node with its sandboxed wallet
process, run end to end as a subprocess; its key lines must be there."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo reads other processes' /proc/<pid>/ns/net")
def test_demo_runs_the_multiprocess_node(base_sandbox) -> None:  # noqa: ANN001
    result = subprocess.run([sys.executable, "-m", "cleancoin.cli.demo"], capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    # The payment: 101 blocks to alice, 1.5 to bob, one more block.
    assert "loaded: alice, bob" in out
    assert re.search(r"^balance bob:\s+1\.50000000$", out, re.M), out
    alice = re.search(r"^balance alice: (\d+\.\d{8})", out, re.M)
    assert alice is not None, out
    assert 98 < float(alice.group(1)) < 98.5          # 2 x 50 - 1.5 - fee
    # The tree and its confinement.
    for role in ("node", "zygote", "init", "wallet"):
        assert re.search(rf"^{role}\s+\d+\s+", out, re.M), (role, out)
    assert re.search(r"^node\s+\d+\s+2 \(filter\) 1\s+0{16}\s", out, re.M), out
    assert re.search(r"^wallet\s+\d+\s+2 \(filter\) 1\s+0{16}\s", out, re.M), out
    assert "the wallet's network namespace differs from the node's" in out
    assert "sandbox report for policy 'node'" in out
    assert "sandbox report for policy 'wallet'" in out
    assert re.search(r"CleanCoin-wallet: lo\s", out), out
    assert "in the node's mount namespace:  (empty)" in out
    # The stop.
    assert "CleanCoin-node exit status: 0" in out
    assert "processes of the tree still running: none" in out
    # The escape battery.
    assert re.search(r"probe of policies/wallet\.toml: \d+ attempts, \d+ denied, 0 escapes", out), out
    assert "temporary datadir removed" in out
    datadir = re.search(r"-datadir=(\S+)", out)
    assert datadir is not None, out
    assert not os.path.exists(os.path.dirname(datadir.group(1)))
