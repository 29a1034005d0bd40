"""What a peer's messages may cost the node's one event-loop thread: a CPU budget per address group.

Decoding alone costs about 15 MB of P2P input per CPU-second here (a max-size inv of blocks
we have, 1.8 MB, 0.2 to 0.4 s with its lookups), and the message loop cannot interrupt a
message once it is being handled. Round robin (one message per peer per turn, peer.py) shares
the turns, not the CPU: before 12-07 eight connections sending such invs took a whole core,
and an honest peer's block, ping or RPC waited behind one message of each of them.

So every message a peer sends is charged the thread CPU time its decoding and handling took
(time.thread_time: the other processes on the machine do not count) to a token bucket of its
address group, refilled with loop (wall) time. What the node asked for and got is not charged: a
block or transaction it requested, the headers or the getblocks inv it asked for, and any
message that gave it a block or transaction new to it; so an initial block download and
relay of new blocks never wait on the budget. While the bucket is below zero the node does
not read from that group's connections (their bytes wait in the kernel's buffers and TCP
stops the sender), so a flood costs at most `rate` of a core per group after one burst.

The rate is a share: SHARED_RATE split over the groups connected, at least MIN_RATE each,
but never more than MAX_TOTAL_RATE in all: the floor alone let 100 IPv4 addresses sending
getheaders (requests: no ban score) take 0.88 to 0.92 node CPU-s/s (12-07; now 0.43 to
0.56, the rest of it what is not measured). The bucket belongs to the address's group (`budget_group`: an IPv4 address, an IPv6 /64), not the connection, so
reconnecting does not refill it, nor does connecting from another address of the same /64
(since 12-07: before, every IPv6 address was a bucket and a share of its own, and any IPv6
host holds a /64); a bucket is forgotten once it is full again and no connection of its group
is left. A new group's bucket opens with what a pool all inbound newcomers share can give
(NEWCOMER_POOL, refilled with NEWCOMER_RATE; since 12-07, later: before, every new group opened
with a full BURST, so an attacker connecting from ever new addresses, one /48 holds 65,536
/64s, was paid a burst a connection: 16 such churners took 0.4 to 0.97 node CPU-s/s and
held an honest block's relay 0.27 to 0.9 s, 1.7 s at most; now 0.19 to 0.25 and 0.014 to
0.08 s). Connections the node dialled itself draw nothing from it. A newcomer that opened
empty waits for its rate before its version is read; its handshake is never misbehaviour.

Spending the bucket mostly on messages nobody asked for and nobody sends unasked in good faith
(inv, headers, notfound, pong, unknown commands ...: not EXCUSED_COMMANDS, the getheaders/getblocks/
getdata/mempool/ping of a peer that syncs from us and pushed transactions and blocks) is charged as
misbehaviour, EXHAUSTED_SCORE each time (at most once a BURST charged: since 12-07, later,
so that a bucket opened empty is not a ban score a message): a peer that keeps doing it is
banned after BAN_THRESHOLD / EXHAUSTED_SCORE exhaustions.

Serving what a peer asked for (getdata: blocks, transactions) is charged to its group too, as a
request (since 12-08; peer.py, `_serve_getdata`): before, 4 connections asking for one 672 KB
block over and over took 0.38 to 0.72 node CPU-s/s whatever the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cleancoin.components.common.ratelimit import source_key

#: CPU seconds per second shared by all address groups with a connection.
SHARED_RATE: float = 0.25
#: The least CPU seconds per second a group gets, however many are connected.
MIN_RATE: float = 0.01
#: The most CPU seconds per second all groups' rates add up to: past MAX_TOTAL_RATE / MIN_RATE
#: groups (40) each gets less than MIN_RATE.
MAX_TOTAL_RATE: float = 0.4
#: CPU seconds a group may spend at once before its rate applies (the bucket's size).
BURST: float = 0.05
#: The pool inbound groups new to the node draw their opening tokens from: its size (four
#: full bursts, so honest peers connecting now and then each open with a full one) and what
#: refills it a second (one burst).
NEWCOMER_POOL: float = 4 * BURST
NEWCOMER_RATE: float = BURST
#: Bytes of P2P input decoded per CPU second, about (measured 12-07, any message type): a
#: message's cost is estimated from its size before it is read.
BYTES_PER_CPU_SECOND: int = 15_000_000
#: Bytes the node sends per CPU second outside what is measured, about: the kernel's copy and
#: the event loop's turns writing an answer to `getdata` (a 672 KB block: ~1.2 ms of node CPU
#: served, ~0.6 ms of it measured: 12-08); charged by size to the asker's budget.
SEND_BYTES_PER_CPU_SECOND: int = 1_000_000_000
#: CPU seconds each message costs outside what is measured (the stream's reads, the task's
#: turn, writing an answer, the pause itself): a ping flood cost 47 us of node CPU a ping
#: unpaused (38,235 in 3 s, 12-07) and 85 us paused after each, of which about 10 us is
#: measured; without this charge a flood of small messages ran at 0.5 CPU-s/s under a
#: 0.125 budget.
MESSAGE_OVERHEAD: float = 75e-6
#: Messages estimated at this many CPU seconds or more (75 KB) also wait for the bucket all
#: addresses share (CpuBudgets), which refills with LARGE_RATE CPU seconds per second: one
#: message cannot be interrupted, and on a loaded machine its 0.2 CPU seconds take a second
#: of the loop's wall time (at 0.25 CPU-s/s such messages kept the loop busy most of the time
#: at a load average of 17).
LARGE_MESSAGE: float = 0.005
LARGE_RATE: float = 0.1
#: Ban score for spending the bucket mostly on unrequested messages.
EXHAUSTED_SCORE: int = 10
#: Messages charged and paused like the rest, but spending the budget on which is no
#: misbehaviour: a peer's requests to us (one syncing from us sends many), and a loose `tx`
#: or `block` (the protocol lets them come without an `inv`: wallets and miners push them;
#: one that is new to us is free anyway).
EXCUSED_COMMANDS: frozenset[str] = frozenset({"getheaders", "getblocks", "getdata", "mempool", "ping", "tx", "block"})


def budget_group(host: str) -> str:
    """The key of the CPU budget `host`'s connections share: an IPv4 address itself (also
    written IPv4-mapped, ::ffff:a.b.c.d), an IPv6 address's /64; anything else as it is
    (ratelimit.source_key, the RPC's failure limiter's key). A /64 is what one host, one
    subscriber line or one VPS usually gets (RFC 6177's guidance; SLAAC needs a /64), so it is
    what one attacker surely holds. bitcoind's netgroups (/16 IPv4, /32 IPv6) serve another
    end, outbound diversity and eviction (eviction.py): a budget that wide would make strangers
    in one ISP share theirs."""
    return source_key(host)


def estimated_cost(size: int) -> float:
    """CPU seconds a message of `size` payload bytes will cost, about."""
    return MESSAGE_OVERHEAD + size / BYTES_PER_CPU_SECOND


@dataclass
class CpuBudget:
    """One address group's token bucket of CPU seconds (may go below zero: a message is charged
    after it was handled, whatever it cost)."""

    tokens: float
    updated: float                                  # loop time of the last refill
    #: CPU charged since the last exhaustion: in all, and on unrequested non-service messages.
    charged: float = 0.0
    unsolicited: float = 0.0
    #: Connections of this group now.
    connections: int = 0

    def refill(self, now: float, rate: float, cap: float = BURST) -> None:
        """Add what `rate` gave since the last refill, up to `cap`."""
        if now > self.updated:
            self.tokens = min(cap, self.tokens + (now - self.updated) * rate)
        self.updated = now

    def charge(self, cost: float, *, unsolicited: bool) -> bool:
        """Take `cost` CPU seconds (`unsolicited`: for a message nobody asked for that is no
        request of ours to serve either); True when this spends the bucket (from zero or more to
        below zero)."""
        was_positive = self.tokens >= 0
        self.tokens -= cost
        self.charged += cost
        if unsolicited:
            self.unsolicited += cost
        return was_positive and self.tokens < 0

    def take_exhaustion(self) -> bool:
        """At an exhaustion: whether at least half of what was charged since the last verdict
        was unsolicited, once that is BURST or more (then the next count starts; before, no
        verdict: False). Why not at every exhaustion: a bucket near zero is spent by each
        message (its cost is known only after it was estimated), so a newcomer that opened
        empty (NEWCOMER_POOL) would be charged ban score for each sendheaders or inv it sends
        after its handshake; now only for a whole bucket's worth spent mostly on such."""
        if self.charged < BURST:
            return False
        mostly = self.unsolicited * 2 >= self.charged
        self.charged = self.unsolicited = 0.0
        return mostly

    def wait(self, rate: float, need: float = 0.0) -> float:
        """Seconds until the bucket holds `need` (at most BURST) at `rate` (0.0: it does)."""
        short = min(need, BURST) - self.tokens
        return short / rate if short > 0 else 0.0


@dataclass(frozen=True)
class Reservation:
    """What a message about to be read was estimated to cost, taken from its address's
    bucket (and from the shared one when `shared`) until its real cost is known."""

    need: float = 0.0
    shared: bool = False


NOTHING_RESERVED = Reservation()


@dataclass
class CpuBudgets:
    """The buckets of the address groups connected (or still in debt), keyed by `budget_group`,
    and the bucket all large unrequested messages share.

    Why a shared one for large messages: addresses paused together refill together, and
    then each one's next max-size message ran back to back (eight of them: an RPC waited
    2.7 s behind them, at 0.2 node CPU s/s). A message estimated at LARGE_MESSAGE or more
    waits for the shared bucket too, so such messages come at most LARGE_RATE a second
    between them, spread out; small messages (pings, a few invs, getheaders) never wait for
    it, so attackers spending it delay no honest peer's ordinary traffic."""

    shared_rate: float = SHARED_RATE
    min_rate: float = MIN_RATE
    large_rate: float = LARGE_RATE
    max_total_rate: float = MAX_TOTAL_RATE
    newcomer_rate: float = NEWCOMER_RATE
    _by_group: dict[str, CpuBudget] = field(default_factory=dict)
    _shared: CpuBudget | None = None
    _newcomers: CpuBudget | None = None

    def attach(self, address: str, now: float, *, inbound: bool = True) -> CpuBudget:
        """The bucket of `address`'s group for a new connection. A group without one gets a
        new one: full for a connection the node dialled (not `inbound`), else with what the
        newcomers' pool can give, up to BURST (nothing while it is empty: the group's rate
        then pays for its first message, version included)."""
        group = budget_group(address)
        budget = self._by_group.get(group)
        if budget is None:
            opening = BURST
            if inbound:
                pool = self._newcomer_pool(now)
                opening = min(BURST, max(0.0, pool.tokens))
                pool.tokens -= opening
            budget = self._by_group[group] = CpuBudget(opening, now)
        budget.connections += 1
        return budget

    def _newcomer_pool(self, now: float) -> CpuBudget:
        if self._newcomers is None:
            self._newcomers = CpuBudget(NEWCOMER_POOL, now)
        self._newcomers.refill(now, self.newcomer_rate, NEWCOMER_POOL)
        return self._newcomers

    def detach(self, address: str) -> None:
        """A connection of `address` is gone."""
        budget = self._by_group.get(budget_group(address))
        if budget is not None:
            budget.connections = max(0, budget.connections - 1)

    def rate(self) -> float:
        """CPU seconds per second each connected group's bucket refills with now."""
        connected = max(1, sum(1 for b in self._by_group.values() if b.connections))
        return min(max(self.min_rate, self.shared_rate / connected), self.max_total_rate / connected)

    def _shared_bucket(self, now: float) -> CpuBudget:
        if self._shared is None:
            self._shared = CpuBudget(BURST, now)
        self._shared.refill(now, self.large_rate)
        return self._shared

    def delay(self, budget: CpuBudget, need: float, now: float) -> float:
        """Seconds until a message estimated at `need` CPU seconds may be read from an address
        with `budget` (0.0: now; then `reserve` it at once)."""
        rate = self.rate()
        budget.refill(now, rate)
        wait = budget.wait(rate, need)
        if need >= LARGE_MESSAGE:
            wait = max(wait, self._shared_bucket(now).wait(self.large_rate, need))
        return wait

    def reserve(self, budget: CpuBudget, need: float, now: float) -> Reservation:
        """Take `need` (at most BURST) from `budget`, and from the shared bucket for a large
        message, until `settle`: connections read in between see it spent."""
        need = min(need, BURST)
        budget.tokens -= need
        large = need >= LARGE_MESSAGE
        if large:
            self._shared_bucket(now).tokens -= need
        return Reservation(need, large)

    def settle(self, budget: CpuBudget, reservation: Reservation, cost: float | None, *,
               unsolicited: bool) -> bool:
        """The message is handled: give its reservation back and charge `cost` (None: free,
        it was asked for or brought something new). True when this spent `budget`."""
        budget.tokens += reservation.need
        if reservation.shared and self._shared is not None:
            self._shared.tokens += reservation.need - (cost or 0.0)
        return cost is not None and budget.charge(cost, unsolicited=unsolicited)

    def prune(self, now: float) -> None:
        """Forget the buckets of groups with no connection that are full again."""
        rate = self.rate()
        for group, budget in list(self._by_group.items()):
            if not budget.connections:
                budget.refill(now, rate)
                if budget.tokens >= BURST:
                    del self._by_group[group]

    def __len__(self) -> int:
        return len(self._by_group)
