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
from framework import is_multiprocess, wait_until
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
# The file is still held by the relay and the denial monitor: reach it through their
# descriptors in /proc (same uid, no pid namespace of its own), or end the relay.
attempt("reach-stderr-file-through-proc")
reached, seen = [], []
try:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
except OSError as exc:
    pids = []
    seen.append(f"/proc: {exc.strerror}")
for pid in pids:
    for fd in (1, 2, 3, 4, 5):
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target.endswith("wallet.err"):
            seen.append(f"{pid}:{fd}")
            try:
                f = os.open(link, os.O_WRONLY)
                os.ftruncate(f, 0)
                reached.append(f"{pid}:{fd}")
            except OSError as exc:
                seen.append(exc.strerror)
report("reach-stderr-file-through-proc", bool(reached), f"truncated via {reached}" if reached else f"{seen[:6]} of {len(pids)} pids")
attempt("kill-the-relay")
killed = []
import threading
own = {os.getpid(), *(t.native_id for t in threading.enumerate())}
for pid in range(max(2, os.getpid() - 300), os.getpid() + 300):     # the relay forked just before
    if pid in own:
        continue
    try:
        os.kill(pid, 0)         # signal 0: would a signal reach it (the relay is one of these)
        killed.append(pid)
    except OSError:
        pass
report("kill-the-relay", bool(killed), f"signals reach {killed[:10]}" if killed else "no process outside reachable by a signal")
'''


def _results_text(a: AttackedNode) -> str:
    path = Path(a.results["standalone"])
    return path.read_text() if path.exists() else ""


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
        # The last attempt (a signal to a process outside) may be a call the filter answers
        # with a kill: then the results end there.
        wait_until(lambda: wallet.poll() is not None or '"_end"' in _results_text(a), 30,
                   what="the standalone attack to end or be killed")
        results = a.result("standalone", timeout=5, to_the_end=False)
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
    assert "reach-stderr-file-through-proc" in results and "kill-the-relay" in results, results
    text = err_file.read_text(errors="replace")
    refused = [line for line in text.splitlines()
               if "[sandbox:CleanCoin-wallet]" in line and "refused ioctl(" in line and "0x5412" in line]
    assert refused and "nothing was refused here" not in text, text[-3000:]
