"""Functional: the record of a standalone CleanCoin-wallet's refusals, when its stderr is a
file, is out of the confined wallet's reach (CleanCoin-node only: the wallet joins it over
-ipcbind=unix). The attack runs inside the real confined wallet (attack_site harness).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import attacks
from framework import is_multiprocess
from test_sandbox_attacks import AttackedNode, escapes, home_base  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

# A refused call (logged by the denial monitor to the wallet's stderr), then the wallet tries
# to erase or rewrite that record through its own descriptor 2.
ERASE = r'''
refused_call()
attempt("truncate-stderr")
try:
    os.ftruncate(2, 0)
    report("truncate-stderr", True, "truncated the file its refusals are logged to")
except OSError as exc:
    report("truncate-stderr", False, f"ftruncate(2): {exc.strerror}")
attempt("rewrite-stderr")
try:
    os.pwrite(2, b"nothing was refused here\n" * 64, 0)
    report("rewrite-stderr", True, "overwrote the start of the file its refusals are logged to")
except OSError as exc:
    report("rewrite-stderr", False, f"pwrite(2, offset 0): {exc.strerror}")
'''


def test_a_standalone_wallet_cannot_erase_its_refusals_from_a_stderr_file(home_base: Path) -> None:  # noqa: F811
    """Attack: CleanCoin-wallet started on its own with `2>wallet.err` (a file, as a service
    manager or a shell redirection makes it); a compromised wallet makes a refused call and
    then truncates and rewrites the file through its own stderr. Before 12-06 its stderr was the
    very file the denial monitor appends to: ftruncate(2, 0) erased the record of its refusals
    (and pwrite rewrote it). Now, when stderr is a file, the wallet's own stderr is a pipe to a
    small relay (cat) outside its sandbox: only the relay and the monitor hold the file."""
    a = AttackedNode(home_base, standalone=ERASE, extra=("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1"))
    a.arm()
    a.node.start(env=a.env())      # the node itself runs no attack
    err_file = home_base / "wallet.err"
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    with open(err_file, "w") as stderr:
        wallet = subprocess.Popen([str(wallet_bin), "-regtest", f"-datadir={a.node.datadir}", "-ipcconnect=unix"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=a.env())
    try:
        results = a.result("standalone", timeout=30)
    finally:
        wallet.send_signal(signal.SIGTERM)
        try:
            wallet.wait(15)
        except subprocess.TimeoutExpired:
            wallet.kill()
            wallet.wait()
        a.node.stop()
    assert results["refused-call"]["escaped"] is False, results
    assert escapes(results) == {}, results
    text = err_file.read_text(errors="replace")
    refused = [line for line in text.splitlines()
               if "[sandbox:CleanCoin-wallet]" in line and "refused ioctl(" in line and "0x5412" in line]
    assert refused and "nothing was refused here" not in text, text[-3000:]
