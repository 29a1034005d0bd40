"""p2p/header_download.HeaderDownload against a real ChainManager (real SQLite, solved
regtest blocks): which blocks of a stored header chain a headers-first download asks for
next. The download itself, from peers against both executables:
tests/functional/test_p2p_min_chain_work_download.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import Block
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.header_download import MARK_INTERVAL, HeaderDownload

NOW = 2_100_000_000


def _blocks(parent: object, height: int, n: int, tag: int) -> list[Block]:
    """n solved regtest blocks on `parent` (a header) at `height` + 1 on."""
    out, header = [], parent
    for i in range(n):
        block = mine_block(header, height + 1 + i, bytes([tag]) * 20, REGTEST, header.time + 61, header.bits)
        out.append(block)
        header = block.header
    return out


@pytest.fixture(scope="module")
def branch() -> list[Block]:
    return _blocks(REGTEST.genesis_block.header, 0, 2 * MARK_INTERVAL + 150, 7)


@pytest.fixture
def cm(tmp_path: Path, branch: list[Block]) -> Iterator[ChainManager]:
    """A chain at genesis holding the headers of `branch` (no block of it)."""
    chain = ChainManager(REGTEST, str(tmp_path / "c.sqlite"), now=lambda: NOW)
    chain.accept_headers([b.header for b in branch[:MAX_BATCH_HEADERS]])
    chain.accept_headers([b.header for b in branch[MAX_BATCH_HEADERS:]])
    yield chain
    chain.close()


MAX_BATCH_HEADERS = 2000


def _branch_hashes(plan: HeaderDownload, cm: ChainManager, lo: int, hi: int) -> list[bytes | None]:
    return [plan.hash_at(cm, h) for h in range(lo, hi + 1)]


def test_the_branch_by_height_from_marks(cm: ChainManager, branch: list[Block]) -> None:
    """One walk records a hash every MARK_INTERVAL heights (and the target's); `hash_at`
    then gives every height's hash of the branch, nothing above the target, and keeps only
    the four stretches asked for last."""
    target = cm.get_index(branch[-1].hash)
    plan = HeaderDownload.start(cm, target)
    assert plan.low == 1
    assert sorted(plan.marks) == [MARK_INTERVAL, 2 * MARK_INTERVAL, len(branch)]
    assert _branch_hashes(plan, cm, 1, len(branch)) == [b.hash for b in branch]
    assert plan.hash_at(cm, len(branch) + 1) is None and plan.hash_at(cm, 0) is None
    assert len(plan._stretches) == 3
    assert plan.hash_at(cm, 1500) == branch[1499].hash


def test_a_plan_started_above_stored_blocks_starts_above_them(cm: ChainManager, branch: list[Block]) -> None:
    """Blocks already connected lie below the plan's `low`; a stretch reaching below the
    fork gives the active chain's hashes there (stored: the download passes them over)."""
    for b in branch[:10]:
        cm.accept_block(b)                              # connected: the tip is at 10
    plan = HeaderDownload.start(cm, cm.get_index(branch[-1].hash))
    assert plan.low == 11
    assert plan.hash_at(cm, 5) == branch[4].hash


def test_a_longer_target_extends_the_plan_another_branch_restarts_it(
        cm: ChainManager, branch: list[Block]) -> None:
    """Headers stored later that extend the target add to the plan; a target on another
    branch starts the plan over from its own fork."""
    short = cm.get_index(branch[1199].hash)
    plan = HeaderDownload.start(cm, short)
    assert plan.hash_at(cm, 1200) == branch[1199].hash and plan.hash_at(cm, 1201) is None
    plan.low = 1201                                     # (as if all below were stored)
    plan.retarget(cm, cm.get_index(branch[-1].hash))
    assert plan.low == 1201
    assert _branch_hashes(plan, cm, 1190, len(branch)) == [b.hash for b in branch[1189:]]
    other = _blocks(branch[49].header, 50, len(branch), 9)       # forks at 50, more work
    cm.accept_headers([b.header for b in other[:MAX_BATCH_HEADERS]])
    cm.accept_headers([b.header for b in other[MAX_BATCH_HEADERS:]])
    plan.retarget(cm, cm.get_index(other[-1].hash))
    assert plan.low == 1                              # nothing of either branch is stored
    assert _branch_hashes(plan, cm, 45, 60) == [b.hash for b in branch[44:50]] + [b.hash for b in other[:10]]
