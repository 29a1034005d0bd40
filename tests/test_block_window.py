"""p2p/block_window against a real ChainManager (real SQLite, solved regtest blocks): which
blocks of a stored header chain a peer is asked for (16 at most, inside the 1024-height
window, none in flight elsewhere), who stalls the window, and the stalling timeout's doubling
and decay. The download between nodes: tests/test_p2p_headers_first.py; the attacks from
remote peers, both executables: tests/functional/test_p2p_min_chain_work_stall.py."""

from __future__ import annotations

from cleancoin.components.common.primitives import Block
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.p2p.block_window import (
    BLOCK_DOWNLOAD_WINDOW, BLOCK_STALLING_TIMEOUT_DEFAULT, BLOCK_STALLING_TIMEOUT_MAX,
    MAX_BLOCKS_IN_TRANSIT_PER_PEER, Stall, StallTimeout, download_timeout, next_blocks, serve_height,
)
from cleancoin.components.node.p2p.header_download import HeaderDownload

# The chain at genesis holding a 2150-header branch, from the header download's tests.
from test_header_download import branch, cm  # noqa: F401 - fixtures

N = MAX_BLOCKS_IN_TRANSIT_PER_PEER


def _ask(cm: ChainManager, plan: HeaderDownload, peer_id: int, requested: dict[bytes, int],
         refused: dict[bytes, int] | None = None, serve: int = 10**9) -> tuple[list[bytes], Stall | None]:
    got, stall = next_blocks(cm, plan, peer_id=peer_id, serve_height=serve, count=N, requested=requested,
                             refused=refused or {})
    requested.update((h, peer_id) for h in got)
    return got, stall


def test_each_block_from_one_peer_16_at_a_time_inside_the_window(cm: ChainManager, branch: list[Block]) -> None:
    """Two peers get the branch's blocks in height order, 16 each, never the same block;
    a peer that serves only up to a height gets nothing above it; stored blocks move the
    window's bottom."""
    plan = HeaderDownload.start(cm, cm.get_index(branch[-1].hash))
    requested: dict[bytes, int] = {}
    a, stall_a = _ask(cm, plan, 1, requested)
    b, stall_b = _ask(cm, plan, 2, requested)
    assert a == [x.hash for x in branch[:N]] and b == [x.hash for x in branch[N:2 * N]]
    assert stall_a is stall_b is None
    short, _ = _ask(cm, plan, 3, requested, serve=2 * N + 3)
    assert short == [x.hash for x in branch[2 * N:2 * N + 3]]
    for block in branch[:5]:
        cm.accept_block(block)
        del requested[block.hash]
    more, _ = _ask(cm, plan, 1, requested)
    assert plan.low == 6 and more == [x.hash for x in branch[2 * N + 3:3 * N + 3]]


def test_the_holder_of_the_first_block_stalls_the_window_and_refusals_count(
        cm: ChainManager, branch: list[Block]) -> None:
    """Peer 1 holds heights 1-16, peer 2 fetches the rest of the window (stored): then peer 2
    finds nothing inside the window but would above it, and peer 1, holding the first
    block waited for, is the staller; peer 1 itself is never its own staller. A block a
    peer answered notfound for twice is not asked of it again."""
    plan = HeaderDownload.start(cm, cm.get_index(branch[-1].hash))
    requested: dict[bytes, int] = {}
    _ask(cm, plan, 1, requested)
    for block in branch[N:BLOCK_DOWNLOAD_WINDOW]:
        cm.accept_block(block)                        # stored above the gap, not connected
    got, stall = _ask(cm, plan, 2, requested)
    assert got == [] and stall == Stall(1, branch[0].hash, 1)
    assert _ask(cm, plan, 1, requested) == ([], None)
    got, _ = _ask(cm, plan, 3, {}, {branch[0].hash: 2, branch[1].hash: 1})
    assert got == [x.hash for x in branch[1:N]]


def test_a_peer_that_refused_blocks_of_the_window_finds_no_staller(cm: ChainManager, branch: list[Block]) -> None:
    """Peer 1 holds heights 1-16; peer 2 refused (notfound, twice) every other block of the
    window, which is neither stored nor in flight: the window is not full, so peer 2 finds
    nothing to fetch and no staller (peer 1 could fetch those blocks). Once one of them is
    in flight (or stored) instead, the window is full and peer 1 stalls it."""
    plan = HeaderDownload.start(cm, cm.get_index(branch[-1].hash))
    requested: dict[bytes, int] = {}
    _ask(cm, plan, 1, requested)
    refused = {x.hash: 2 for x in branch[N:BLOCK_DOWNLOAD_WINDOW]}
    assert _ask(cm, plan, 2, requested, refused) == ([], None)
    for block in branch[N + 1:BLOCK_DOWNLOAD_WINDOW]:
        cm.accept_block(block)
    refused = {branch[N].hash: 2}
    assert _ask(cm, plan, 2, requested, refused) == ([], None)        # (height 17: refused, not in flight)
    requested[branch[N].hash] = 3
    got, stall = _ask(cm, plan, 2, requested, refused)
    assert got == [] and stall == Stall(1, branch[0].hash, 1)


def test_a_peer_off_the_branch_serves_nothing(cm: ChainManager, branch: list[Block]) -> None:
    """serve_height: a peer's best header on the branch lets it serve up to it; one that
    extends the target, up to the target; none, or one elsewhere, nothing."""
    plan = HeaderDownload.start(cm, cm.get_index(branch[1999].hash))
    mid, top = cm.get_index(branch[499].hash), cm.get_index(branch[-1].hash)
    assert serve_height(cm, plan, mid, cm.ancestor) == 500
    assert serve_height(cm, plan, top, cm.ancestor) == 2000
    assert serve_height(cm, plan, None, cm.ancestor) == -1
    assert serve_height(cm, plan, cm.get_index(cm.tip.hash), cm.ancestor) == -1      # (genesis)


def test_the_stalling_timeout_doubles_to_64_s_and_decays_with_blocks() -> None:
    t = StallTimeout()
    assert t.seconds == BLOCK_STALLING_TIMEOUT_DEFAULT == 2.0
    for _ in range(10):
        t.after_stall()
    assert t.seconds == BLOCK_STALLING_TIMEOUT_MAX == 64.0
    t.after_blocks(1)
    assert t.seconds == 64.0 * 0.85
    t.after_blocks(1000)
    assert t.seconds == BLOCK_STALLING_TIMEOUT_DEFAULT
    assert download_timeout(120.0, 0) == 120.0 and download_timeout(120.0, 2) == 240.0
