"""A compromised node answering the wallet's header queries with a branch that never meets
the active chain: listsinceblock walked it for ever, growing its list of stale blocks (the
wallet's memory) while the call never ended. Over real Cap'n Proto, the node's side is the
real NodeChain with `get_block_header_info` replaced by the attacker's for unknown hashes."""

from __future__ import annotations

import asyncio
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
