"""Functional: a wallet file from before the wallet's header chain (schema version 1, made with
version 1's own schema definition in a real datadir) loads in CleanCoind and CleanCoin-node,
is upgraded to version 2, anchors its header chain at its best block once, and does not take
anything on trust again after a restart (docs/wallet.md, "The wallet's header chain",
"Versions")."""

from __future__ import annotations

import sqlite3

from framework import TEST_ADDRESS, wait_until
from test_node_wallet import nodes  # noqa: F401 - a fixture
from wallet_v1 import make_v1_wallet


def _anchored(node) -> int:
    logs = [node.netdatadir / "debug.log", node.netdatadir / "wallets" / "debug.log"]
    return sum(p.read_text().count("header chain anchored at block 3") for p in logs if p.exists())


def test_a_version_1_wallet_file_loads_and_is_upgraded(nodes) -> None:  # noqa: F811 - a fixture
    (n,) = nodes(1)
    n.start()
    n.rpc.generatetoaddress(5, TEST_ADDRESS)
    best = bytes.fromhex(n.rpc.getblockhash(3))[::-1]
    n.stop()
    path = make_v1_wallet(n.netdatadir, "old", "regtest", (best, 3))
    n.start(["-wallet=old"])
    wait_until(lambda: n.rpc.getwalletinfo()["lastprocessedblock"]["height"] == 5, what="wallet sync")
    assert n.rpc.listwallets() == ["old"]
    n.rpc.generatetoaddress(1, n.rpc.getnewaddress())
    wait_until(lambda: n.rpc.getwalletinfo()["lastprocessedblock"]["height"] == 6, what="wallet sync")
    n.stop()
    assert _anchored(n) == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (2,)
        rows = conn.execute("SELECT height, trusted FROM headers ORDER BY height").fetchall()
    finally:
        conn.close()
    assert rows == [(0, 0), (1, 1), (2, 1), (3, 1), (4, 0), (5, 0), (6, 0)]
    n.start(["-wallet=old"])
    assert n.rpc.getwalletinfo()["lastprocessedblock"]["height"] == 6
    assert n.rpc.getbalances()["mine"]["immature"] == 50
    n.stop()
    assert _anchored(n) == 1                  # the restart took nothing on trust
