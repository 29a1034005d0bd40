"""What the wallet's RPC methods cost as the wallet grows, on a real wallet over a real
regtest chain, measured in real SQLite work: the statements a call runs and the virtual
machine steps they take (`set_progress_handler`). getbalance and listunspent read the best
block once per call, not twice per coin; listtransactions, gettransaction and listsinceblock
read the wallet's coins once per call, not once or twice per transaction (listtransactions
was quadratic in the wallet's size: 96 ms for 101 transactions, 16 ms now; issue #16).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cleancoin.components.common.amount import format_amount
from cleancoin.components.rpc.registry import CallContext
from cleancoin.components.wallet.rpc import WalletRpc
from cleancoin.components.wallet.wallet import Wallet, WalletManager
from test_wallet import OTHER, P, Env, env, settle  # noqa: F401 - a fixture


def _sqlite_work(w: Wallet, call: Callable[[], Any]) -> tuple[int, int]:
    """(statements, hundreds of VM steps) of the wallet's database during `call`."""
    statements: list[str] = []
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0                                    # go on
    conn = w.store._conn
    conn.set_trace_callback(statements.append)
    conn.set_progress_handler(step, 100)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
        conn.set_progress_handler(None, 0)
    return len(statements), steps


def test_wallet_listings_grow_linearly_with_the_wallet(env: Env) -> None:
    async def scenario() -> None:
        loader = WalletManager(env.path, env.chain, P.name)
        w = await loader.create("w")
        rpc = WalletRpc(loader)
        ctx = CallContext("x", None, wallet="w")    # type: ignore[arg-type]
        pkh = w.new_key(False).pkh
        sizes: dict[int, dict[str, tuple[int, int]]] = {}
        for coins in (20, 40):
            env.mine(20, pkh)
            env.mine(101)                           # every coinbase of the wallet's mature
            await settle(w)
            listed = rpc.listtransactions(ctx, None, 1000, 0, None)
            assert len(listed) == coins and {e["category"] for e in listed} == {"generate"}
            assert rpc.getbalance(ctx, None, 0, None, None) == coins * 50
            sizes[coins] = {
                "getbalance": _sqlite_work(w, lambda: rpc.getbalance(ctx, None, 0, None, None)),
                "listunspent": _sqlite_work(w, lambda: rpc.listunspent(ctx, 1, 9999999, None, True, None)),
                "listtransactions": _sqlite_work(w, lambda: rpc.listtransactions(ctx, None, 1000, 0, None)),
            }
        # Since 12-07 each balance call's reads are one read transaction (WalletStore.reading):
        # one snapshot and one WAL read lock, not one per statement (2 fcntl each).
        for name, call in (("getwalletinfo", lambda: rpc.getwalletinfo(ctx)),
                           ("getbalance", lambda: rpc.getbalance(ctx, None, 0, None, None)),
                           ("getbalances", lambda: rpc.getbalances(ctx))):
            traced: list[str] = []
            w.store._conn.set_trace_callback(traced.append)
            try:
                call()
            finally:
                w.store._conn.set_trace_callback(None)
            assert len(traced) > 3 and (traced[0], traced[-1]) == ("BEGIN", "COMMIT"), (name, traced)
            assert traced.count("BEGIN") == 1, (name, traced)
        small, big = sizes[20], sizes[40]
        # The best block once per call: as many statements for 40 coins as for 20 (it was
        # four more per coin), and listunspent's two per coin, its key and its label.
        assert big["getbalance"][0] == small["getbalance"][0], sizes
        assert big["listunspent"][0] - small["listunspent"][0] <= 2 * 20, sizes
        # Twice the transactions, about twice the work (it was four times: each transaction
        # read every coin again).
        assert big["listtransactions"][1] <= 2.5 * small["listtransactions"][1], sizes
        await loader.close_all()

    asyncio.run(scenario())


def test_what_the_spenders_spend_is_summed_by_sqlite_as_it_was_by_hand(env: Env) -> None:
    """spent_values (one aggregate query, no coin objects) against the sums over every coin
    ever spent, after two sends of a wallet, mined; and the fee
    listtransactions shows for each send is what it spent less what it paid out."""
    async def scenario() -> None:
        loader = WalletManager(env.path, env.chain, P.name)
        w = await loader.create("w")
        rpc = WalletRpc(loader)
        ctx = CallContext("x", None, wallet="w")    # type: ignore[arg-type]
        env.mine(3, w.new_key(False).pkh)
        env.mine(101)
        await settle(w)
        sent = [await w.send([(OTHER, 60 * 100_000_000)]), await w.send([(OTHER, 10 * 100_000_000)])]
        env.mine(1)
        await settle(w)
        by_hand: dict[bytes, int] = {}
        for c in w.store.coins(include_spent=True):
            if c.spent_by:
                by_hand[c.spent_by] = by_hand.get(c.spent_by, 0) + c.value
        assert w.store.spent_values() == by_hand and set(by_hand) == {tx.txid for tx, _ in sent}
        fees = {e["txid"]: -e["fee"] for e in rpc.listtransactions(ctx, None, 100, 0, None)
                if e["category"] == "send"}
        assert fees == {tx.txid_hex: format_amount(fee) for tx, fee in sent}
        await loader.close_all()

    asyncio.run(scenario())


def test_the_catch_up_check_of_a_forwarded_call_reads_nothing_while_the_wallet_is_at_the_tip(env: Env) -> None:
    """A wallet process checks, on every call its node forwards, that the wallet is at the
    node's tip (WalletRpcHandler._catch_up); the store keeps its best block hash between write
    transactions, so the check runs no statement (it ran one per call and wallet). A write
    transaction, committed or rolled back, makes the store read it again."""
    import sqlite3

    import pytest

    from cleancoin.components.rpc.registry import Registry
    from cleancoin.components.wallet.service import WalletRpcHandler

    async def scenario() -> None:
        loader = WalletManager(env.path, env.chain, P.name)
        w = await loader.create("w")
        env.mine(2, w.new_key(False).pkh)
        await settle(w)
        handler = WalletRpcHandler(Registry(), loader)
        statements: list[str] = []
        w.store._conn.set_trace_callback(statements.append)
        try:
            await handler._catch_up(env.cm.tip.hash)            # reads it once
            statements.clear()
            for _ in range(3):
                await handler._catch_up(env.cm.tip.hash)
            assert statements == []
            env.mine(1)                                          # the wallet is behind now
            await handler._catch_up(env.cm.tip.hash)
            assert statements and w.store.best_hash == env.cm.tip.hash
            with pytest.raises(sqlite3.OperationalError):
                with w.store._tx() as c:
                    w.store._set_meta(c, "best_hash", b"\x01" * 32)
                    assert w.store.best_hash == b"\x01" * 32    # inside: what it wrote
                    c.execute("SELECT no_such_column FROM meta")
            assert w.store.best_hash == env.cm.tip.hash          # rolled back: read again
        finally:
            w.store._conn.set_trace_callback(None)
        await loader.close_all()

    asyncio.run(scenario())
