"""A compromised node answering the wallet's header queries with a branch that never meets
the active chain: listsinceblock walked it for ever, growing its list of stale blocks (the
wallet's memory) while the call never ended. Over real Cap'n Proto, the node's side is the
real NodeChain with `get_block_header_info` replaced by the attacker's for unknown hashes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import capnp
import pytest
from ipc_pair import use_over_socketpair

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.interfaces.chain import BlockInfo
from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.node import ChainViewAdapter
from cleancoin.components.rpc.registry import Registry
from cleancoin.components.rpc.carried import execute_request
from cleancoin.components.interfaces.chain import RpcRequest
from cleancoin.components.wallet.rpc import MAX_STALE_WALK, register_wallet_methods
from cleancoin.components.wallet.wallet import WalletManager
from test_wallet import Env


class RogueChain(NodeChain):
    """An honest chain, except for headers of blocks it made up: each one's parent is another
    made-up block, never in the active chain; at one height (`falling` false), or one lower
    each step from a billion."""

    def __init__(self, *args: Any, falling: bool) -> None:
        super().__init__(*args)
        self.falling = falling
        self.asked = 0

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        if block_hash[:4] != b"evil":
            return await super().get_block_header_info(block_hash)
        self.asked += 1
        n = int.from_bytes(block_hash[4:12], "little")
        height = 10**9 - n if self.falling else 500
        return BlockInfo(block_hash, height, 0, b"evil" + (n + 1).to_bytes(8, "little") + bytes(20), False)


@pytest.mark.parametrize("falling", [False, True], ids=["same-height", "falling-from-a-billion"])
def test_listsinceblock_does_not_follow_a_branch_that_never_ends(tmp_path: Path, falling: bool) -> None:
    cm = ChainManager(REGTEST, str(tmp_path / "chain.sqlite"))
    rogue = RogueChain(cm, Mempool(REGTEST, ChainViewAdapter(cm)), falling=falling)

    async def use(init: Any) -> dict[str, Any]:
        chain = await init.make_chain()
        loader = WalletManager(str(tmp_path / "net"), chain, REGTEST.name)
        registry = Registry()
        register_wallet_methods(registry, loader)
        created = await execute_request(registry, RpcRequest("createwallet", '["w"]', None))
        assert created.ok, created.error_message
        evil = (b"evil" + bytes(28))[::-1].hex()            # display order
        response = await asyncio.wait_for(
            execute_request(registry, RpcRequest("listsinceblock", f'["{evil}"]', "w")), 30)
        await loader.close_all()
        return {"ok": response.ok, "code": response.error_code, "message": response.error_message}

    os.makedirs(tmp_path / "net" / "wallets")
    result = asyncio.run(capnp.run(use_over_socketpair(lambda: rogue, use, IpcPeer("rogue-node", os.getpid()),
                                                       IpcPeer("test-wallet", os.getpid()))))
    cm.close()
    assert result == {"ok": False, "code": -5, "message": "Block not found"}, result
    # Flat: the second header's height did not fall. Falling: the walk's bound.
    assert rogue.asked <= (MAX_STALE_WALK + 1 if falling else 2), rogue.asked


class HeightLiar(NodeChain):
    """An honest chain, except that it names `lie` (a block of the wallet's) as the block at
    `height` in its active chain (or, `stale`, as a block there off it), and a made-up hash
    as its block at 15."""

    lie: bytes = b""
    height: int = 0
    stale: bool = False

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        info = await super().get_block_header_info(block_hash)
        if block_hash != self.lie:
            return info
        if self.stale:      # off the active chain, its parent the block below `height`
            below = self._chain.block_at_height(self.height - 1)
            return BlockInfo(block_hash, self.height, info.time, below.hash, False)
        return dataclasses.replace(info, height=self.height)

    async def get_block_hash(self, height: int) -> bytes:
        return b"\x77" * 32 if self.lie and height == 15 else await super().get_block_hash(height)


async def _wallet_over_rpc(tmp_path: Path, chain: Any) -> tuple[WalletManager, Registry, Any]:
    """A wallet manager on `chain` in `tmp_path`, the wallet RPC methods registered, and the
    wallet "w" created through them."""
    loader = WalletManager(str(tmp_path / "net"), chain, REGTEST.name)
    registry = Registry()
    register_wallet_methods(registry, loader)
    assert (await execute_request(registry, RpcRequest("createwallet", '["w"]', None))).ok
    return loader, registry, loader.get("w")


@pytest.mark.parametrize("stale", [False, True], ids=["said-higher", "said-stale"])
def test_listsinceblock_counts_from_the_wallets_own_block(tmp_path: Path, stale: bool) -> None:
    """A client polls listsinceblock with the `lastblock` it got at height 15; blocks 16..20
    then paid the wallet. The node says that block is at height 20 (or that it left the
    active chain, its branch forking at 19). Before 12-07 the wallet took the node's word:
    depth 1 (or 2), and the five payments confirmed since (or three) were not listed: the
    client never saw them. Now a block of the wallet's own chain is found in its header rows
    by hash, at its own height: all five listed, none `removed`; and `lastblock` is the
    wallet's own block, not the node's at that depth."""
    env = Env(tmp_path)
    liar = HeightLiar(env.cm, env.mempool)

    async def scenario() -> dict[str, Any]:
        loader, registry, w = await _wallet_over_rpc(tmp_path, liar)
        pkh = w.new_key(False).pkh
        env.mine(15)
        await w.sync()
        last = json.loads((await execute_request(registry, RpcRequest("listsinceblock", "[]", "w"))).result)["lastblock"]
        paid = {b.txs[0].txid_hex for b in env.mine(5, pkh)}
        await w.sync()
        liar.lie, liar.height, liar.stale = bytes.fromhex(last)[::-1], 20, stale
        response = await execute_request(registry, RpcRequest("listsinceblock", f'["{last}", 6]', "w"))
        assert response.ok, response.error_message
        result = json.loads(response.result)
        listed = {t["txid"] for t in result["transactions"]}
        print(f"listsinceblock from the block at 15, the node lying ({'stale' if stale else 'higher'}): "
              f"{len(listed & paid)} of the 5 payments listed, {len(result['removed'])} removed")
        await loader.close_all()
        return {"missing": sorted(paid - listed), "removed": result["removed"], "lastblock": result["lastblock"],
                "own": last}

    os.makedirs(tmp_path / "net" / "wallets")
    result = asyncio.run(scenario())
    env.cm.close()
    assert result["missing"] == [] and result["removed"] == []
    assert result["lastblock"] == result["own"]


class ActiveLiar(NodeChain):
    """An honest chain, except that it says `lie` (a block a reorganisation replaced) is in its
    active chain, one above its tip, its parent the tip: the wallet not caught up yet."""

    lie: bytes = b""

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        if block_hash != self.lie:
            return await super().get_block_header_info(block_hash)
        tip = self._chain.tip
        return BlockInfo(block_hash, tip.height + 1, tip.header.time + 1, tip.hash, True)


@pytest.mark.parametrize("lying", [False, True], ids=["honest", "said-active"])
def test_listsinceblock_reports_the_removed_payments_of_a_block_the_wallet_held(
        tmp_path: Path, lying: bool) -> None:
    """Blocks 11..15 paid the wallet; a client polled listsinceblock and kept `lastblock`, the
    block at 15. A reorganisation then replaced 11..15. The client polls again from that
    block: bitcoind lists the five payments in `removed` so that it stops crediting them.
    Before 12-07 the wallet asked the node where that block's branch meets its chain: a node
    saying the block is in its active chain, one above its tip (the wallet not caught up),
    made `removed` empty. Now a block the wallet held has its header kept when its row is
    replaced (`left_headers`), and the walk down its branch to the wallet's chain is the
    wallet's own: the five payments are `removed` whatever the node says."""
    env = Env(tmp_path)
    liar = ActiveLiar(env.cm, env.mempool)

    async def scenario() -> dict[str, Any]:
        loader, registry, w = await _wallet_over_rpc(tmp_path, liar)
        pkh = w.new_key(False).pkh
        fork = env.mine(10)[-1]
        paid = {b.txs[0].txid_hex for b in env.mine(5, pkh)}
        await w.sync()
        last = json.loads((await execute_request(registry, RpcRequest("listsinceblock", "[]", "w"))).result)["lastblock"]
        env.mine(7, parent=env.cm.get_index(fork.hash))       # the reorganisation: 11..17
        await w.sync()
        assert w.store.best_block[1] == 17
        if lying:
            liar.lie = bytes.fromhex(last)[::-1]
        response = await execute_request(registry, RpcRequest("listsinceblock", f'["{last}"]', "w"))
        assert response.ok, response.error_message
        result = json.loads(response.result)
        removed = {t["txid"] for t in result["removed"]}
        print(f"listsinceblock from a replaced block ({'node lying' if lying else 'honest node'}): "
              f"{len(removed & paid)} of the 5 reorganised-away payments in removed")
        await loader.close_all()
        return {"removed": sorted(removed), "paid": sorted(paid)}

    os.makedirs(tmp_path / "net" / "wallets")
    result = asyncio.run(scenario())
    env.cm.close()
    assert result["removed"] == result["paid"]


class DeepLiar(NodeChain):
    """An honest chain, except that it names a made-up hash as its block at `height`, and
    says that hash is in its active chain one above its tip."""

    height = -1
    fake = b"\x55" * 32
    also: bytes = b""           # another block it says the same of (the genesis block)

    async def get_block_hash(self, height: int) -> bytes:
        return self.fake if height == self.height else await super().get_block_hash(height)

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        if block_hash not in (self.fake, self.also):
            return await super().get_block_header_info(block_hash)
        tip = self._chain.tip
        return BlockInfo(block_hash, tip.height + 1, tip.header.time + 1, tip.hash, True)


def test_listsinceblock_hands_out_only_its_own_blocks_as_lastblock(tmp_path: Path) -> None:
    """A wallet born at 30 (no header rows below its anchor's median-time window); a client
    polls with target_confirmations 31, whose `lastblock` is the block at 0, below the rows. Before
    12-07 the wallet passed on the node's hash for that height: a made-up one, which the node
    then placed above its tip, so that the client's next poll listed none of the 3 payments
    confirmed since. Now `lastblock` is always a block the wallet knows: its row, else the
    network's genesis block (the client lists more next time, never less), and a poll from
    the genesis block is the wallet's own answer too, whatever the node says of it."""
    env = Env(tmp_path)
    liar = DeepLiar(env.cm, env.mempool)

    async def scenario() -> dict[str, Any]:
        env.mine(30)
        loader, registry, w = await _wallet_over_rpc(tmp_path, liar)
        await w.sync()
        assert w.store.best_block[1] == 30 and not w.store.headers(0, 0)
        liar.height = 0
        first = await execute_request(registry, RpcRequest("listsinceblock", '[null, 31]', "w"))
        last = json.loads(first.result)["lastblock"]
        liar.also = bytes.fromhex(last)[::-1]       # and lies about the block handed out
        paid = {b.txs[0].txid_hex for b in env.mine(3, w.new_key(False).pkh)}
        await w.sync()
        response = await execute_request(registry, RpcRequest("listsinceblock", f'["{last}"]', "w"))
        assert response.ok, response.error_message
        listed = {t["txid"] for t in json.loads(response.result)["transactions"]}
        print(f"lastblock below the rows from a lying node: {len(listed & paid)} of the 3 payments "
              f"confirmed since listed next time")
        await loader.close_all()
        return {"missing": sorted(paid - listed), "last": last}

    os.makedirs(tmp_path / "net" / "wallets")
    result = asyncio.run(scenario())
    env.cm.close()
    assert result["missing"] == [] and result["last"] == REGTEST.genesis_hash_hex
