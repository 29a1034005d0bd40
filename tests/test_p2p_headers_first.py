"""Headers-first block download below the minimum chain work, between P2P nodes on real chains
(ChainManager, SQLite) over TCP on 127.0.0.1, with the short timeouts and small batches a
functional test cannot set: the blocks come, 16 in flight at a time, once the headers show
the minimum, and a peer that stored headers of that work but withholds the blocks (notfound)
is asked once more for each, then its session ends. The attacks themselves, from a remote
peer against both executables: tests/functional/test_p2p_min_chain_work_download.py and
test_p2p_min_chain_work_stall.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cleancoin.components.common.primitives import Block
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.p2p import messages as m
from cleancoin.components.node.p2p.block_window import MAX_BLOCKS_IN_TRANSIT_PER_PEER

from test_p2p import P, Net, RawPeer, chain_200, mine_chain, run, wait_until

NOW = 2_100_000_000
#: The victims' minimum chain work: regtest blocks carry work 2, so height 130 (work 262).
MIN_WORK = 2 * 131
#: The attacker's coinbase key: its blocks are other blocks than the honest chain_200's.
CHEAP_PKH = hashlib.sha256(b"cheap headers").digest()[:20]


@pytest.fixture
def chain_at(tmp_path: Path) -> Callable[..., ChainManager]:
    """chain_at(blocks, minimum) -> a real chain holding `blocks` (connected), closed after."""
    made: list[ChainManager] = []

    def make(blocks: tuple[Block, ...] = (), minimum: int = 0) -> ChainManager:
        cm = ChainManager(P, str(tmp_path / f"c{len(made)}.sqlite"), now=lambda: NOW, minimum_chain_work=minimum)
        made.append(cm)
        for b in blocks:
            cm.accept_block(b)
        return cm

    yield make
    for cm in made:
        cm.close()


def test_the_blocks_of_a_header_chain_come_in_batches(chain_at: Callable[..., ChainManager],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """An honest node with 150 blocks, a fresh one below the minimum (130 blocks' work): it
    asks for headers first (no getblocks until its tip has the minimum), then for each of
    the 150 blocks once, at most MAX_BLOCKS_IN_TRANSIT_PER_PEER (16) in flight (since 12-07;
    before, 500 a getdata, here `getblocks_limit` 40), then once blocks-first."""
    caplog.set_level(logging.INFO, logger="cleancoin.net")
    blocks = chain_200()[:150]

    async def main() -> None:
        async with Net() as net:
            honest = await net.node(chain_at(blocks))
            victim = await net.node(chain_at((), MIN_WORK), getblocks_limit=40, connect=[f"127.0.0.1:{honest.port}"])
            await wait_until(lambda: victim.chain.tip.height == 150, what="the victim at the honest tip")
            await wait_until(lambda: "bytesrecv_per_msg" in honest.peer_info()[0]
                             and "getblocks" in honest.peer_info()[0]["bytesrecv_per_msg"], what="the getblocks")
            got = honest.peer_info()[0]["bytesrecv_per_msg"]
            # n getdata of 16 blocks at most: 24-byte header, 1-byte count, 36 bytes a block.
            n, rest = divmod(got["getdata"] - 36 * 150, 24 + 1)
            assert rest == 0 and -(-150 // MAX_BLOCKS_IN_TRANSIT_PER_PEER) <= n <= 150, got
            assert got["getheaders"] > 0
    run(main())
    text = caplog.text
    assert "below the minimum chain work: headers-first" in text
    assert "the minimum chain work is reached at height 150, going on blocks-first" in text


def test_a_peer_that_withholds_the_blocks_of_its_headers_is_asked_once_more(
        chain_at: Callable[..., ChainManager], caplog: pytest.LogCaptureFixture) -> None:
    """A peer shows 150 headers (more than the minimum) and answers every getdata with
    notfound: the node asks for each block once more (16 in flight at most), then ends the
    session with it; nothing is stored but the headers."""
    caplog.set_level(logging.INFO, logger="cleancoin.net")
    blocks = chain_200()[:150]

    async def main() -> None:
        async with Net() as net:
            victim = await net.node(chain_at((), MIN_WORK), getblocks_limit=200)
            raw = await RawPeer.connect(victim, "127.0.0.7")
            await raw.handshake(start_height=150)
            await raw.recv_until(m.GetHeaders)
            await raw.send(m.Headers(tuple(b.header for b in blocks)))
            asked: Counter[bytes] = Counter()
            while True:
                try:
                    getdata = await raw.recv_until(m.GetData, timeout=1.0)
                except TimeoutError:
                    break                               # (asks for nothing more)
                assert isinstance(getdata, m.GetData)
                assert len(getdata.items) <= MAX_BLOCKS_IN_TRANSIT_PER_PEER
                asked.update(it.hash for it in getdata.items)
                await raw.send(m.NotFound(getdata.items))
            assert asked == Counter({b.hash: 2 for b in blocks})
            assert victim.chain.tip.height == 0
            assert victim.chain.best_header.height == 150
    run(main())
    assert "Block download from peer=1: the blocks of its headers up to height 150 did not come" in caplog.text


def test_a_sync_peer_that_presyncs_forever_loses_the_download_after_the_headers_timeout(
        chain_at: Callable[..., ChainManager]) -> None:
    """The attack: a fresh node whose minimum chain work is far above what any header
    answer shows (0x100000: 524,288 regtest headers) takes an inbound peer claiming height
    1,000,000 as its sync peer; the peer answers each getheaders at once with 2000 more
    headers of a cheap chain of its own, so it never stalls and its session stays within the
    pre-sync bound for 262 answers. An honest peer that connects meanwhile (inbound too, so
    it does not take the download over) was never asked for headers: the cheap chain held
    the download for as long as its sender went on (on main, with a minimum pinned by a
    release, for the length of the whole chain). Now the headers sync has a deadline, as
    bitcoind's (HEADERS_DOWNLOAD_TIMEOUT_BASE, 15 min, plus 1 ms per header the tip's age
    implies; here shortened to 2 s): a sync peer whose headers show no chain of the minimum
    work by then is disconnected when another peer is ahead, and that peer is asked."""
    blocks = chain_200()[:150]

    async def main() -> None:
        async with Net() as net:
            victim = await net.node(chain_at((), 0x100000), headers_sync_timeout=2.0)
            attacker = await RawPeer.connect(victim, "127.0.0.8")
            await attacker.handshake(start_height=1_000_000)
            answered = 0
            last = P.genesis_block

            async def feed() -> None:
                nonlocal answered, last
                while True:
                    msg = await attacker.recv(30.0)
                    if isinstance(msg, m.Ping):
                        await attacker.send(m.Pong(msg.nonce))
                    elif isinstance(msg, m.GetHeaders):
                        cheap = mine_chain(2000, last, answered * 2000, pkh=CHEAP_PKH)
                        await attacker.send(m.Headers(tuple(b.header for b in cheap)))
                        last, answered = cheap[-1], answered + 1

            feeding = asyncio.ensure_future(feed())
            await wait_until(lambda: answered >= 1, what="the attacker's first answer")
            honest = await net.node(chain_at(blocks), connect=[f"127.0.0.1:{victim.port}"])
            started = asyncio.get_running_loop().time()

            def honest_asked() -> bool:
                info = honest.peer_info()
                return bool(info) and "getheaders" in info[0]["bytesrecv_per_msg"]

            try:
                await wait_until(honest_asked, timeout=8.0, what="a getheaders to the honest peer")
            finally:
                held = asyncio.get_running_loop().time() - started
                feeding.cancel()
                print(f"the attacker answered {answered} getheaders ({answered * 2000} headers counted); "
                      f"honest peer asked for headers after {held:.1f} s: {honest_asked()}")
            assert attacker.writer.is_closing() or await attacker.closed_by_peer(2.0)
    run(main())
