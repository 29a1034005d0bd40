"""-minimumchainwork (h40): its parsing, the networks' values, and the node's initial block
download while the tip's work is below it (ChainManager.initial_block_download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleancoin.components.common.chainparams import GENESIS_WORK, MAIN, REGTEST, TESTNET, parse_minimum_chain_work
from cleancoin.components.common.options import OptionError, Settings, minimum_chain_work
from cleancoin.components.common.pow import block_proof
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.presync import work_threshold

PKH = b"\x11" * 20


@pytest.mark.parametrize("text, value", [("0", 0), ("190", 400), ("0x190", 400), ("0X00ff", 255),
                                         ("f" * 64, (1 << 256) - 1)])
def test_minimum_chain_work_is_read_as_bitcoind_reads_it(text: str, value: int) -> None:
    assert parse_minimum_chain_work(text) == value


@pytest.mark.parametrize("text", ["", "0x", "xyz", "12g", "-1", "1" * 65, "0x 1"])
def test_a_minimum_chain_work_that_is_not_hex_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"Invalid non-hex \(.*\) minimum chain work value specified"):
        parse_minimum_chain_work(text)
    with pytest.raises(OptionError):
        minimum_chain_work(Settings("regtest", "/nonexistent", {"minimumchainwork": [text]}, {}))


def test_the_networks_values() -> None:
    """Regtest 0 (bitcoind's); main and test the genesis block's work, a bar every chain of
    theirs clears, until a release pins a real block (chainparams.py)."""
    assert REGTEST.minimum_chain_work == 0
    assert MAIN.minimum_chain_work == TESTNET.minimum_chain_work == GENESIS_WORK
    assert GENESIS_WORK == block_proof(MAIN.genesis_bits) == 0x100001


def test_the_node_is_in_ibd_while_its_tip_is_below_the_minimum_chain_work(tmp_path: Path) -> None:
    """A recent tip at the best header: in IBD only because of the minimum chain work (work
    2 a regtest block: 20 at height 9, 22 at height 10); the presync threshold is the larger
    of the tip's work and the minimum."""
    now = 1_800_000_000
    cm = ChainManager(REGTEST, str(tmp_path / "chain.sqlite"), now=lambda: now, minimum_chain_work=22)
    try:
        for h in range(1, 10):
            tip = cm.tip
            cm.accept_block(mine_block(tip.header, h, PKH, REGTEST, now - 1000 + h, tip.header.bits))
        assert cm.tip.chainwork == 20
        assert cm.initial_block_download(now) is True
        assert work_threshold(cm.tip.chainwork, cm.minimum_chain_work) == 22
        tip = cm.tip
        cm.accept_block(mine_block(tip.header, 10, PKH, REGTEST, now - 900, tip.header.bits))
        assert cm.initial_block_download(now) is False
        assert work_threshold(cm.tip.chainwork, cm.minimum_chain_work) == 22
        assert cm.initial_block_download(now + 25 * 3600) is True        # an old tip, as before
    finally:
        cm.close()
    default = ChainManager(REGTEST, str(tmp_path / "other.sqlite"), now=lambda: now)
    try:
        assert default.minimum_chain_work == 0
    finally:
        default.close()
