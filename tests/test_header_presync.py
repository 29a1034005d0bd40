"""Headers pre-sync against a real ChainManager (real SQLite, solved regtest headers): the
chain checks a header against an unstored parent as it checks a stored one, stores a run of
headers only when it ends with more work than the tip (unless the caller counted that it
does), and p2p/presync.HeaderSync bounds a session and stores, on redownload, only the
headers it counted. The attack itself, from a peer against both executables:
tests/functional/test_p2p_header_presync.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.common.chainparams import REGTEST, ChainParams
from cleancoin.components.common.errors import Failure, ValidationError
from cleancoin.components.common.pow import check_proof_of_work
from cleancoin.components.common.primitives import BlockHeader
from cleancoin.components.node import chain as chain_mod
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p import presync
from cleancoin.components.node.p2p.presync import HeaderSync, PresyncAbort

NOW = 2_100_000_000
PKH = b"\x11" * 20
#: Regtest that retargets every 8 blocks: the period start of a run above its base is
#: recorded in the links, below it read from the index.
RETARGETING: ChainParams = dataclasses.replace(REGTEST, pow_no_retargeting=False, retarget_interval=8)


def _open(path: Path, params: ChainParams = REGTEST) -> ChainManager:
    return ChainManager(params, str(path), now=lambda: NOW)


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[ChainManager]:
    chain = _open(tmp_path / "a.sqlite")
    yield chain
    chain.close()


def _grow(cm: ChainManager, n: int, dt: int = 600, pkh: bytes = PKH) -> None:
    for _ in range(n):
        tip = cm.tip
        cm.accept_block(mine_block(tip.header, tip.height + 1, pkh, cm.params, tip.header.time + dt,
                                   cm.next_bits(tip)))


def _headers(cm: ChainManager, parent_hash: bytes, n: int, tag: int) -> list[BlockHeader]:
    """n solved regtest headers on a stored parent (not stored)."""
    parent = cm.get_index(parent_hash)
    assert parent is not None
    out, header = [], parent.header
    for i in range(n):
        block = mine_block(header, parent.height + 1 + i, bytes([tag]) * 20, cm.params, header.time + 61, header.bits)
        out.append(block.header)
        header = block.header
    return out


def test_a_link_is_checked_as_the_index_checks_across_retargets(tmp_path: Path) -> None:
    """The headers of a real retargeting chain (a source chain of 30 blocks, 200 s apart:
    the difficulty rises every 8) checked from genesis, and from a base at height 5, without
    storing: same heights and work as the source; stored with accept_headers, the same
    entries; a header whose bits ignore the retarget is refused as the chain refuses it."""
    src = _open(tmp_path / "src.sqlite", RETARGETING)
    _grow(src, 30, dt=200)
    headers = [src.block_at_height(h).header for h in range(1, 31)]
    assert len({h.bits for h in headers}) > 1, "the source chain never retargeted"
    dst = _open(tmp_path / "dst.sqlite", RETARGETING)
    for base_height in (0, 5):
        if base_height:
            dst.accept_headers(headers[:base_height], min_work_checked=True)
        link = dst.header_link(headers[base_height - 1].hash if base_height else RETARGETING.genesis_hash)
        for header in headers[base_height:]:
            link = dst.check_header_link(header, link)
            assert link.chainwork == src.get_index(header.hash).chainwork
        assert dst.get_index(headers[-1].hash) is None                  # nothing stored
    wrong = headers[15]                                                 # height 16: a retarget
    assert wrong.bits != headers[14].bits
    nonce = 0
    while True:                    # solved at the old difficulty: only the bits are wrong
        bad = BlockHeader(wrong.version, wrong.prev_hash, wrong.merkle_root, wrong.time, headers[14].bits, nonce)
        if check_proof_of_work(bad.hash, bad.bits, RETARGETING):
            break
        nonce += 1
    link = dst.header_link(headers[4].hash)
    for header in headers[5:15]:
        link = dst.check_header_link(header, link)
    with pytest.raises(ValidationError) as e:
        dst.check_header_link(bad, link)
    assert e.value.reason == "bad-diffbits"
    assert dst.check_header_link(wrong, link).height == 16
    last = dst.accept_headers(headers[5:])
    assert last.chainwork == src.tip.chainwork and last.height == 30
    src.close()
    dst.close()


def test_a_run_of_headers_with_less_work_than_the_tip_is_not_stored(cm: ChainManager, tmp_path: Path) -> None:
    """accept_headers stores a run only when it ends with more work than the tip, or when the
    caller says it counted that the branch goes on to more (pre-sync's redownload)."""
    _grow(cm, 10)
    low = _headers(cm, REGTEST.genesis_hash, 9, 1)
    with pytest.raises(ValidationError) as e:
        cm.accept_headers(low)
    assert e.value.failure is Failure.TOO_LITTLE_WORK and not e.value.marks_block_invalid
    assert all(cm.get_index(h.hash) is None for h in low)
    more = _headers(cm, REGTEST.genesis_hash, 11, 2)
    assert cm.accept_headers(more).hash == more[-1].hash                # 11 headers > 10 blocks
    assert cm.accept_headers(low[:4], min_work_checked=True).height == 4
    path = cm.db_path
    cm.close()
    again = ChainManager(REGTEST, path, now=lambda: NOW)
    assert again.get_index(more[-1].hash) is not None and again.get_index(low[3].hash) is not None
    assert again.get_index(low[4].hash) is None
    again.close()


def test_a_presync_session_is_bounded(cm: ChainManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound: by work (regtest: the tip's height above the base, plus the margin) and by
    MAX_PRESYNC_HEADERS (lowered here: on regtest the work bound is the smaller)."""
    _grow(cm, 10)
    low = _headers(cm, REGTEST.genesis_hash, 10, 3)
    tip_work = cm.tip.chainwork
    assert presync.work_bound(tip_work, cm.get_index(REGTEST.genesis_hash).chainwork, REGTEST.pow_limit) == 12
    sync = HeaderSync.start(cm.header_link(REGTEST.genesis_hash))
    sync.presync(cm, low, tip_work)
    assert sync.counted == 10 and sync.last.chainwork == tip_work      # equal: not more
    monkeypatch.setattr(presync, "MAX_PRESYNC_HEADERS", 5)
    sync = HeaderSync.start(cm.header_link(REGTEST.genesis_hash))
    with pytest.raises(PresyncAbort):
        sync.presync(cm, low, tip_work)
    assert sync.counted == 6
    assert all(cm.get_index(h.hash) is None for h in low)


def test_redownload_stores_only_the_headers_counted(cm: ChainManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch of 12 headers against a tip of 10 blocks, counted in two answers (8, then
    4), with a recorded hash every 4 heights: asked again, an answer of other headers is
    refused at the first recorded height, and nothing of it is returned for storing; the
    headers counted are, up to each recorded height, then to the last."""
    monkeypatch.setattr(presync, "CHECKPOINT_INTERVAL", 4)
    _grow(cm, 10)
    branch = _headers(cm, REGTEST.genesis_hash, 12, 4)
    decoy = _headers(cm, REGTEST.genesis_hash, 12, 5)
    tip_work = cm.tip.chainwork
    sync = HeaderSync.start(cm.header_link(REGTEST.genesis_hash))
    sync.presync(cm, branch[:8], tip_work)
    assert sync.last.chainwork <= tip_work
    sync.presync(cm, branch[8:], tip_work)
    assert sync.last.chainwork > tip_work and len(sync.checkpoints) == 3 * 32
    sync.start_redownload()
    assert sync.expects(branch[0]) and sync.expects(decoy[0])
    with pytest.raises(PresyncAbort):
        sync.redownload(decoy)
    batch = sync.redownload(branch[:6])                                 # up to height 4 proven
    assert batch.verified == branch[:4] and not batch.done
    assert sync.expects(branch[4]) and not sync.expects(branch[6])
    with pytest.raises(PresyncAbort):
        sync.redownload(branch[4:7])                                    # ends before height 8
    batch = sync.redownload(branch[4:])
    assert batch.verified == branch[4:] and batch.done and not batch.beyond
    assert chain_mod.HeaderLink is type(sync.last)
