"""CPU fairness against hostile peers, on a real node's P2P port: attackers that keep sending
messages the node decodes and then drops (here max-size invs of 50,000 entries naming a
block it has: 1.8 MB each, 0.1 to 0.2 s of its CPU to decode and look up, nothing asked,
nothing stored) must not take the node's one event-loop thread from an honest peer.

Measured on the code before 12-07 (round robin, one message per peer per turn, but no limit
on what a peer's messages may cost): with 8 attackers the node spent a whole core on them,
an honest ping took 1.3 to 2 s and a block an honest node mined took seconds to reach a
third peer through it. Since 12-07 each peer's unrequested messages draw on a CPU budget
(components/node/p2p/cpu_budget.py); a peer that spends it is not read until it refills,
and a peer that spends it on messages the node asked for nothing by is charged ban score.

`python test_p2p_cpu_fairness.py [SECONDS]` prints the figures for 1, 4 and 8 attackers.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.node.p2p.cpu_budget import (
    BURST, MAX_TOTAL_RATE, MIN_RATE, NEWCOMER_POOL, NEWCOMER_RATE, SHARED_RATE,
)
from cleancoin.components.node.p2p.messages import (
    MAX_INV, MAX_LOCATOR, MSG_BLOCK, GetHeaders, Inv, InvItem, Ping, Pong, serialize_message,
)
from framework import TEST_ADDRESS, TestNode, connect_nodes, cpu_seconds, is_multiprocess, sync_blocks, wait_until
from raw_peer import MAGIC, RawPeer

#: The flood: a max-size inv of a block the node has (decoded, looked up 50,000 times, dropped).
FLOOD = serialize_message(MAGIC, Inv(tuple(InvItem(MSG_BLOCK, REGTEST.genesis_block.hash)
                                           for _ in range(MAX_INV))))

#: Requests no peer is charged ban score for: 200 getheaders, each a locator of MAX_LOCATOR
#: hashes the node does not know (decoded and looked up, answered with its first headers).
GETHEADERS_FLOOD = serialize_message(MAGIC, GetHeaders(tuple(bytes([i]) * 32 for i in range(MAX_LOCATOR)))) * 200
#: An inv of one block the node has (unasked, cheap).
ANNOUNCE = serialize_message(MAGIC, Inv((InvItem(MSG_BLOCK, REGTEST.genesis_block.hash),)))
#: Address groups (IPv4 addresses) of the many-groups attack: the inbound slots (115) less
#: the site's own three connections and a margin.
MANY_GROUPS = 100
#: Inbound slots (-maxconnections 125 less 10 outbound ones).
INBOUND_SLOTS = 115


def node_inbound_room(newcomers: int = 40) -> int:
    """The most peers the node may have for `newcomers` more inbound ones to fit."""
    return INBOUND_SLOTS - newcomers


@dataclass
class Figures:
    """What one attack round measured."""

    attackers: int
    seconds: float
    node_cpu: float                 # node CPU seconds per wall second during the attack
    pings: list[float]              # an honest peer's ping round trips (s)
    rpcs: list[float]               # getblockcount latencies (s)
    relay: float                    # an honest node's new block: mined -> announced to a third peer (s)
    floods_sent: int                # invs the attackers got into the node's socket buffers
    scores: list[int]               # the attackers' ban scores at the end

    def __str__(self) -> str:
        return (f"{self.attackers} attackers, {self.seconds:.1f} s: node CPU "
                f"{self.node_cpu:.2f} s/s ({self.node_cpu / max(self.attackers, 1):.2f} per attacker), "
                f"ping median {statistics.median(self.pings):.3f} max {max(self.pings):.3f} s, "
                f"RPC median {statistics.median(self.rpcs):.3f} max {max(self.rpcs):.3f} s, "
                f"block relay {self.relay:.3f} s, {self.floods_sent} floods sent, ban scores {self.scores}")


def group_rate(groups: int) -> float:
    """The most a connected group's bucket refills a second with at least `groups` groups
    connected (CpuBudgets.rate; it only falls as groups are added)."""
    return min(max(MIN_RATE, SHARED_RATE / groups), MAX_TOTAL_RATE / groups)


def opening_bound(elapsed: float, handled: list[float]) -> float:
    """The most newcomers' buckets may hold in all after their handshakes, the i-th (from 0)
    handled `handled[i]` seconds after the first connected: the newcomers' pool and its refill
    (what they open with), plus what each group's own rate refilled since it connected, up to
    a BURST each. While the i-th is read at least i + 2 groups are connected (the i + 1
    newcomers so far and 127.0.0.1's honest peer, watcher and miner): its rate is at most
    group_rate(i + 2). BURST: the margin the bound had before refills were counted."""
    refilled = sum(min(BURST, group_rate(i + 2) * t) for i, t in enumerate(handled))
    return NEWCOMER_POOL + NEWCOMER_RATE * elapsed + refilled + BURST


def ping(peer: RawPeer, nonce: int) -> float:
    """One ping's round trip on an established connection."""
    start = time.monotonic()
    peer.send(serialize_message(MAGIC, Ping(nonce)))
    while True:
        msg = peer.read_message()
        if isinstance(msg, Pong) and msg.nonce == nonce:
            return time.monotonic() - start


def relay_time(miner: TestNode, watcher: RawPeer) -> float:
    """`miner` (an honest node connected to the node under test) mines a block; seconds until
    `watcher` (a peer of the node under test only) is told of it by inv."""
    start = time.monotonic()
    block = bytes.fromhex(miner.rpc.generatetoaddress(1, TEST_ADDRESS)[0])[::-1]
    while True:
        msg = watcher.read_message()
        if isinstance(msg, Inv) and any(item.hash == block for item in msg.items):
            return time.monotonic() - start


@dataclass
class Site:
    node: TestNode          # under attack
    miner: TestNode         # an honest node connected to it
    honest: RawPeer         # an honest peer's connection to it (pings)
    watcher: RawPeer        # a third peer: is told of the miner's blocks through the node


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from make_site(tmp_path_factory.mktemp("p2p-cpu-fairness"))


def make_site(base: object) -> Iterator[Site]:
    nodes = [TestNode(0, base), TestNode(1, base)]      # type: ignore[arg-type]
    try:
        for n in nodes:
            n.start()
            if is_multiprocess():
                n.rpc.createwallet("w")
        node, miner = nodes
        connect_nodes(miner, node)
        miner.rpc.generatetoaddress(1, TEST_ADDRESS)
        sync_blocks(nodes)
        honest = RawPeer(node.p2p_port, "127.0.0.1", "/honest/")
        honest.handshake(1)
        watcher = RawPeer(node.p2p_port, "127.0.0.1", "/watcher/")
        watcher.handshake(1)
        yield Site(node, miner, honest, watcher)
        honest.close()
        watcher.close()
        for n in nodes:
            assert n.stop() == 0
    finally:
        for n in nodes:
            n.cleanup()


def attack(site: Site, attackers: int, seconds: float, source: int = 1, flood: bytes = FLOOD,
           command: str = "inv") -> Figures:
    """`attackers` connections from 127.61.`source`.x send `flood` (messages of `command`)
    over and over, and once the node has read some of each, for `seconds`, the honest peer
    pings, RPC is called and the miner's block is timed through to the watcher."""
    node = site.node
    assert node.process is not None
    stop = threading.Event()
    peers = [RawPeer(node.p2p_port, f"127.61.{source}.{i + 1}") for i in range(attackers)]
    for p in peers:
        p.handshake(1)
    threads = [threading.Thread(target=p.flood, args=(stop, flood), daemon=True) for p in peers]
    for t in threads:
        t.start()
    pings: list[float] = []
    rpcs: list[float] = []
    relay = 0.0
    try:
        # Measured once the node has read a flood of each attacker: every connection's first
        # message is handled whatever it costs (the budget pays for it afterwards).
        first = len(FLOOD) if command == "inv" else 1      # (one message of it)
        wait_until(lambda: sum(p["bytesrecv_per_msg"].get(command, 0) >= first
                               for p in node.rpc.getpeerinfo()) >= attackers, 120, what="a flood of each")
        cpu0, t0 = cpu_seconds(node.process.pid), time.monotonic()
        relay = relay_time(site.miner, site.watcher)
        while time.monotonic() - t0 < seconds or len(pings) < 3:
            pings.append(ping(site.honest, len(pings) + 1))
            r0 = time.monotonic()
            node.rpc.getblockcount()
            rpcs.append(time.monotonic() - r0)
        cpu = (cpu_seconds(node.process.pid) - cpu0) / (time.monotonic() - t0)
        prefix = f"127.61.{source}."
        scores = [p["banscore"] for p in node.rpc.getpeerinfo() if p["addr"].startswith(prefix)]
    finally:
        stop.set()
        for p in peers:
            p.close()
        for t in threads:
            t.join(10)
    return Figures(attackers, time.monotonic() - t0, cpu, pings, rpcs, relay, sum(p.sent for p in peers), scores)


def test_flooding_peers_do_not_starve_an_honest_peer(site: Site) -> None:
    """8 connections flood max-size invs. Once each has had its first one handled, for 3 s:
    an honest peer's ping comes back within 0.3 s (median; old code: 0.6 to 1.8 s at load
    averages of 4 to 10; new: 1 to 6 ms), a block the honest miner mines reaches the
    watcher through the node within 3 s (old: 2.4 to 6.7 s; new: 0.02 to 0.5 s, 1.5 s and
    2.4 s at loads of 17 and 20: a message being handled cannot be interrupted), the node
    spends at most its shared rate on them (CPU seconds: a loaded machine lowers them,
    never raises them), and the attackers are charged ban score for spending their budget
    on messages nobody asked for (old code: 0). (RPC latency is printed, not asserted: at a
    load average of 10 it varied from 0.01 to 1.2 s on either code.)"""
    fig = attack(site, 8, 3.0)
    print(fig)
    assert statistics.median(fig.pings) < 0.3, fig
    assert fig.relay < 3.0, fig
    assert fig.node_cpu < 0.75, fig
    assert len(fig.scores) == 8 and min(fig.scores) >= 10, fig


def test_new_address_groups_open_with_no_more_than_the_newcomers_pool(site: Site) -> None:
    """40 connections from addresses new to the node, one after another: together they open
    with at most the newcomers' pool (0.2 CPU-s) and its refill (0.05 a second), as
    `getpeerinfo`'s `cpu_budget` shows once each has shaken hands. Before 12-07 (later) each
    opened with a full burst (0.05 less its handshake, 40 of them about 2 CPU-s), so an
    attacker connecting from ever new addresses (one /48 holds 65,536 /64s) was paid a burst a
    connection: 16 such churners sending 68 KB invs took 0.4 to 0.97 node CPU-s/s and held an
    honest block's relay 0.27 to 0.9 s (median of rounds; 1.7 s at most); now 0.19 to 0.25
    CPU-s/s and 0.014 to 0.08 s (A/B rounds, 12-07, load averages 5 to 11).

    What a bucket shows after the handshake is its opening plus what its group's rate refilled
    until its last message was read (cpu_budget.py): the 40 connect first and shake hands one
    after another, so the last ones refill for most of `elapsed` (`opening_bound`; before
    12-08 the bound left that out and failed once at 0.305 against 0.292)."""
    node = site.node
    # Room among the inbound slots: earlier attackers' connections, closed while paused, go at
    # the next maintenance tick (hangup.py; before 12-08, only when read again).
    wait_until(lambda: len(node.rpc.getpeerinfo()) <= node_inbound_room(), 120, what="the attackers gone")
    start = time.monotonic()
    peers = [RawPeer(node.p2p_port, f"127.62.0.{i + 1}") for i in range(40)]
    #: Seconds from `start` until each peer's handshake was handled (its last read by then).
    handled: list[float] = []
    try:
        for i, p in enumerate(peers):
            p.handshake(1)
            p.sync(1000 + i)
            handled.append(time.monotonic() - start)
        opened = [float(p["cpu_budget"]) for p in node.rpc.getpeerinfo() if p["addr"].startswith("127.62.0.")]
        elapsed = time.monotonic() - start
        # Then each announces a block the node has, three times (unasked, but small): a
        # newcomer that opened empty spends its bucket with each, which is no misbehaviour
        # until a whole burst was spent so (else +10 for 36 of the 40: measured 12-07).
        for p in peers:
            p.send(ANNOUNCE * 3)
        for i, p in enumerate(peers):
            p.sync(i + 1)
        scores = [p["banscore"] for p in node.rpc.getpeerinfo() if p["addr"].startswith("127.62.0.")]
    finally:
        for p in peers:
            p.close()
    print(f"40 newcomers in {elapsed:.1f} s: cpu_budget in all {sum(max(0.0, b) for b in opened):.3f} "
          f"(bound {opening_bound(elapsed, handled):.3f}), {opened}")
    assert len(opened) == 40, opened
    assert sum(max(0.0, b) for b in opened) <= opening_bound(elapsed, handled), (elapsed, handled, opened)
    assert scores == [0] * 40, scores


def test_many_address_groups_sending_requests_take_no_more_than_the_total_rate(site: Site) -> None:
    """MANY_GROUPS IPv4 addresses, one connection each, flood getheaders (a request: no ban
    score however long it lasts) for 3 s: the node spends MAX_TOTAL_RATE (0.4) on them and
    what is not measured, under 0.7 CPU-s/s (CPU seconds: a loaded machine lowers them, never
    raises them), and charges them no ban score, their handshakes included (a newcomer may
    open with an empty bucket). Before 12-07 (later) every group got at least MIN_RATE (0.01),
    100 of them 1.0 CPU-s/s: the node spent 0.88 to 0.92 CPU-s/s (most of its core) and an
    honest block's relay took 0.11 to 0.15 s (median); now 0.5 to 0.56 and 0.014 to 0.017 s
    (figures: `python test_p2p_cpu_fairness.py 5 groups`)."""
    fig = attack(site, MANY_GROUPS, 3.0, source=9, flood=GETHEADERS_FLOOD, command="getheaders")
    print(fig)
    assert fig.node_cpu < 0.7, fig
    assert max(fig.scores) == 0, fig                 # (requests: the budget holds them, no ban)

if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    span = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    # `ping`: 10,000 pings a burst (small messages: the per-message cost) instead of invs.
    kind = sys.argv[2] if len(sys.argv) > 2 else "inv"
    # `groups`: getheaders from MANY_GROUPS addresses (and 1 and 8 of them).
    burst = {"ping": serialize_message(MAGIC, Ping(1)) * 10_000, "groups": GETHEADERS_FLOOD}.get(kind, FLOOD)
    command = "getheaders" if kind == "groups" else kind
    with tempfile.TemporaryDirectory() as tmp:
        it = make_site(Path(tmp))
        s = next(it)
        for round_, n in enumerate((1, 8, MANY_GROUPS) if kind == "groups" else (1, 4, 8)):
            print(kind, attack(s, n, span, source=round_ + 1, flood=burst, command=command), flush=True)
        next(it, None)
