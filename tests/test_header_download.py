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


def test_batches_come_in_height_order_from_the_fork_to_the_target(cm: ChainManager, branch: list[Block]) -> None:
    """One walk records a hash every MARK_INTERVAL heights (and the target's); the batches
    then hand out every block of the branch once, lowest first, and end at the target."""
    target = cm.get_index(branch[-1].hash)
    plan = HeaderDownload.start(cm, target)
    assert plan.next_height == 1
    assert sorted(plan.marks) == [MARK_INTERVAL, 2 * MARK_INTERVAL, len(branch)]
    got: list[bytes] = []
    while not plan.done:
        batch = plan.next_blocks(cm, 500)
        assert 0 < len(batch) <= 500
        got.extend(batch)
    assert got == [b.hash for b in branch]
    assert plan.next_blocks(cm, 500) == []


def test_stored_blocks_are_passed_over(cm: ChainManager, branch: list[Block]) -> None:
    """Blocks already stored (connected, or stored above a gap) are not handed out; a plan
    started after the tip moved starts above it."""
    for b in branch[:10]:
        cm.accept_block(b)                              # connected: the tip is at 10
    for b in branch[100:600]:
        cm.accept_block(b)                              # stored above the gap, not connected
    assert cm.tip.height == 10
    plan = HeaderDownload.start(cm, cm.get_index(branch[-1].hash))
    assert plan.next_height == 11
    first = plan.next_blocks(cm, 100)
    assert first == [b.hash for b in branch[10:100]]               # heights 11..100
    second = plan.next_blocks(cm, 100)                 # 101..600 stored: passed over
    assert second == [b.hash for b in branch[600:610]]             # the rest of 511..610
    assert plan.next_blocks(cm, 100) == [b.hash for b in branch[610:710]]


def test_a_longer_target_extends_the_plan_another_branch_restarts_it(
        cm: ChainManager, branch: list[Block]) -> None:
    """Headers stored later that extend the target add to the plan without handing out
    again what was handed out; a target on another branch starts the plan over from its
    own fork."""
    short = cm.get_index(branch[1199].hash)
    plan = HeaderDownload.start(cm, short)
    while not plan.done:
        plan.next_blocks(cm, 500)
    plan.retarget(cm, cm.get_index(branch[-1].hash))
    assert not plan.done and plan.next_height == 1201
    rest: list[bytes] = []
    while not plan.done:
        rest.extend(plan.next_blocks(cm, 500))
    assert rest == [b.hash for b in branch[1200:]]
    other = _blocks(branch[49].header, 50, len(branch), 9)       # forks at 50, more work
    cm.accept_headers([b.header for b in other[:MAX_BATCH_HEADERS]])
    cm.accept_headers([b.header for b in other[MAX_BATCH_HEADERS:]])
    plan.retarget(cm, cm.get_index(other[-1].hash))
    assert plan.next_height == 1                      # nothing of either branch is stored
    assert plan.next_blocks(cm, 60) == [b.hash for b in branch[:50]] + [b.hash for b in other[:10]]
