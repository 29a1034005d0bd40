"""kill -9 at every commit of a wallet following a reorganisation: no check skipped.

The wallet's side of a reorganisation (components/wallet/wallet.py, headers.py, store.py):
the node's branch is weighed against the wallet's headers, the wallet's blocks above the fork
are disconnected one transaction each (each sets `chain_recheck` and moves `checked_work` to
the parent), the node's chain is checked again, resumed at the fork (`HeaderChain.
resumed_check`), its headers above the fork stored (`pending_chain`) and the anchor's
transaction clears `chain_recheck`; then the branch's blocks are applied one transaction each.
A kill anywhere in that must leave files a restarted wallet can trust: the header rows and
`checked_work` consistent with its best block and the node's chainwork
(tests/functional/crash_invariants.py, shared with the crash campaign), `chain_recheck` set
whenever a block was disconnected and the check that follows did not commit (a restarted
wallet that found it clear would take the next block above the fork unchecked), and after
a restart the wallet reaches the node's tip with the state of an uninterrupted run: the same
header chain and checked work, the same confirmed transactions and balances.

"rowless": the same reorganisation of a wallet file from before the header chain (no rows,
no `checked_work`): its blocks above the fork are undone in one transaction
(`WalletStore.disconnect_to`), which sets `chain_recheck`.

Since 12-07 each row replaced is kept in `left_headers` in the transaction that replaces it:
after any kill and a restart the same replaced headers are there as after an uninterrupted run.

Since 12-07 also the rows of a checked chain the wallet holds above its best block (blocks
withheld) replaced by a branch with more work (`overtaken`: Wallet._overtaken checks the
node's header chain again and stores it, the first answer dropping the rows above its tip in
the same transaction): rows of the branch stored and the anchor not committed leave
`chain_recheck` set, and the restarted wallet ends as an uninterrupted run.

How: a child forked from the test (the stepper of test_wallet_encrypt_crash.py) opens a real
chain and wallet on copies of a template and syncs; SQLite's statement trace stops it before
every COMMIT of the wallet's connection (a kill anywhere inside a transaction leaves the
same files), and it reports each disconnect and anchor that committed. For every commit k the
test SIGKILLs it just before, checks the files as the kill left them, and restarts the wallet
on them; the uninterrupted run is the reference.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.node.chain import BlockIndex, ChainManager
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.node import ChainViewAdapter, MempoolUpdater
from cleancoin.components.wallet.store import WalletStore
from cleancoin.components.wallet.wallet import Wallet
from functional.crash_invariants import chain_files, read_wallet, wallet_headers
from test_wallet import OTHER
from test_wallet_encrypt_crash import Stepper

P = REGTEST
NOW = 2_100_000_000
FORK = 3                # the wallet's blocks 4..6 leave; the node's branch 4'..8' comes
OLD_TIP, NEW_TIP = 6, 8


def _open_chain(path: Path) -> tuple[ChainManager, NodeChain]:
    cm = ChainManager(P, str(path / "chain.sqlite"), now=lambda: NOW)
    mempool = Mempool(P, ChainViewAdapter(cm))
    cm.add_listener(MempoolUpdater(mempool))
    return cm, NodeChain(cm, mempool)


def _mine(cm: ChainManager, parent: BlockIndex, n: int, pays: dict[int, bytes],
          spacing: int = 600) -> BlockIndex:
    for _ in range(n):
        height = parent.height + 1
        block = mine_block(parent.header, height, pays.get(height, OTHER), P, parent.header.time + spacing,
                           cm.next_bits(parent))
        cm.accept_block(block)
        parent = cm.get_index(block.hash)
        assert parent is not None
    return parent


class _Withholding(NodeChain):
    """The node's Chain serving no block above `limit` (its headers all)."""

    def __init__(self, cm: ChainManager, mempool: Mempool, limit: int) -> None:
        super().__init__(cm, mempool)
        self.limit = limit

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        return await super().get_blocks(start_height, max(0, min(count, self.limit + 1 - start_height)))


def _template(path: Path, scenario: str = "reorganisation") -> None:
    """A wallet synced to block 6 (paid at 2 and 5), closed; then the node's chain
    reorganises to a longer branch from block 3 (paying the wallet at 5' and 7').
    "overtaken": the wallet took blocks up to 3 only (the node withheld 4..6) and holds the
    node's checked header chain 4..6 as rows without their blocks, no check pending; the
    branch replaces those rows, the node's header chain checked again from 3 when its block
    4' is not the row there (Wallet._overtaken)."""
    cm, chain = _open_chain(path)

    async def first() -> None:
        w = Wallet("w", WalletStore.create(path, "w", P.name),
                   _Withholding(cm, chain._mempool, FORK) if scenario == "overtaken" else chain)
        pkh = w.new_key(False).pkh
        _mine(cm, cm.tip, OLD_TIP, {2: pkh, 5: pkh})
        await w.sync()
        if scenario == "overtaken":
            assert w.store.best_block[1] == FORK and not w.store.chain_recheck
            assert sorted(w.store.headers(0, 100)) == list(range(0, OLD_TIP + 1))
        else:
            assert w.store.best_block[1] == OLD_TIP
        assert w.store.checked_work is not None
        await w.close()
        if scenario == "rowless":           # as a file from before the header chain
            store = WalletStore.open(path, "w", P.name)
            with store._lock, store._conn:
                store._conn.execute("DELETE FROM headers")
                store._conn.execute("DELETE FROM meta WHERE key IN ('chain_recheck', 'checked_work')")
            store.close()
        fork = cm.block_at_height(FORK)
        assert fork is not None
        _mine(cm, fork, NEW_TIP - FORK, {5: pkh, 7: pkh}, spacing=601)     # other blocks
        assert cm.tip.height == NEW_TIP

    try:
        asyncio.run(first())
    finally:
        cm.close()


def _child(control: Connection, path: str) -> None:
    """The stepped wallet (module docstring): stops before each COMMIT of its store, and
    says "mark disconnected" / "mark anchored" after each such commit."""
    cm, chain = _open_chain(Path(path))
    store = WalletStore.open(path, "w", P.name)
    armed = {"on": False}

    def traced(sql: str) -> None:
        # Before each COMMIT: a kill there leaves every earlier transaction committed and
        # this one's frames in the WAL uncommitted (a kill anywhere inside a transaction
        # leaves the same, and one between transactions the files of the next COMMIT's).
        if armed["on"] and sql.split(None, 1)[0].upper() == "COMMIT":
            control.send("step " + sql[:60])
            control.recv()                # killed here, or let go on

    store._conn.set_trace_callback(traced)
    disconnect, add_headers = store.disconnect_block, store.add_headers

    def disconnect_marked(*args: Any, **kwargs: Any) -> None:
        disconnect(*args, **kwargs)
        control.send("mark disconnected")

    def add_headers_marked(*args: Any, **kwargs: Any) -> None:
        add_headers(*args, **kwargs)
        if kwargs.get("checked_chain"):
            control.send("mark anchored")

    store.disconnect_block = disconnect_marked          # type: ignore[method-assign]
    store.add_headers = add_headers_marked              # type: ignore[method-assign]
    control.send("ready")
    control.recv()
    armed["on"] = True
    asyncio.run(Wallet("w", store, chain).sync())
    armed["on"] = False
    control.send("done")
    control.recv()


def _run_to(path: Path, k: int) -> tuple[list[str], list[str], bool]:
    """The child on `path`, killed before commit k (or run to the end): the commits it
    passed, the marks it sent, whether it finished."""
    stepper = Stepper.spawn(_child, str(path))
    steps: list[str] = []
    marks: list[str] = []
    try:
        while True:
            line = stepper.line()
            if line.startswith("mark "):
                marks.append(line[5:])
            elif line == "done":
                return steps, marks, True
            elif len(steps) == k:
                return steps, marks, False
            else:
                steps.append(line[5:])
                stepper.go()
    finally:
        stepper.kill()


def _restarted(path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The wallet restarted on `path`'s files and synced: what an uninterrupted run must
    equal, and whether it checked the node's chain again."""
    cm, chain = _open_chain(path)

    async def go() -> dict[str, Any]:
        w = Wallet("w", WalletStore.open(path, "w", P.name), chain)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cleancoin.wallet"):
            await w.sync()
        store = w.store
        tip = cm.tip
        state = {
            "best": store.best_block, "tip": (tip.hash, tip.height),
            "rows": {h: r[0] for h, r in store.headers(0, 1 << 30).items()},
            # The headers of the rows replaced (listsinceblock's walk down a branch that left).
            "left": {bytes(r[0]) for r in store._conn.execute("SELECT hash FROM left_headers")},
            "active": {h: cm.block_at_height(h).hash for h in range(tip.height + 1)},  # type: ignore[union-attr]
            "checked_work": store.checked_work, "tip_work": (tip.height, tip.hash, tip.chainwork),
            "problems": store.check(), "recheck": store.chain_recheck,
            "confirmed": {t.tx.txid: t.block_hash for t in store.transactions() if t.block_hash is not None},
            "balances": w.balances(),
            "anchored": any("header chain anchored" in r.getMessage() for r in caplog.records),
        }
        await w.close()
        return state

    try:
        return asyncio.run(go())
    finally:
        cm.close()


@pytest.mark.parametrize("scenario", ["reorganisation", "overtaken", "rowless"])
def test_kill_9_at_every_commit_of_a_reorganisation_skips_no_check(tmp_path: Path, caplog, scenario: str) -> None:
    template = tmp_path / "template"
    _template(template, scenario)
    reference_dir = tmp_path / "reference"
    shutil.copytree(template, reference_dir)
    steps, marks, finished = _run_to(reference_dir, 1 << 30)
    undone = OLD_TIP - FORK if scenario == "reorganisation" else 0     # rowless: at once
    assert finished and marks.count("disconnected") == undone and marks[-1] != "disconnected", marks
    assert "anchored" in marks, marks
    print(f"\n{scenario}: a kill before each of {len(steps)} commits (marks of the whole run: {marks})")
    reference = _restarted(reference_dir, caplog)
    assert reference["best"] == reference["tip"] and reference["tip"][1] == NEW_TIP
    assert not reference["anchored"] and len(reference["confirmed"]) == 3, reference   # 2, 5', 7'
    # The blocks 4..6 that left: their headers kept, each still naming its parent.
    assert len(reference["left"]) == (0 if scenario == "rowless" else OLD_TIP - FORK), reference["left"]
    active = reference["active"]
    failures = []
    for k in range(len(steps)):
        run = tmp_path / f"kill{k}"
        shutil.copytree(template, run)
        _, marks, finished = _run_to(run, k)
        assert not finished
        where = f"kill before commit {k} (committed before it: {marks})"
        _, chainwork = chain_files(run / "chain.sqlite", tmp_path / "scratch")
        files = read_wallet(run / "wallets" / "w" / "wallet.sqlite", tmp_path / "scratch")
        # From the files, not from the marks: a block left (only a disconnect lowers the best
        # block), or rows of the branch were stored (overtaken: the rows it replaces are the
        # bar), and the check after it did not commit.
        rows = files["rows"]                                                  # type: ignore[index]
        branch_rows = any(h in rows and rows[h][0] == cm_hash for h, cm_hash in active.items() if h > FORK)
        left = int(files["meta"]["best_height"]) < OLD_TIP if scenario != "overtaken" else branch_rows  # type: ignore[index]
        unchecked = left and "anchored" not in marks
        failures += [f"{where}: {p}" for p in wallet_headers("w", files, chainwork)]
        if unchecked and not int(files["meta"].get("chain_recheck", 0)):   # type: ignore[attr-defined]
            failures.append(f"{where}: a block was disconnected and the check after it did not "
                            f"commit, yet chain_recheck is clear: a restart would skip it")
        state = _restarted(run, caplog)
        if unchecked and not state["anchored"]:
            failures.append(f"{where}: the restarted wallet took the branch without checking it")
        for key in ("best", "rows", "left", "checked_work", "problems", "recheck", "confirmed", "balances"):
            if state[key] != reference[key]:
                failures.append(f"{where}: {key} {state[key]!r}, an uninterrupted run {reference[key]!r}")
        if state["rows"] != state["active"] or state["checked_work"] != state["tip_work"]:
            failures.append(f"{where}: the header chain or checked work is not the node's")
        shutil.rmtree(run)
    assert len(steps) >= NEW_TIP - FORK + undone + 1, steps     # blocks, disconnects, anchor
    assert not failures, "\n".join(failures)
