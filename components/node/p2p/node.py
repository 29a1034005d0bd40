"""The P2P node: listening, outbound connections, the handshake, relay, block download, bans.

Everything runs on one asyncio event loop (no threads), so chain and mempool are only ever
called from one place at a time.

Connections
    `listen` (default: on, but off when `connect` is given, as bitcoind's -connect implies
    -listen=0 unless -listen is set) binds `bind:port`. `connect` and `addnode` addresses
    are kept connected: each has a task that dials, waits for the connection to end, and
    dials again after `reconnect_interval`. There is no address relay and no automatic peer
    selection, so -connect and -addnode differ only in the listening default.

Slots (bitcoind's division of -maxconnections)
    `max_connections` is shared as bitcoind shares it: up to 8 full-relay and 2
    block-relay-only outbound slots (`max_outbound`, 10) are kept apart, and inbound peers get
    the rest (`max_inbound`, 115 of 125). Outbound connections here are all manual (-connect,
    -addnode, addnode onetry; there is no automatic outbound) and use the outbound slots;
    inbound peers can never take them. An inbound connection that finds the inbound slots
    full evicts the inbound peer the node can best spare (eviction.py: bitcoind's
    SelectNodeToEvict, which protects useful and hard-to-imitate peers and drops the youngest
    of the most crowded network group), or is closed at once when every one is protected.
    A connection the node is not reading (paused by its CPU budget, or owed data) whose far
    end closed is dropped when a newcomer finds the slots full and every maintenance tick
    (hangup.py; since 12-08: before, it held its slot until its pause ended). Connections
    are accepted at a bounded CPU cost (accept_gate.py; since 12-08).

Handshake
    The dialling side sends `version`; the listening side answers `version` + `verack`; the
    dialler answers `verack`. A `version` whose nonce is one of our own outbound nonces means
    we dialled ourselves: the connection is dropped. Until the handshake completes only
    version/verack are processed. A handshake not done within `handshake_timeout` ends the
    connection. A ping goes out right after the handshake and every `ping_interval`; no pong
    within `ping_timeout` ends the connection.

Block download (blocks-first, simpler than headers-first; headers-first below the minimum chain work)
    One peer at a time is the *sync peer*: the first peer whose start height (or an announced
    block we do not know) shows it is ahead, outbound peers first (bitcoind's preferred
    download peers); an inbound sync peer hands over to an outbound peer that is ahead, since
    an inbound connection is anyone's and its claimed height costs nothing. We send it
    `getblocks` with our locator; it answers an `inv` of up to 500 hashes (always answered,
    possibly empty); we `getdata` the unknown ones; when the last requested block has arrived
    we send the next `getblocks` from the batch's last hash. An empty answer ends the sync
    with that peer, and the next peer that is still ahead (if any) takes over. A block whose
    parent we do not have ("prev-blk-not-found": a new tip announced after a gap) makes its
    sender the sync peer, which is how catching up resumes after an outage. While a sync runs,
    inv batches from other peers are not fetched (they would be orphans), but a single-block
    inv (a new block relayed) is, and a tip it makes is announced: a silent sync peer (one
    claiming a long chain and answering nothing) cannot hold up block relay until its timeout.
    A sync peer that delivers nothing for `block_download_timeout` is disconnected, and so
    is one whose oldest requested block has been awaited for the stalling timeout while
    another peer is ahead and idle, once that other peer, asked for the block too, has
    delivered it first (_check_sync_peer_stall; since 12-07); a getblocks it leaves
    unanswered that long is sent to such a peer too, and the first answer has the session.
    Which idle peer is raced, and which peer gets a new session, goes first by the sessions
    its address wasted (failed_sessions.py; since 12-07): the height a peer claims costs
    nothing, and connections of one attacker claiming more than an honest peer took the
    session from each other through these races for as long as they went on.
    Progress
    (height, total from the peers' heights, blocks/s) is logged on "cleancoin.net" at INFO.

    A block of a branch that lags too far behind our tip is not stored
    (chain.MAX_SIDE_BRANCH_LAG: otherwise any peer could fill the disk with a branch forked
    deep in the past). Its sender is then asked for that branch's headers (`getheaders` from
    the block's parent): once they lead to more work than our tip, the branch's blocks are
    downloaded from it and stored however far they lag, so that the real chain still
    overtakes a cheap one that reached a syncing node first. Headers cost their sender proof
    of work each; only answers to our own getheaders are read, and a branch's headers are
    stored only once they lead to more work than our tip: until then they are counted per
    peer and not kept, then asked for again and stored as counted (presync.py, bitcoind's
    headers pre-sync). The download follows them:
    an orphan from a peer other than the sync peer makes us ask that peer for headers, and
    headers of more work on a branch our tip is not on move the download to their sender
    (a sync peer that fed a cheap chain one block now and then never let its session end);
    blocks of the branch refused before its headers came are asked again from the fork.

    Below the minimum chain work (our tip has less than -minimumchainwork; never on regtest's
    default, 0) a session is headers-first, as bitcoind's download always is: the sync peer
    is asked for headers, which presync counts with the minimum as the bar (nothing stored
    until a chain shows that work); the stored header chain of at least that work becomes
    the peer's target (Peer.best_header) and its blocks are asked for by hash, in height
    order, from every peer whose headers lead along it (outbound ones only while they serve
    it without delay: bitcoind's preferred download peers), 16 in flight a peer inside a window
    of 1024 heights, and a peer that stalls the window is disconnected (block_window.py,
    header_download.py; since 12-07, before which the sync peer alone was asked, 500 a
    getdata, and one block every 119 s from it held the download for days); when they are
    in and our tip has the minimum work the session goes on blocks-first. Headers that end below the
    minimum end the session (nothing downloaded); headers of that work from another peer move
    the download to it when the sync peer's do not show it. A sync peer whose headers show no
    chain of the minimum work by HEADERS_SYNC_TIMEOUT (plus 1 ms per header the tip's age
    implies) is disconnected when another peer is ahead (bitcoind's headers sync timeout): one
    answering every getheaders with more cheap headers never stalls. Meanwhile an inv of a block we
    do not know is answered with getheaders, and a block nobody asked for is dropped when its
    chain would be below the minimum or it lies more than MAX_UNREQUESTED_AHEAD heights above
    our tip (bitcoind's AcceptBlock): before 12-07 a node below the
    minimum stored, validated and connected whatever chain the first peer offered or pushed.
    The log says "Pre-synchronizing blockheaders" while headers are counted, getpeerinfo's
    presynced_headers the height counted per peer.

Relay
    A block that becomes our tip is announced by `inv` to every peer not known to have it,
    once a batch is complete (so a 500-block download ends in one inv, not 500). A
    transaction the mempool accepts is announced to every peer that asked for relay, at once
    (Bitcoin delays announcements randomly for privacy; not done here); to a peer whose send
    queue is full, once it is under the limit again (since 12-07; before, never). The owner calls
    `announce_block` / `announce_tx` for what it mined or was sent by RPC; as a safety net,
    a tip that moved without an announcement (and outside a download) is announced by the
    maintenance tick within a second. A transaction whose inputs are unknown (an orphan) is
    kept apart, at most 100 (orphans.py), and tried again when a parent enters the pool
    (before 12-07 it was refused until the tip moved: a peer sending a child first kept the
    honest relay of it out of our pool); a connected block drops the orphans it confirms or
    conflicts with (block_connected, bitcoind's EraseForBlock, since 12-07).

    Transaction requests follow bitcoind's TxRequestTracker limits: a peer's announcements
    wait in a queue of at most MAX_PEER_TX_ANNOUNCEMENTS (5000; more are dropped), and at most
    MAX_PEER_TX_REQUEST_IN_FLIGHT (100) are requested from it at a time; a slot frees when the
    transaction arrives, the peer answers notfound, the request times out (60 s) or the peer
    leaves. Every other peer that announced a transaction while it was requested is
    remembered, and when the request fails (notfound, timeout, the peer left) the next is
    asked: a peer that announces a transaction first and withholds it delays it by the
    timeout at most, instead of keeping it from us. (Before, one global table capped at
    100000 was shared by all peers: a single peer announcing 100000 made-up txids stopped
    every other peer's transactions from being requested for a minute at a time.)

Misbehaviour
    Each peer has a ban score; at 100 its IP address is banned for `ban_time` seconds and
    every connection from it is dropped; banned addresses are refused on accept and are
    not dialled. Scores: any malformed frame or payload (bad magic, bad checksum, oversized,
    unparsable) 100; an invalid block 100 (also a *mutated* one: the hash is not marked
    invalid, but the sender sent garbage); a consensus-invalid transaction 10; a message
    before the handshake or a repeated version/verack 1 (a message before the handshake is
    not even decoded). Policy rejections (fee too low, already spent, missing inputs) cost
    nothing: a peer cannot know our policy or our pool. At most `max_misbehaviour_bans`
    (50000, the size of bitcoind's discouragement filter) automatic bans are kept; past it the
    oldest is forgotten. Manual bans (setban) are not counted and never dropped.

Logging
    Lines on "cleancoin.net" at INFO and above are capped per call site, 1 MiB an hour
    (log_limit.py, bitcoind's LogRateLimiter): remote peers decide how often they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...common.diskfail import WriteFailure
from ...common.errors import Failure, ValidationError
from ...common.hashes import hash_to_hex
from ...common.pow import block_proof, check_proof_of_work
from ...common.primitives import Block, BlockHeader, Transaction
from .messages import (
    MAX_INV, MAX_USER_AGENT, MIN_PEER_PROTO_VERSION, MSG_BLOCK, MSG_TX, NODE_NETWORK, PROTOCOL_VERSION,
    MAX_HEADERS, BlockMessage, GetBlocks, GetData, GetHeaders, Headers, Inv, InvItem, Message, NotFound,
    Ping, Pong, ProtocolError, RawBlockMessage, TxMessage, Verack, Version,
)
from .cpu_budget import EXHAUSTED_SCORE, LARGE_RATE, MAX_TOTAL_RATE, NEWCOMER_RATE, SHARED_RATE, CpuBudgets
from .eviction import Candidate, netgroup, select_peer_to_evict
from .log_limit import install as install_log_limit
from .header_download import HeaderDownload
from .block_window import (
    BLOCK_STALLING_TIMEOUT_DEFAULT, MAX_BLOCKS_IN_TRANSIT_PER_PEER, MAX_REFUSALS, StallTimeout, download_timeout,
    next_blocks, serve_height,
)
from .failed_sessions import FailedSessions
from .presync import HeaderSync, PresyncAbort, work_threshold
from .orphans import OrphanPool
from .peer import (
    MAX_PEER_TX_ANNOUNCEMENTS, MAX_PENDING_TX_ANNOUNCEMENTS, SEND_BUFFER_LIMIT, Peer, format_addr, normalize_ip,
)
from .protocols import ChainAccess, MempoolAccess
from .connector import UNRESTRICTED, ConnectRefused, Connector
from .listen_sockets import bind_listeners
from .hangup import hung_up
from .accept_gate import CONNECTION_COST, AcceptGate
from .upload_target import HISTORICAL_BLOCK_AGE, UploadTarget

log = logging.getLogger("cleancoin.net")

USER_AGENT: str = "/CleanCoin:0.1.0/"
#: Hashes per getblocks answer (Bitcoin's 500).
GETBLOCKS_LIMIT: int = 500
#: Ban score at which a peer is banned.
BAN_THRESHOLD: int = 100
#: Seconds after which an unanswered getheaders no longer stops us asking that peer again.
HEADERS_TIMEOUT: float = 60.0
#: Transactions we refused recently: not requested again, nor validated again when sent
#: unsolicited, until the tip moves.
_RECENT_REJECTS_SIZE: int = 20_000
#: A transaction requested from one peer is not requested elsewhere for this long
#: (bitcoind's GETDATA_TX_INTERVAL); then the next peer that announced it is asked.
TX_REQUEST_TIMEOUT: float = 60.0
#: Bytes of transactions one serve_getdata call may queue (blocks go one per call).
_GETDATA_TX_BUDGET: int = 200_000
#: getdata entries one serve_getdata call looks at, at most (the writer then sends what they
#: produced and yields): before 12-07 a max-size getdata (50000 entries) of blocks we do not
#: have was looked up in one call, one database query each: 298 to 454 ms of the event loop,
#: RPC answers up to 1.17 s late, for 1.8 MB of request (now 128 to 156 ms, 0.21 s).
_GETDATA_ITEMS_PER_CALL: int = 1000
#: Most blocks requested from one peer at a time (two getblocks answers' worth).
MAX_BLOCKS_IN_FLIGHT: int = 1000
#: Most transaction requests outstanding to one peer (bitcoind's MAX_PEER_TX_REQUEST_IN_FLIGHT):
#: one peer's flood of made-up txids must not use up what the others need.
MAX_PEER_TX_REQUEST_IN_FLIGHT: int = 100
#: Most transaction requests outstanding overall (a safety net: the per-peer limit times
#: -maxconnections stays below it).
_MAX_TX_REQUESTS: int = 100_000
#: Automatic (misbehaviour) bans kept at most, by default (bitcoind's discouragement filter
#: holds 50000 addresses); past it the oldest is forgotten. Manual bans do not count.
MAX_MISBEHAVIOUR_BANS: int = 50_000
#: Seconds between IBD progress lines.
_PROGRESS_INTERVAL: float = 5.0
#: A headers-first sync peer must show a header chain of the minimum chain work within this
#: many seconds, plus HEADERS_SYNC_TIMEOUT_PER_HEADER for each header our tip's age implies
#: (bitcoind's HEADERS_DOWNLOAD_TIMEOUT_BASE and _PER_HEADER), or it is disconnected when
#: another peer is ahead.
HEADERS_SYNC_TIMEOUT: float = 15 * 60.0
HEADERS_SYNC_TIMEOUT_PER_HEADER: float = 0.001
#: Below the minimum chain work, a block nobody asked for more than this many heights above
#: our tip is not stored (bitcoind's MIN_BLOCKS_TO_KEEP, its AcceptBlock's fTooFarAhead).
MAX_UNREQUESTED_AHEAD: int = 288
#: Blocks a peer answered notfound for that are remembered (each is asked of it twice at
#: most while the download goes on).
_MAX_BLOCKS_REFUSED: int = 4096
#: bitcoind's outbound slots, kept apart from inbound ones within -maxconnections.
MAX_OUTBOUND_FULL_RELAY: int = 8
MAX_BLOCK_RELAY_ONLY: int = 2


class P2PError(Exception):
    """A refused request from the RPC side (addnode, disconnectnode, setban); `code` is
    bitcoind's RPC error code for it."""

    MISC = -1
    INVALID_PARAMETER = -8
    NODE_ALREADY_ADDED = -23
    NODE_NOT_ADDED = -24
    NODE_NOT_CONNECTED = -29
    CLIENT_INVALID_IP_OR_SUBNET = -30

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass
class BanEntry:
    """A banned IP address."""

    address: str
    created: int
    until: int
    reason: str
    #: Made by misbehaviour (subject to the max_misbehaviour_bans cap), not by setban.
    automatic: bool = False


def parse_host_port(addr: str, default_port: int) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]" or "[v6]:port"; a bare IPv6 address takes the
    default port. Raises P2PError for an unusable string."""
    s = addr.strip()
    host, port = s, default_port
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise P2PError(P2PError.INVALID_PARAMETER, f"invalid address {addr!r}")
        host, rest = s[1:end], s[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise P2PError(P2PError.INVALID_PARAMETER, f"invalid address {addr!r}")
            port_s = rest[1:]
            port = int(port_s) if port_s.isdigit() else -1
    elif s.count(":") == 1:
        host, port_s = s.split(":")
        port = int(port_s) if port_s.isdigit() else -1
    if not host or not 0 < port < 65536:
        raise P2PError(P2PError.INVALID_PARAMETER, f"invalid address {addr!r}")
    return host, port


def _has_data(idx: Any) -> bool:
    """Whether an index entry's block is stored. A chain manager may know a header without
    its block (headers-first, or the header of a *mutated* block someone sent): such a block
    must still be downloaded, or one bad copy would blind us to the real one. Entries without
    a `have_data` attribute are taken as stored."""
    return bool(getattr(idx, "have_data", True))


def _first_to_race(idle: Sequence[Peer], failed: FailedSessions) -> Peer:
    """Of the idle peers that are ahead, the one a blocks-first stall race asks first: the
    one whose address wasted the fewest sync sessions (failed_sessions.py), then outbound (we
    chose it), then the highest claimed start height, then the oldest."""
    return max(idle, key=lambda p: (-failed.count(p.host), not p.inbound, p.start_height, -p.id))


def _sanitize(s: str) -> str:
    """A user agent fit for display (Bitcoin's SanitizeString): printable ASCII only."""
    return "".join(c for c in s if " " <= c <= "~")


def _ip_key(address: str) -> str:
    """Canonical text of an IP address (ban list key); P2PError if it is not one."""
    try:
        return str(ipaddress.ip_address(normalize_ip(address.split("/")[0])))
    except ValueError:
        raise P2PError(P2PError.CLIENT_INVALID_IP_OR_SUBNET,
                       f"Error: Invalid IP/Subnet {address!r}") from None


class P2PNode:
    """The P2P side of a node, on the running event loop.

    bitcoind's options: `listen` (-listen; None: on unless `connect` is given), `bind`
    (-bind; IPv4 all interfaces by default), `port` (-port; None: the network's default, 0:
    any free port, see `.port`), `connect` (-connect), `addnode` (-addnode),
    `max_connections` (-maxconnections), `ban_time` (-bantime, seconds), `user_agent`.
    `now` is the wall clock (version timestamps, conntime, ban expiry; tests pass a fake).

    The other keyword arguments are timing knobs (seconds) with bitcoind-like defaults that
    tests shorten: `ping_interval`, `ping_timeout`, `handshake_timeout`,
    `block_download_timeout`, `reconnect_interval`, `connect_timeout`; and
    `getblocks_limit`, the most hashes we put in one getblocks answer (500, as Bitcoin;
    tests lower it to exercise several batches); `max_misbehaviour_bans`, the most automatic
    bans kept (MAX_MISBEHAVIOUR_BANS; tests lower it); `tx_request_timeout`, how long a
    transaction request waits before the next announcer is asked (TX_REQUEST_TIMEOUT);
    `headers_sync_timeout`, the base of a headers-first sync peer's deadline
    (HEADERS_SYNC_TIMEOUT); `cpu_shared_rate`, the CPU seconds per second the peers' messages
    share (cpu_budget.SHARED_RATE; tests that flood on purpose raise it); `max_upload_target`,
    -maxuploadtarget in bytes per 24 hours (0: none; upload_target.py).
    `connector` opens every outgoing connection (connector.py): the daemons pass one that
    applies the connect rule (connect_rule.py); the default applies none (tests).
    """

    def __init__(self, chain: ChainAccess, mempool: MempoolAccess, *,
                 listen: bool | None = None, bind: str = "0.0.0.0", port: int | None = None,
                 connect: Sequence[str] = (), addnode: Sequence[str] = (),
                 max_connections: int = 125, ban_time: int = 86400,
                 user_agent: str = USER_AGENT, now: Callable[[], float] = time.time,
                 ping_interval: float = 120.0, ping_timeout: float = 1200.0,
                 handshake_timeout: float = 60.0, block_download_timeout: float = 120.0,
                 reconnect_interval: float = 60.0, connect_timeout: float = 5.0,
                 getblocks_limit: int = GETBLOCKS_LIMIT,
                 max_misbehaviour_bans: int = MAX_MISBEHAVIOUR_BANS,
                 tx_request_timeout: float = TX_REQUEST_TIMEOUT,
                 headers_sync_timeout: float = HEADERS_SYNC_TIMEOUT,
                 cpu_shared_rate: float = SHARED_RATE,
                 max_upload_target: int = 0,
                 connector: Connector = UNRESTRICTED,
                 sockets: Sequence[socket.socket] | None = None) -> None:
        self.chain = chain
        self.connector = connector
        self.mempool = mempool
        self.params = chain.params
        # Peers decide how often most of our log lines are written: cap them per call site.
        self._log_limit = install_log_limit(log)
        self.listen = (not connect) if listen is None else listen
        self.bind = bind
        self.requested_port = self.params.default_port if port is None else port
        self.max_connections = max(0, max_connections)
        full_relay = min(MAX_OUTBOUND_FULL_RELAY, self.max_connections)
        self.max_outbound = full_relay + min(MAX_BLOCK_RELAY_ONLY, self.max_connections - full_relay)
        self.max_inbound = self.max_connections - self.max_outbound
        self._eviction_key = secrets.token_bytes(16)     # keyed network-group protection
        self.ban_time = ban_time
        if len(user_agent.encode("utf-8")) > MAX_USER_AGENT:
            raise ValueError(f"user agent longer than {MAX_USER_AGENT} bytes")
        self.user_agent = user_agent
        self.now = now
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.handshake_timeout = handshake_timeout
        self.block_download_timeout = block_download_timeout
        self.reconnect_interval = reconnect_interval
        self.connect_timeout = connect_timeout
        self.getblocks_limit = max(1, getblocks_limit)
        self.max_misbehaviour_bans = max(1, max_misbehaviour_bans)
        self.tx_request_timeout = tx_request_timeout
        self.headers_sync_timeout = headers_sync_timeout
        # Validate the addresses now, so a bad -connect/-addnode fails at startup.
        for a in (*connect, *addnode):
            parse_host_port(a, self.params.default_port)
        self._connect_list: list[str] = list(dict.fromkeys(connect))
        self._added: list[str] = list(dict.fromkeys(addnode))

        #: Accepts inbound connections at a bounded CPU cost (accept_gate.py).
        self._accept_gate: AcceptGate | None = None
        #: Listening sockets bound already (`bind_listeners`, before CleanCoin-node confined
        #: itself into a network namespace of its own), served instead of binding in `start`.
        self._prebound = list(sockets) if sockets is not None else None
        self._bound_port: int | None = None
        self._peers: dict[int, Peer] = {}
        self._next_peer_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbound_tasks: set[asyncio.Task[Any]] = set()
        self._keep_tasks: dict[str, asyncio.Task[None]] = {}
        self._pending_dials: set[str] = set()       # targets being dialled right now
        self._bans: dict[str, BanEntry] = {}
        #: Keys of the automatic bans in _bans, oldest first (the cap drops from the front).
        self._auto_bans: OrderedDict[str, None] = OrderedDict()
        self._running = False

        self._blocks_requested: dict[bytes, int] = {}       # block hash -> peer id
        self._txs_requested: dict[bytes, tuple[int, float]] = {}   # txid -> (peer id, loop time)
        #: txid -> ids of other peers that announced it while it was requested: asked in turn
        #: if the request fails (bitcoind's TxRequestTracker keeps every announcer).
        self._tx_alternates: dict[bytes, list[int]] = {}
        self._recent_rejects: OrderedDict[bytes, None] = OrderedDict()
        self._rejects_tip: bytes | None = None
        #: Transactions that came before their parents (orphans.py).
        self._orphans = OrphanPool()
        self._sync_peer: Peer | None = None
        #: The sync session runs headers-first (our tip was below the minimum chain work when
        #: it started), and which blocks of the sync peer's header chain it asks for next.
        self._sync_headers_first = False
        self._header_download: HeaderDownload | None = None
        #: How long a peer may stall the download window (block_window.py).
        self._stall_timeout = StallTimeout()
        #: Headers-first: blocks a staller has held past the default stalling timeout, asked
        #: of the idle peers too (_race_stalled_block), and the staller's peer id.
        self._stall_races: dict[bytes, int] = {}
        self._header_log_at = 0.0            # loop time of the last header progress line
        #: Loop time by which a headers-first sync peer must show a chain of the minimum work.
        self._headers_sync_deadline = 0.0
        self._announced_tip: bytes | None = None
        self._loop: asyncio.AbstractEventLoop | None = None       # set by start()
        # IBD progress reporting.
        self._sync_started_at = 0.0
        self._sync_start_height = 0
        self._sync_start_tip: bytes | None = None
        #: Blocks-first sync sessions wasted, per address: such peers are asked last.
        self._failed_sessions = FailedSessions()
        #: Blocks-first: the peer last asked in a stall race and what (the block, or None for
        #: a getblocks); charged as a wasted session when it does not answer in time.
        self._sync_race: tuple[int, bytes | None] | None = None
        self._progress_at = 0.0
        self._progress_height = 0
        self._progress_final = False
        #: -maxuploadtarget: bytes sent in the day's cycle, against the target (upload_target.py).
        self._upload_target = UploadTarget(max(0, max_upload_target), self.params.max_block_size)
        #: What each address group's messages may cost the event loop's thread (cpu_budget.py).
        scale = cpu_shared_rate / SHARED_RATE
        self._cpu_budgets = CpuBudgets(shared_rate=cpu_shared_rate, large_rate=scale * LARGE_RATE,
                                       max_total_rate=scale * MAX_TOTAL_RATE, newcomer_rate=scale * NEWCOMER_RATE)

    # ================================================================== lifecycle

    async def start(self) -> None:
        """Bind (if listening) and start dialling -connect/-addnode peers. Raises OSError when
        the port cannot be bound."""
        if self._running:
            return
        self._announced_tip = self.chain.tip.hash
        if self.listen:
            sockets, self._prebound = self._prebound, None
            if sockets is None:
                sockets = bind_listeners(self.bind, self.requested_port)
            self._bound_port = int(sockets[0].getsockname()[1])
            self._accept_gate = AcceptGate(sockets, self._on_inbound)
            self._accept_gate.start()
            log.info("Bound to %s", format_addr(self.bind, self._bound_port))
        elif self._prebound:
            for sock in self._prebound:
                sock.close()
            self._prebound = None
        self._running = True
        self._loop = asyncio.get_running_loop()
        add_listener = getattr(self.chain, "add_listener", None)     # (test chains may lack it)
        if add_listener is not None:
            add_listener(self)          # block_connected: the orphans a block settles
        self._spawn(self._maintenance(), "p2p-maintenance")
        for target in (*self._connect_list, *self._added):
            self._start_keep_connected(target)

    async def stop(self) -> None:
        """Close the listener and every connection, and wait for their tasks."""
        if not self._running:
            return
        self._running = False
        remove_listener = getattr(self.chain, "remove_listener", None)
        if remove_listener is not None:
            remove_listener(self)
        if self._accept_gate is not None:
            self._accept_gate.close()
            self._accept_gate = None
        for peer in list(self._peers.values()):
            peer.close("shutdown")
        # Our own tasks (maintenance, dialling loops) are cancelled. Inbound connection tasks
        # belong to their streams' protocols, which report a cancelled one as an error: closing
        # their peers above ends them, so they are only awaited (cancelled as a last resort).
        own = list(self._tasks)
        for t in own:
            t.cancel()
        inbound = list(self._inbound_tasks)
        if own or inbound:
            await asyncio.wait([*own, *inbound], timeout=5)
        for t in inbound:
            t.cancel()
        self._keep_tasks.clear()

    @property
    def port(self) -> int | None:
        """The port we listen on (the real one when 0 was asked), None when not listening."""
        return self._bound_port

    @property
    def connection_count(self) -> int:
        """Open connections, inbound and outbound (getconnectioncount)."""
        return len(self._peers)

    @property
    def inbound_count(self) -> int:
        return sum(1 for p in self._peers.values() if p.inbound)

    @property
    def outbound_count(self) -> int:
        """Outbound connections, those being dialled included."""
        return sum(1 for p in self._peers.values() if not p.inbound) + len(self._pending_dials)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %r", task.get_name(), task.exception())

    # ================================================================== connections

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        host = normalize_ip(str(peername[0]))
        refuse = ""
        if not self._running:
            refuse = "shutting down"
        elif self.is_banned(host):
            refuse = "banned"
        elif self.inbound_count >= self.max_inbound:
            # Slots held by connections already closed at the far end are free first.
            self._close_hung_up()
            if self.inbound_count >= self.max_inbound and not self._evict_inbound(format_addr(host, peername[1])):
                refuse = f"inbound slots full ({self.max_inbound}) and no peer to evict"
        if refuse:
            log.debug("refusing inbound connection from %s: %s", format_addr(host, peername[1]), refuse)
            writer.transport.abort()
            return
        peer = self._add_peer(reader, writer, inbound=True, connection_type="inbound", target=None)
        if peer.cpu_budget is not None:
            # What the connection costs outside its messages (accept_gate.py), its group's too:
            # a group that keeps reconnecting waits for its budget as one that keeps sending.
            peer.cpu_budget.charge(CONNECTION_COST, unsolicited=False)
        task = asyncio.current_task()
        if task is not None:               # so stop() waits for this connection too
            self._inbound_tasks.add(task)
            task.add_done_callback(self._inbound_tasks.discard)
        await peer.run()

    def _add_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                  inbound: bool, connection_type: str, target: str | None) -> Peer:
        self._next_peer_id += 1
        peer = Peer(self, self._next_peer_id, reader, writer, magic=self.params.magic,
                    inbound=inbound, connection_type=connection_type, target=target, now=self.now)
        self._peers[peer.id] = peer
        peer.cpu_budget = self._cpu_budgets.attach(peer.host, asyncio.get_running_loop().time(), inbound=inbound)
        peer.cpu_budgets = self._cpu_budgets
        log.debug("%s connection peer=%d %s", "inbound" if inbound else "outbound", peer.id, peer.addr)
        return peer

    def _close_hung_up(self) -> int:
        """Drop the connections the node is not reading whose remote end has closed or reset
        (hangup.py): a paused peer does not see its stream's end, and held its slot and its
        group's share of the CPU budget until its pause ended. How many were dropped."""
        idle = {p.fileno(): p for p in self._peers.values() if p.not_reading and not p.closed}
        idle.pop(-1, None)
        gone = hung_up(idle) if idle else set()
        for fd in gone:
            peer = idle[fd]
            log.debug("peer=%d %s closed the connection while not read", peer.id, peer.addr)
            peer.close("closed by the peer")
            self._forget_peer(peer)
        return len(gone)

    def _evict_inbound(self, newcomer: str) -> bool:
        """Make room for an inbound newcomer by dropping the inbound peer to spare; False when
        every inbound peer is protected (or there is none)."""
        candidates = [Candidate(p.id, p.connected_at, p.min_ping, p.last_block_time, p.last_tx_time, p.relay,
                                netgroup(p.host))
                      for p in self._peers.values() if p.inbound and not p.closed]
        victim_id = select_peer_to_evict(candidates, self._eviction_key)
        if victim_id is None:
            return False
        victim = self._peers[victim_id]
        log.info("inbound slots full (%d): evicting peer=%d %s for %s", self.max_inbound, victim.id,
                 victim.addr, newcomer)
        victim.close("evicted")
        self._forget_peer(victim)
        return True

    def _connected_to(self, target: str) -> bool:
        return target in self._pending_dials or any(p.target == target for p in self._peers.values())

    async def _dial(self, target: str, connection_type: str) -> Peer | None:
        """Connect to `target`, register the peer and send our version; None on failure."""
        if self._connected_to(target):
            return None
        if self.outbound_count >= self.max_outbound:
            log.info("not connecting to %s: outbound slots full (%d)", target, self.max_outbound)
            return None
        host, port = parse_host_port(target, self.params.default_port)
        log.debug("connecting to %s (-timeout %g s)", target, self.connect_timeout)
        self._pending_dials.add(target)
        try:
            try:
                reader, writer = await asyncio.wait_for(self.connector.open(host, port, self.connect_timeout),
                                                        self.connect_timeout + 2.0)
            except ConnectRefused as e:
                # The operator's word, not a peer's failure: said at the default level.
                log.info("not connecting to %s: %s", target, e)
                return None
            except (OSError, TimeoutError) as e:
                log.debug("connection to %s failed: %s", target, e or type(e).__name__)
                return None
            peername = writer.get_extra_info("peername") or (host, port)
            if self.is_banned(str(peername[0])):
                log.info("not connecting to %s: banned", target)
                writer.transport.abort()
                return None
            if not self._running or self.outbound_count > self.max_outbound:   # ours is still pending
                writer.transport.abort()
                return None
        finally:
            self._pending_dials.discard(target)
        peer = self._add_peer(reader, writer, inbound=False, connection_type=connection_type,
                              target=target)
        self._send_version(peer)
        return peer

    async def _run_outbound(self, target: str, connection_type: str) -> None:
        peer = await self._dial(target, connection_type)
        if peer is not None:
            await peer.run()

    def _start_keep_connected(self, target: str) -> None:
        if target not in self._keep_tasks:
            self._keep_tasks[target] = self._spawn(self._keep_connected(target), f"p2p-keep-{target}")

    async def _keep_connected(self, target: str) -> None:
        """Keep a -connect/-addnode peer connected: dial, serve, wait, dial again."""
        try:
            while self._running and (target in self._added or target in self._connect_list):
                await self._run_outbound(target, "manual")
                await asyncio.sleep(self.reconnect_interval)
        finally:
            if self._keep_tasks.get(target) is asyncio.current_task():
                del self._keep_tasks[target]

    # ================================================================== RPC-facing API

    def add_node(self, addr: str, command: str) -> None:
        """addnode: "add" keeps `addr` connected, "remove" stops that (without disconnecting,
        as bitcoind), "onetry" dials once. Raises P2PError with bitcoind's codes."""
        parse_host_port(addr, self.params.default_port)
        if command == "add":
            if addr in self._added:
                raise P2PError(P2PError.NODE_ALREADY_ADDED, "Error: Node already added")
            self._added.append(addr)
            if self._running:
                self._start_keep_connected(addr)
        elif command == "remove":
            if addr not in self._added:
                raise P2PError(P2PError.NODE_NOT_ADDED,
                               "Error: Node could not be removed. It has not been added previously.")
            self._added.remove(addr)
            task = self._keep_tasks.get(addr)
            # Cancel only a task that is waiting to redial; a connected one ends by itself
            # (its loop condition fails) when the connection closes.
            if task is not None and not self._connected_to(addr) and addr not in self._connect_list:
                task.cancel()
        elif command == "onetry":
            if self._running:
                # bitcoind's connection type for every addnode connection, onetry included.
                self._spawn(self._run_outbound(addr, "manual"), f"p2p-onetry-{addr}")
        else:
            raise P2PError(P2PError.INVALID_PARAMETER, f"invalid addnode command {command!r}")

    def added_node_info(self, addr: str | None = None) -> list[dict[str, Any]]:
        """getaddednodeinfo."""
        targets = self._added if addr is None else [a for a in self._added if a == addr]
        if addr is not None and not targets:
            raise P2PError(P2PError.NODE_NOT_ADDED, "Error: Node has not been added.")
        out = []
        for t in targets:
            peers = [p for p in self._peers.values() if p.target == t]
            out.append({"addednode": t, "connected": bool(peers),
                        "addresses": [{"address": p.addr, "connected": "outbound"} for p in peers]})
        return out

    def disconnect_node(self, addr: str | None = None, peer_id: int | None = None) -> None:
        """disconnectnode: by address ("host:port" as shown in getpeerinfo or as dialled) or
        by peer id, exactly one of them. Raises P2PError(-29) if no such peer."""
        if (addr is None) == (peer_id is None):
            raise P2PError(P2PError.INVALID_PARAMETER,
                           "Only one of address and nodeid should be provided.")
        for peer in list(self._peers.values()):
            remote = format_addr(peer.host, peer.port)
            if (peer.id == peer_id) if peer_id is not None else addr in (peer.addr, remote):
                log.info("disconnecting peer=%d %s (requested)", peer.id, peer.addr)
                peer.close("disconnectnode")
                self._forget_peer(peer)
                return
        raise P2PError(P2PError.NODE_NOT_CONNECTED, "Node not found in connected nodes")

    def peer_info(self) -> list[dict[str, Any]]:
        """getpeerinfo, in bitcoind's field names (times in seconds, Unix time from `now`)."""
        loop_now = asyncio.get_running_loop().time() if self._running else 0.0
        out = []
        for p in sorted(self._peers.values(), key=lambda p: p.id):
            d: dict[str, Any] = {
                "id": p.id,
                "addr": p.addr,
                "addrbind": p.addr_bind,
                "network": "ipv6" if ":" in p.host else "ipv4",
                "services": f"{p.services:016x}",
                "relaytxes": p.relay,
                "lastsend": p.last_send,
                "lastrecv": p.last_recv,
                "bytessent": p.bytes_sent,
                "bytesrecv": p.bytes_recv,
                "conntime": p.conntime,
                "timeoffset": p.time_offset,
                "version": p.version,
                "subver": p.subver,
                "inbound": p.inbound,
                # bitcoind's net permissions (-whitelist/-whitebind): this node grants none.
                "permissions": [],
                "connection_type": p.connection_type,
                "startingheight": p.start_height,
                "synced_blocks": p.synced_blocks,
                "inflight": len(p.blocks_in_flight),
                # bitcoind's: the height its headers pre-sync has counted to, -1 when none
                # is under way (presync.py: counted, not stored).
                "presynced_headers": p.header_sync.last.height if p.header_sync is not None else -1,
                "banscore": p.ban_score,
                # CPU seconds its address group may still spend at once (below zero: not read
                # until it refills; cpu_budget.py).
                "cpu_budget": round(p.cpu_budget.tokens, 4) if p.cpu_budget is not None else None,
                "bytessent_per_msg": dict(p.bytes_sent_per_msg),
                "bytesrecv_per_msg": dict(p.bytes_recv_per_msg),
            }
            if p.ping_time is not None:
                d["pingtime"] = round(p.ping_time, 6)
            if p.min_ping is not None:
                d["minping"] = round(p.min_ping, 6)
            if p.ping_sent_at:
                d["pingwait"] = round(loop_now - p.ping_sent_at, 6)
            out.append(d)
        return out

    # ------------------------------------------------------------------ bans

    def is_banned(self, host: str) -> bool:
        """Whether `host` (an IP address) is banned now."""
        try:
            key = _ip_key(host)
        except P2PError:
            return False
        entry = self._bans.get(key)
        if entry is None:
            return False
        if entry.until <= self.now():
            self._drop_ban(key)
            return False
        return True

    def _drop_ban(self, key: str) -> BanEntry | None:
        self._auto_bans.pop(key, None)
        return self._bans.pop(key, None)

    def ban(self, address: str, ban_time: int | None = None, reason: str = "manually added",
            *, automatic: bool = False) -> None:
        """setban add: ban `address` for `ban_time` seconds (default: the node's) and drop its
        connections. `automatic` (a misbehaviour ban) never replaces a manual ban, and counts
        against `max_misbehaviour_bans`: past it the oldest automatic ban is forgotten, so
        misbehaving from ever new addresses (an IPv6 /64 has 2^64) cannot grow the table
        without bound."""
        key = _ip_key(address)
        created = int(self.now())
        duration = self.ban_time if ban_time is None else ban_time
        existing = self._bans.get(key)
        if automatic and existing is not None and not existing.automatic and existing.until > created:
            pass                                    # a manual ban stands as it is
        else:
            self._drop_ban(key)
            self._bans[key] = BanEntry(key, created, created + duration, reason, automatic)
            if automatic:
                self._auto_bans[key] = None
                while len(self._auto_bans) > self.max_misbehaviour_bans:
                    oldest, _ = self._auto_bans.popitem(last=False)
                    self._bans.pop(oldest, None)
        for peer in list(self._peers.values()):
            if self._peer_ip(peer) == key:
                peer.close(f"banned: {reason}")
                self._forget_peer(peer)

    @staticmethod
    def _peer_ip(peer: Peer) -> str | None:
        try:
            return _ip_key(peer.host)
        except P2PError:
            return None

    def unban(self, address: str) -> None:
        """setban remove; P2PError if it was not banned."""
        if self._drop_ban(_ip_key(address)) is None:
            raise P2PError(P2PError.CLIENT_INVALID_IP_OR_SUBNET,
                           "Error: Unban failed. Requested address/subnet was not previously "
                           "manually banned.")

    def clear_banned(self) -> None:
        """clearbanned."""
        self._bans.clear()
        self._auto_bans.clear()

    def ban_list(self) -> list[dict[str, Any]]:
        """listbanned: address (as a /32 or /128 subnet, like bitcoind), times, reason."""
        now = int(self.now())
        out = []
        for key, e in sorted(self._bans.items()):
            if e.until <= now:
                continue
            bits = 128 if ":" in key else 32
            out.append({"address": f"{key}/{bits}", "ban_created": e.created, "banned_until": e.until,
                        "ban_duration": e.until - e.created, "time_remaining": e.until - now,
                        "ban_reason": e.reason})
        return out

    def misbehaving(self, peer: Peer, score: int, reason: str) -> None:
        """Add `score` to `peer`'s ban score; at BAN_THRESHOLD ban its address and drop it."""
        if peer.closed or score <= 0:
            return
        peer.ban_score += score
        log.info("peer=%d %s misbehaving (+%d -> %d): %s",
                 peer.id, peer.addr, score, peer.ban_score, reason)
        if peer.ban_score >= BAN_THRESHOLD:
            log.warning("banning %s for %d s: %s", peer.host, self.ban_time, reason)
            self.ban(peer.host, self.ban_time, reason, automatic=True)

    # ------------------------------------------------------------------ relay

    def announce_block(self, block_hash: bytes) -> int:
        """Announce a block (normally a new tip) by inv to every handshaken peer not known to
        have it; returns how many peers were told."""
        if block_hash == self.chain.tip.hash:
            self._announced_tip = block_hash
        return self._announce(MSG_BLOCK, block_hash, tx=False)

    def announce_tx(self, txid: bytes) -> int:
        """Announce a mempool transaction to every handshaken peer that wants transactions and
        is not known to have it; returns how many peers were told. Orphans waiting for it
        (sent by peers before it came, say by RPC) are tried again."""
        told = self._announce(MSG_TX, txid, tx=True)
        self._accept_orphans_of(txid)
        return told

    def _announce(self, type_: int, h: bytes, *, tx: bool) -> int:
        n = 0
        for peer in self._peers.values():
            if not peer.handshake_done or peer.closed or h in peer.known_inventory:
                continue
            if tx and not peer.relay:
                continue
            if tx and peer.outbox_bytes > SEND_BUFFER_LIMIT:
                # A peer with a full send queue is not reading (or reads slowly): queueing
                # every new transaction for it would grow the queue with the network's rate
                # until its ping timeout. The txid waits, bounded, and is announced once the
                # queue is under the limit (_flush_tx_announcements); before 12-07 it was
                # skipped for good (blocks are always announced).
                if len(peer.tx_to_announce) < MAX_PENDING_TX_ANNOUNCEMENTS:
                    peer.tx_to_announce[h] = None
                continue
            if tx and peer.tx_to_announce:
                self._flush_tx_announcements(peer)      # the older ones first
            peer.known_inventory.add(h)
            peer.send(Inv((InvItem(type_, h),)))
            n += 1
        return n

    def _flush_tx_announcements(self, peer: Peer) -> None:
        """Announce to `peer` the transactions held while its send queue was full that are
        still in the pool and not known to it (called when it is under the limit again)."""
        items = [InvItem(MSG_TX, t) for t in peer.tx_to_announce
                 if t not in peer.known_inventory and t in self.mempool]
        peer.tx_to_announce.clear()
        for item in items:
            peer.known_inventory.add(item.hash)
        for i in range(0, len(items), MAX_INV):
            peer.send(Inv(tuple(items[i:i + MAX_INV])))

    # ================================================================== PeerHandler

    def protocol_violation(self, peer: Peer, err: ProtocolError) -> None:
        """A malformed frame or payload: always a ban (score 100)."""
        self.misbehaving(peer, BAN_THRESHOLD, f"protocol violation: {err}")
        if not peer.closed:           # e.g. the ban threshold was changed; never keep a desynced stream
            peer.close(str(err))

    def before_handshake(self, peer: Peer, command: str) -> None:
        """A message other than version/verack before the handshake: ignored undecoded, +1."""
        self.misbehaving(peer, 1, f"{command} before handshake")

    def cpu_budget_spent(self, peer: Peer, mostly_unsolicited: bool) -> None:
        """`peer`'s address group spent its CPU budget: it is not read until the budget refills;
        spent mostly on messages nobody asked for, that is misbehaviour (EXHAUSTED_SCORE)."""
        log.debug("peer=%d %s: CPU budget spent, not read for %.1f s", peer.id, peer.addr,
                  peer.cpu_budget.wait(self._cpu_budgets.rate()) if peer.cpu_budget is not None else 0.0)
        if mostly_unsolicited:
            self.misbehaving(peer, EXHAUSTED_SCORE, "CPU budget spent on unrequested messages")

    def bytes_sent(self, peer: Peer, nbytes: int) -> None:
        """`nbytes` went out to `peer` (-maxuploadtarget counts them)."""
        self._upload_target.record(nbytes, self.now())

    def peer_closed(self, peer: Peer) -> None:
        """Forget a closed connection's state."""
        self._forget_peer(peer)
        log.debug("peer=%d %s disconnected (%s)", peer.id, peer.addr, peer.close_reason)

    def _forget_peer(self, peer: Peer) -> None:
        if self._peers.get(peer.id) is not peer:
            return
        del self._peers[peer.id]
        self._cpu_budgets.detach(peer.host)
        # A sync peer leaving while it owes blocks or an answer wasted its session, however
        # many it delivered first (one a session, then away before the stalling timeout).
        owed = bool(peer.blocks_in_flight or peer.getblocks_sent_at)
        if self._sync_race is not None and self._sync_race[0] == peer.id:
            self._sync_race = None
            if owed:
                self._charge_wasted(peer, "it left a stall race unanswered")
        for h in peer.blocks_in_flight:
            if self._blocks_requested.get(h) == peer.id:
                del self._blocks_requested[h]
        peer.blocks_in_flight.clear()
        peer.getdata_queue.clear()
        # Its outstanding transaction requests fail over to another announcer.
        for txid in list(peer.tx_waiting):
            self._drop_alternate(txid, peer.id)
        peer.tx_waiting.clear()
        for txid in list(peer.txs_in_flight):
            self._release_tx_request(txid, failed=True)
        # A failed request handed to it and still queued here: on to the next announcer.
        handed_over = [t for t in peer.tx_announced
                       if t in self._tx_alternates and t not in self._txs_requested]
        for txid in handed_over:
            self._release_tx_request(txid, failed=True)
        peer.tx_announced.clear()
        self._orphans.remove_for_peer(peer.id)      # (bitcoind's EraseForPeer)
        peer.header_sync = None             # its header session's state goes with it
        peer.best_header = None
        if self._sync_peer is peer:
            if self._sync_headers_first and peer.headers_sent_at:
                self._charge_wasted(peer, "it left owing headers")
            elif not self._sync_headers_first and (owed or self.chain.tip.hash == self._sync_start_tip):
                self._charge_wasted(peer, "it left owing blocks" if owed else "it left without a block")
            self._sync_peer = None
            self._end_headers_first()
            if self._running:
                self._maybe_start_sync()
        elif self._running and self._sync_headers_first:
            self._fill_download()          # (its blocks to the others)

    async def handle_message(self, peer: Peer, msg: Message) -> None:
        """Dispatch one message. Any unexpected exception from chain or mempool code is
        logged and costs the peer its connection, never the node its life; a failure of our
        own disk (WriteFailure) costs the peer nothing."""
        if peer.closed:
            return
        try:
            if isinstance(msg, Version):
                self._on_version(peer, msg)
            elif isinstance(msg, Verack):
                self._on_verack(peer)
            elif not peer.handshake_done:        # (Peer drops these undecoded; kept as a guard)
                self.misbehaving(peer, 1, f"{msg.command} before handshake")
            elif isinstance(msg, Ping):
                peer.send(Pong(msg.nonce))
            elif isinstance(msg, Pong):
                self._on_pong(peer, msg)
            elif isinstance(msg, Inv):
                self._on_inv(peer, msg)
            elif isinstance(msg, GetData):
                peer.getdata_queue.extend(msg.items)
                peer.wake_writer()
            elif isinstance(msg, NotFound):
                self._on_notfound(peer, msg)
            elif isinstance(msg, GetHeaders):        # (a GetBlocks too: asked first)
                self._on_getheaders(peer, msg)
            elif isinstance(msg, GetBlocks):
                self._on_getblocks(peer, msg)
            elif isinstance(msg, Headers):
                self._on_headers(peer, msg)
            elif isinstance(msg, BlockMessage):
                self._on_block(peer, msg)
            elif isinstance(msg, TxMessage):
                self._on_tx(peer, msg)
        except ProtocolError:
            raise
        except WriteFailure as exc:
            # Our disk's failure, not the peer's: no misbehaviour, no disconnect, the block
            # is not marked invalid (the chain stops itself and the node shuts down; after a
            # restart with space back the block is fetched again).
            log.error("peer=%d: %s not stored, our disk failed: %s", peer.id, msg.command, exc)
        except Exception:
            log.exception("peer=%d: error processing %s; disconnecting", peer.id, msg.command)
            peer.close(f"internal error on {msg.command}")

    # ------------------------------------------------------------------ handshake

    def _send_version(self, peer: Peer) -> None:
        peer.send(Version(PROTOCOL_VERSION, NODE_NETWORK, int(self.now()), peer.local_nonce,
                          self.user_agent, self.chain.tip.height, True))
        peer.version_sent = True

    def _on_version(self, peer: Peer, msg: Version) -> None:
        if peer.version_received:
            self.misbehaving(peer, 1, "duplicate version")
            return
        if peer.inbound and any(not p.inbound and not p.handshake_done and p.local_nonce == msg.nonce
                                for p in self._peers.values()):
            log.info("connected to self at %s, disconnecting", peer.addr)
            peer.close("connected to self")
            return
        if msg.version < MIN_PEER_PROTO_VERSION:
            log.info("peer=%d using obsolete version %d; disconnecting", peer.id, msg.version)
            peer.close("obsolete version")
            return
        peer.version_received = True
        peer.version = msg.version
        peer.services = msg.services
        peer.subver = _sanitize(msg.user_agent)
        peer.start_height = msg.start_height
        peer.relay = msg.relay
        peer.time_offset = msg.timestamp - int(self.now())
        if not peer.version_sent:
            self._send_version(peer)
        peer.send(Verack())

    def _on_verack(self, peer: Peer) -> None:
        if not peer.version_received or peer.handshake_done:
            self.misbehaving(peer, 1, "unexpected verack")
            return
        peer.handshake_done = True
        log.info("New %s peer connected: version: %d, blocks=%d, peer=%d, subver=%s, addr=%s",
                 "inbound" if peer.inbound else "outbound", peer.version, peer.start_height,
                 peer.id, peer.subver, peer.addr)
        self._send_ping(peer)
        self._maybe_start_sync()
        if self._sync_headers_first:
            self._fill_download()              # (a new peer may have the branch: asked for headers)

    def _send_ping(self, peer: Peer) -> None:
        loop_now = asyncio.get_running_loop().time()
        peer.ping_nonce = secrets.randbits(64) or 1       # 0 would mean "no ping outstanding"
        peer.ping_sent_at = peer.last_ping_at = loop_now
        peer.send(Ping(peer.ping_nonce))

    def _on_pong(self, peer: Peer, msg: Pong) -> None:
        if not peer.ping_sent_at or msg.nonce != peer.ping_nonce:
            return                      # unsolicited or stale: harmless, as in Bitcoin
        rtt = asyncio.get_running_loop().time() - peer.ping_sent_at
        peer.ping_time = rtt
        peer.min_ping = rtt if peer.min_ping is None else min(peer.min_ping, rtt)
        peer.ping_sent_at = 0.0
        peer.ping_nonce = 0

    # ------------------------------------------------------------------ inventory

    def _on_inv(self, peer: Peer, msg: Inv) -> None:
        loop_now = asyncio.get_running_loop().time()
        block_hashes = [it.hash for it in msg.items if it.type == MSG_BLOCK]
        # An inv while a getblocks is outstanding is taken as its answer (blocks only).
        is_answer = bool(peer.getblocks_sent_at) and len(block_hashes) == len(msg.items)
        if is_answer:
            peer.getblocks_sent_at = 0.0
            sync = self._sync_peer
            if sync is not None and sync is not peer and not self._sync_headers_first:
                if not block_hashes:
                    peer.sync_exhausted = True          # (nothing after our locator: not ahead)
                elif sync.getblocks_sent_at and not sync.blocks_in_flight:
                    # It answered a getblocks the sync peer had left unanswered for the
                    # stalling timeout (_race_getblocks) first: the session is its now.
                    log.info("peer=%d answered getblocks first (peer=%d left it unanswered %.1f s): "
                             "block download moves", peer.id, sync.id, loop_now - sync.getblocks_sent_at)
                    sync.getblocks_sent_at = 0.0
                    self._charge_wasted(sync, "left getblocks unanswered past the stalling timeout")
                    self._sync_peer = None
                    self._start_sync(peer, answered=True)
        syncing_elsewhere = self._sync_peer is not None and self._sync_peer is not peer
        relay_inv = not is_answer and len(block_hashes) == 1
        minimum = self._minimum_chain_work() if self._below_minimum() else 0
        unknown_below_minimum = False
        want: list[InvItem] = []
        for item in msg.items:
            peer.known_inventory.add(item.hash)
            if item.type == MSG_BLOCK:
                idx = self.chain.get_index(item.hash)
                if idx is not None and (_has_data(idx) or getattr(idx, "failed", False)):
                    # Stored, or known invalid: nothing to fetch.
                    peer.synced_blocks = max(peer.synced_blocks, idx.height)
                    continue
                peer.best_announced = item.hash
                peer.sync_exhausted = False
                if minimum and (idx is None or idx.chainwork < minimum):
                    # Below the minimum chain work, no block is asked for that a header chain
                    # of that work does not lead to: its sender is asked for headers instead.
                    unknown_below_minimum = True
                    continue
                # While another peer feeds us the chain in order, blocks from elsewhere would
                # only be orphans; once that sync ends this peer is asked if still ahead. A
                # single new block (a relay inv) is fetched anyway: the sync peer may be a
                # stranger stalling us, and a new tip must not wait for its timeout.
                if ((syncing_elsewhere and not relay_inv) or item.hash in self._blocks_requested
                        or len(peer.blocks_in_flight) >= MAX_BLOCKS_IN_FLIGHT):
                    continue
                want.append(item)
                self._blocks_requested[item.hash] = peer.id
                if not peer.blocks_in_flight:
                    peer.downloading_since = loop_now
                peer.blocks_in_flight[item.hash] = loop_now
            elif item.type == MSG_TX:
                if self._sync_peer is not None:
                    continue            # during a download transactions would only be orphans
                if len(peer.tx_announced) + len(peer.tx_waiting) < MAX_PEER_TX_ANNOUNCEMENTS:
                    peer.tx_announced.append(item.hash)
        want.extend(self._take_tx_requests(peer, loop_now))
        if want:
            if any(it.type == MSG_BLOCK for it in want):
                peer.last_block_progress = loop_now
            peer.send(GetData(tuple(want)))
        if unknown_below_minimum:
            if self._sync_peer is None:
                self._maybe_start_sync()
            else:
                self._ask_headers(peer, self._header_start(peer))
        if is_answer and self._sync_peer is peer:
            if not block_hashes:
                self._finish_sync(peer, exhausted=True)
            elif block_hashes[-1] == peer.getblocks_first:
                self._finish_sync(peer, exhausted=True)     # no progress: same answer again
            else:
                peer.sync_continue_from = block_hashes[-1]
                if not peer.blocks_in_flight:
                    self._continue_sync(peer)

    def _take_tx_requests(self, peer: Peer, loop_now: float) -> list[InvItem]:
        """Move `peer`'s announced transactions into requests while it has fewer than
        MAX_PEER_TX_REQUEST_IN_FLIGHT outstanding; one requested from another peer makes this
        peer an alternate for it; those we have or refused are dropped. Each announcement is
        looked at once."""
        out: list[InvItem] = []
        if self._sync_peer is not None:
            return out
        while (peer.tx_announced and len(peer.txs_in_flight) < MAX_PEER_TX_REQUEST_IN_FLIGHT
               and len(self._txs_requested) < _MAX_TX_REQUESTS):
            txid = peer.tx_announced.popleft()
            if not self._tx_needed(txid):
                self._orphans.add_announcer(txid, peer.id)      # (if it is an orphan)
                if txid not in self._txs_requested:
                    self._release_tx_request(txid, failed=False)   # forget its other announcers
                continue
            req = self._txs_requested.get(txid)
            if req is None:
                self._txs_requested[txid] = (peer.id, loop_now)
                peer.txs_in_flight.add(txid)
                out.append(InvItem(MSG_TX, txid))
            elif req[0] != peer.id and txid not in peer.tx_waiting:
                self._tx_alternates.setdefault(txid, []).append(peer.id)
                peer.tx_waiting.add(txid)
        return out

    def _request_txs(self, peer: Peer) -> None:
        """Send `peer` a getdata for announced transactions it now has room for."""
        items = self._take_tx_requests(peer, asyncio.get_running_loop().time())
        if items:
            peer.send(GetData(tuple(items)))

    def _release_tx_request(self, txid: bytes, *, failed: bool) -> None:
        """Forget the request for `txid`, freeing a slot of the peer it was asked from. When
        it `failed` (notfound, timed out, its peer gone) the next peer that announced it is
        asked; otherwise (the transaction arrived) the other announcers are forgotten."""
        req = self._txs_requested.pop(txid, None)
        if req is not None:
            requester = self._peers.get(req[0])
            if requester is not None:
                requester.txs_in_flight.discard(txid)
        if not failed:
            for peer_id in self._tx_alternates.pop(txid, ()):
                alternate = self._peers.get(peer_id)
                if alternate is not None:
                    alternate.tx_waiting.discard(txid)
            return
        alternates = self._tx_alternates.get(txid)
        while alternates:
            alternate = self._peers.get(alternates.pop(0))
            if alternate is None or alternate.closed:
                continue
            alternate.tx_waiting.discard(txid)
            alternate.tx_announced.appendleft(txid)       # first in its queue
            if not alternates:
                del self._tx_alternates[txid]             # (before asking: it may fail again)
            self._request_txs(alternate)
            return
        self._tx_alternates.pop(txid, None)

    def _drop_alternate(self, txid: bytes, peer_id: int) -> None:
        alternates = self._tx_alternates.get(txid)
        if alternates is not None:
            with contextlib.suppress(ValueError):
                alternates.remove(peer_id)
            if not alternates:
                del self._tx_alternates[txid]

    def _tx_needed(self, txid: bytes) -> bool:
        """Not in the mempool, not an orphan waiting for its parent, not recently refused."""
        return not self._recently_rejected(txid) and txid not in self.mempool and txid not in self._orphans

    def _recently_rejected(self, txid: bytes) -> bool:
        """Refused since the tip last moved (bitcoind's recentRejects, reset the same way)."""
        tip = self.chain.tip.hash
        if tip != self._rejects_tip:
            # A new tip can make a rejected transaction valid (or its inputs known).
            self._recent_rejects.clear()
            self._rejects_tip = tip
        return txid in self._recent_rejects

    def _reject_tx(self, txid: bytes) -> None:
        self._recent_rejects[txid] = None
        if len(self._recent_rejects) > _RECENT_REJECTS_SIZE:
            self._recent_rejects.popitem(last=False)

    def _on_notfound(self, peer: Peer, msg: NotFound) -> None:
        sync = self._sync_peer
        for item in msg.items:
            if (item.type == MSG_BLOCK and item.hash in peer.blocks_in_flight and not self._sync_headers_first
                    and sync is not None and sync is not peer and item.hash in sync.blocks_in_flight):
                self._lost_stall_race(peer)
            if item.type == MSG_BLOCK and peer.blocks_in_flight.pop(item.hash, None) is not None:
                if self._blocks_requested.get(item.hash) == peer.id:   # (not a stall race's second ask)
                    del self._blocks_requested[item.hash]
                if len(peer.blocks_refused) < _MAX_BLOCKS_REFUSED:
                    peer.blocks_refused[item.hash] = peer.blocks_refused.get(item.hash, 0) + 1
            elif item.type == MSG_TX and item.hash in peer.txs_in_flight:
                self._release_tx_request(item.hash, failed=True)
        if self._sync_headers_first and self._sync_peer is not None:
            self._continue_headers_first(self._sync_peer)
        elif self._sync_peer is peer and not peer.blocks_in_flight:
            self._continue_sync(peer)
        self._request_txs(peer)

    def serve_getdata(self, peer: Peer) -> None:
        """Answer queued getdata items: one block, or transactions up to a byte budget, per
        call, and at most _GETDATA_ITEMS_PER_CALL items looked at; unknown items go back in
        one notfound. A block we do not store is known from the index, without a query."""
        missing: list[InvItem] = []
        budget = _GETDATA_TX_BUDGET
        looked = 0
        while peer.getdata_queue and budget > 0 and looked < _GETDATA_ITEMS_PER_CALL:
            looked += 1
            item = peer.getdata_queue.popleft()
            if item.type == MSG_BLOCK:
                idx = self.chain.get_index(item.hash)
                if idx is None or not _has_data(idx):
                    missing.append(item)
                    continue
                if (self._upload_target.limit and self.chain.tip.time - idx.header.time > HISTORICAL_BLOCK_AGE
                        and self._upload_target.reached(self.now(), historical=True)):
                    # bitcoind's -maxuploadtarget: a peer asking for an old block past the target
                    # is dropped, not served (nor told notfound).
                    log.debug("historical block serving limit reached, disconnect peer=%d", peer.id)
                    peer.close("historical block serving limit reached")
                    return
                raw = None
                try:
                    # The stored bytes as they are: a parse and a serialization of a 672 KB
                    # block cost 24 ms of CPU, for 36 bytes of request.
                    raw = self.chain.get_block_raw(item.hash)
                except Exception:
                    log.exception("get_block_raw failed for %s", hash_to_hex(item.hash))
                if raw is None:
                    missing.append(item)
                    continue
                peer.known_inventory.add(item.hash)
                peer.send(RawBlockMessage(raw))
                break                         # one block at a time: let the writer flush it
            if item.type == MSG_TX:
                entry = self.mempool.get(item.hash)
                if entry is None:
                    missing.append(item)
                    continue
                peer.known_inventory.add(item.hash)
                peer.send(TxMessage(entry.tx))
                budget -= entry.tx.size
            # other types: ignored, as Bitcoin does
        for i in range(0, len(missing), MAX_INV):
            peer.send(NotFound(tuple(missing[i:i + MAX_INV])))

    def _on_getblocks(self, peer: Peer, msg: GetBlocks) -> None:
        try:
            hashes = self.chain.hashes_after(list(msg.locator), msg.stop, self.getblocks_limit)
        except Exception:
            log.exception("hashes_after failed")
            hashes = []
        hashes = hashes[:self.getblocks_limit]
        # Always answered, even empty: the requester then knows we have nothing more.
        peer.send(Inv(tuple(InvItem(MSG_BLOCK, h) for h in hashes)))

    # ------------------------------------------------------------------ headers

    def _on_getheaders(self, peer: Peer, msg: GetHeaders) -> None:
        try:
            hashes = self.chain.hashes_after(list(msg.locator), msg.stop, MAX_HEADERS)
        except Exception:
            log.exception("hashes_after failed")
            hashes = []
        headers = [idx.header for idx in map(self.chain.get_index, hashes[:MAX_HEADERS]) if idx is not None]
        # Always answered, even empty, as getblocks is.
        peer.send(Headers(tuple(headers)))

    def _ask_headers(self, peer: Peer, start: bytes) -> None:
        """Ask `peer` for the headers of its best chain after `start` (a block we have), one
        request at a time."""
        now = asyncio.get_running_loop().time()
        if peer.headers_sent_at and now - peer.headers_sent_at < HEADERS_TIMEOUT:
            return
        peer.headers_sent_at = now
        peer.send(GetHeaders(tuple([start, *self.chain.locator()][:101])))

    def _on_headers(self, peer: Peer, msg: Headers) -> None:
        """The answer to our getheaders (anything else is ignored: this node asks for headers
        only for a branch that lags, and announces blocks by inv). The headers must form one
        chain. Each is checked as the chain's `accept_header` does (proof of work, the
        difficulty its parent demands, time), but a branch's headers are stored only once
        they lead to more work than our tip (headers pre-sync, presync.py): until then they
        are counted, per peer, without keeping them. Then the blocks are downloaded from this
        peer as any sync does; below the minimum chain work, headers-first
        (_after_headers_below_minimum)."""
        if not peer.headers_sent_at:
            return
        peer.headers_sent_at = 0.0
        headers_first = self._sync_peer is peer and self._sync_headers_first
        if headers_first:
            peer.last_block_progress = asyncio.get_running_loop().time()     # it answered
        last = self._take_headers(peer, msg.headers)
        if peer.closed:
            return
        if headers_first or self._below_minimum():
            self._after_headers_below_minimum(peer, msg.headers, last)
        elif last is not None:
            self._after_headers(peer, msg.headers, last)

    def _take_headers(self, peer: Peer, headers: Sequence[BlockHeader]) -> Any:
        """Check, count or store an answer (_on_headers); the entry of the last header stored
        or known, or None (still counting, asked again, or refused)."""
        if not headers:
            peer.header_sync = None                 # it has nothing more: the session ends
            return None
        bad_pow = next((h for h in headers if not check_proof_of_work(h.hash, h.bits, self.params)), None)
        if bad_pow is not None:
            # Checked first, connected or not (bitcoind's CheckHeadersPoW): without proof of
            # work a header costs nothing to make.
            peer.header_sync = None
            self.misbehaving(peer, BAN_THRESHOLD, f"header {hash_to_hex(bad_pow.hash)} with invalid proof of work")
            return None
        if any(b.prev_hash != a.hash for a, b in zip(headers, headers[1:])):
            peer.header_sync = None
            self.misbehaving(peer, 20, "non-continuous headers sequence")   # bitcoind's score
            return None
        try:
            return self._process_headers(peer, headers)
        except ValidationError as e:
            peer.header_sync = None
            if e.reason == "prev-blk-not-found" or e.failure in (Failure.TIME_FUTURE, Failure.TOO_LITTLE_WORK):
                # Not necessarily invalid: not connected to what we know, early, or (a
                # redownload's tail) overtaken by our tip meanwhile.
                log.debug("peer=%d: headers not stored: %s", peer.id, e)
                return None
            self.misbehaving(peer, BAN_THRESHOLD, f"invalid header: {e.reason}")
            return None
        except PresyncAbort as e:
            peer.header_sync = None
            log.info("peer=%d: header sync dropped: %s", peer.id, e)
            return None

    def _after_headers_below_minimum(self, peer: Peer, headers: Sequence[BlockHeader], last: Any) -> None:
        """Headers-first (our tip below the minimum chain work, or a session that started
        so): a stored header chain with at least the minimum work becomes the peer's
        download target (Peer.best_header), and more is asked for after a full answer; the
        download starts from it, or moves to it from a sync peer whose headers show no such
        chain; a sync peer whose header chain ended below the minimum ends its session."""
        if last is not None:
            if last.chainwork >= self._minimum_chain_work() and (
                    peer.best_header is None or last.chainwork > peer.best_header.chainwork):
                first, peer.best_header = peer.best_header is None, last
                self._log_header_progress(first, "Synchronizing blockheaders from peer=%d, height: %d "
                                          "(stored: the minimum chain work is reached)", peer.id, last.height)
            if len(headers) == MAX_HEADERS and last.hash == headers[-1].hash:
                self._ask_headers(peer, last.hash)          # more may follow
        sync = self._sync_peer
        if self._download_target(peer) is not None:
            peer.best_announced = peer.best_header.hash
            peer.sync_exhausted = False
            if sync is None:
                self._start_sync(peer)
                return
            if sync is not peer and (not self._sync_headers_first or self._download_target(sync) is None):
                log.info("peer=%d: its headers show the minimum chain work, peer=%d's do not: "
                         "block download moves to peer=%d", peer.id, sync.id, peer.id)
                if sync.headers_sent_at:
                    self._charge_wasted(sync, "left getheaders unanswered while another peer answered")
                self._sync_peer = None
                self._start_sync(peer)
                return
        if sync is peer and self._sync_headers_first:
            self._continue_sync(peer)
        elif self._sync_headers_first:
            self._fill_download()          # (it may serve the download now)

    def _after_headers(self, peer: Peer, headers: Sequence[BlockHeader], last: Any) -> None:
        """Above the minimum chain work: headers of a branch with more work than our tip move
        the block download to it (blocks-first, from the fork)."""
        best, tip = self.chain.best_header, self.chain.tip
        if best.chainwork <= tip.chainwork:
            if len(headers) == MAX_HEADERS and last.hash == headers[-1].hash:
                self._ask_headers(peer, last.hash)          # more may follow
            return
        log.info("peer=%d: headers lead to more work than our tip (height %d, header %d): "
                 "downloading that branch", peer.id, tip.height, best.height)
        peer.best_announced = best.hash
        peer.sync_exhausted = False
        if self._sync_peer is None:
            self._start_sync(peer)
        elif self._sync_peer is peer:
            if not peer.getblocks_sent_at and not peer.blocks_in_flight:
                self._send_getblocks(peer, self.chain.locator())
            else:
                # Blocks of this branch it sent before the headers came were refused (they
                # lagged); the session's next round asks from the fork again.
                peer.refetch_from_fork = True
        elif best.height < tip.height or self.chain.ancestor(best, tip.height).hash != tip.hash:
            # Our tip is not on the branch these headers show more work on: the sync peer
            # is feeding us a chain that loses. One that kept its session alive with a block
            # now and then (a cheap chain costs little) kept us from the real chain for as
            # long as it went on; the download goes to the peer that showed the work.
            old = self._sync_peer
            log.info("peer=%d: headers lead to more work than the chain peer=%d is feeding us: "
                     "block download moves to peer=%d", peer.id, old.id, peer.id)
            old.sync_exhausted = True
            self._sync_peer = None
            self._start_sync(peer)

    def _process_headers(self, peer: Peer, headers: Sequence[BlockHeader]) -> Any:
        """Count or store a continuous answer (see _on_headers); returns the entry of the
        last header stored or known, or None while the branch is still being counted or
        asked for again. Raises ValidationError, PresyncAbort."""
        full = len(headers) == MAX_HEADERS
        # What a branch must exceed to be stored: our tip's work, or the minimum chain work
        # when that is more (presync.work_threshold).
        tip_work = work_threshold(self.chain.tip.chainwork, getattr(self.chain, "minimum_chain_work", 0))
        sync = peer.header_sync
        if sync is not None and sync.expects(headers[0]):
            if sync.redownloading:
                batch = sync.redownload(headers)
                last = self.chain.accept_headers(batch.verified, min_work_checked=True)
                if not batch.done:
                    if self._below_minimum():
                        self._log_header_progress(False, "Synchronizing blockheaders from peer=%d, height: %d "
                                                  "(storing the %d counted)", peer.id, last.height,
                                                  sync.final.height)
                    self._ask_headers(peer, sync.stored_hash)
                    return None
                peer.header_sync = None
                log.info("peer=%d: stored the %d headers counted above height %d",
                         peer.id, sync.final.height - sync.base_height, sync.base_height)
                return self.chain.accept_headers(batch.beyond) if batch.beyond else last
            sync.presync(self.chain, headers, tip_work)
            return self._after_presync(peer, sync, full, tip_work)
        # A new session, from the last header of the answer we already know.
        peer.header_sync = None
        known: Any = None
        skip = 0
        for header in headers:
            idx = self.chain.get_index(header.hash)
            if idx is None:
                break
            if getattr(idx, "failed", False):
                self.chain.accept_headers((header,))        # raises: known invalid
            known, skip = idx, skip + 1
        rest = headers[skip:]
        if not rest:
            return known
        link = self.chain.header_link(rest[0].prev_hash)
        if link is None:
            self.chain.accept_headers(rest)         # raises: unknown or invalid parent
            raise RuntimeError("accept_headers stored headers with an unusable parent")
        sync = HeaderSync.start(link)
        sync.presync(self.chain, rest, tip_work)
        if sync.last.chainwork > tip_work:
            # The whole branch is in this answer: stored now, no second round.
            if self._below_minimum():
                self._log_header_progress(True, "Pre-synchronizing blockheaders from peer=%d, height: %d "
                                          "(the minimum chain work is reached in one answer)",
                                          peer.id, sync.last.height)
            return self.chain.accept_headers(rest)
        peer.header_sync = sync
        return self._after_presync(peer, sync, full, tip_work)

    def _after_presync(self, peer: Peer, sync: HeaderSync, full: bool, tip_work: int) -> None:
        """After counting an answer: ask for the branch again when it has more work than our
        tip, for more when the answer was full, or end the session (less work: nothing
        stored, nothing kept)."""
        if self._below_minimum():
            self._log_header_progress(sync.counted <= MAX_HEADERS,
                                      "Pre-synchronizing blockheaders from peer=%d, height: %d (~%.1f%% of "
                                      "the minimum chain work; counted, not stored)", peer.id, sync.last.height,
                                      min(100.0, 100.0 * sync.last.chainwork / self._minimum_chain_work()))
        if sync.last.chainwork > tip_work:
            log.info("peer=%d: %d headers above height %d lead to more work than our tip: "
                     "asking for them again to store them", peer.id, sync.counted, sync.base_height)
            sync.start_redownload()
            self._ask_headers(peer, sync.base_hash)
        elif full:
            self._ask_headers(peer, sync.last.hash)         # more may follow
        else:
            log.debug("peer=%d: %d headers above height %d have less work than our tip: not stored",
                      peer.id, sync.counted, sync.base_height)
            peer.header_sync = None
        return None

    # ------------------------------------------------------------------ blocks

    def _on_block(self, peer: Peer, msg: BlockMessage) -> None:
        block = msg.block
        h = block.hash
        peer.known_inventory.add(h)
        loop_now = asyncio.get_running_loop().time()
        first = next(iter(peer.blocks_in_flight), None)
        requested = peer.blocks_in_flight.pop(h, None) is not None
        if requested:
            peer.last_block_progress = loop_now
            if h == peer.stalling_block:
                # The block the window waits for. (bitcoind ends a stall on any block from
                # the staller: a peer sending its other blocks first, one every 3 s, against
                # a timeout doubled to 4 s, held the window's first block for 90 s here.)
                peer.stalling_since, peer.stalling_block = 0.0, None
            if h == first:
                # Its oldest request is in: the next one's wait counts from now.
                peer.downloading_since = max(peer.downloading_since, loop_now)
        # Asked of it because the sync peer held it too long (_check_sync_peer_stall)?
        raced = (requested and not self._sync_headers_first and self._sync_peer is not None
                 and self._sync_peer is not peer and h in self._sync_peer.blocks_in_flight)
        if self._blocks_requested.get(h) == peer.id:
            del self._blocks_requested[h]
        race_holder = self._stall_races.get(h) if requested else None
        if not requested and self._below_minimum() and not self._unrequested_block_may_count(peer, block):
            return
        old_tip, old_height = self.chain.tip.hash, self.chain.tip.height
        try:
            result = self.chain.accept_block(block)
        except ValidationError as e:
            if e.reason == "prev-blk-not-found":
                log.debug("peer=%d: block %s has an unknown parent; asking for the chain",
                          peer.id, block.hash_hex)
                self._on_orphan(peer)
            elif e.failure is Failure.TIME_FUTURE:
                log.info("peer=%d: block %s too far in the future: %s", peer.id, block.hash_hex, e)
            elif e.failure is Failure.TOO_LITTLE_WORK:
                # Not invalid, and not stored: an honest peer on a long-lost branch sends these
                # too, and so does the real chain when a cheap one reached us first. Its
                # headers tell which: once they show more work than our tip, the branch's
                # blocks are stored (_on_headers).
                log.debug("peer=%d: block %s not stored: %s", peer.id, block.hash_hex, e)
                self._ask_headers(peer, block.header.prev_hash)
            else:
                self.misbehaving(peer, BAN_THRESHOLD, f"invalid block {block.hash_hex}: {e.reason}")
                return
        else:
            if not getattr(result, "already_have", False):
                peer.last_block_time = loop_now        # a new block: this peer is useful (eviction)
            idx = self.chain.get_index(h)
            if idx is not None:
                peer.synced_blocks = max(peer.synced_blocks, idx.height)
            if self.chain.tip.hash != old_tip:
                self._report_progress()
                self._stall_timeout.after_blocks(self.chain.tip.height - old_height)
            if raced:
                self._won_stall_race(peer, h, loop_now)
            if race_holder is not None:
                self._end_stall_race(peer, h, race_holder, loop_now)
        if self._sync_headers_first and self._sync_peer is not None:
            # Parallel download (block_window.py): refilled once half of the peer's places
            # are free (per block: a getdata a block, and 25 % more CPU for a 2050-block sync).
            # A peer left idle by a full window is refilled as soon as the tip moves.
            if (len(peer.blocks_in_flight) <= MAX_BLOCKS_IN_TRANSIT_PER_PEER // 2
                    or (self.chain.tip.hash != old_tip
                        and any(p.best_header is not None and not p.blocks_in_flight for p in self._peers.values()))):
                self._continue_headers_first(self._sync_peer)
            if not peer.blocks_in_flight and self._sync_peer is not peer:
                self._announce_tip()
        elif not peer.blocks_in_flight:
            if self._sync_peer is peer:
                self._continue_sync(peer)
            if self._sync_peer is not peer:
                self._announce_tip()          # (a relayed block during someone else's sync too)

    def _unrequested_block_may_count(self, peer: Peer, block: Any) -> bool:
        """Below the minimum chain work: whether a block nobody asked for is looked at. Not
        when its chain would have less work than the minimum (bitcoind's AcceptBlock returns
        early for such a block): a peer could otherwise have any chain it likes stored,
        validated and connected by a node that is still catching up; nor when it lies more
        than MAX_UNREQUESTED_AHEAD heights above our tip (fTooFarAhead there). Its proof of work is
        not checked here: claimed work that is not there fails accept_block's check. An
        unknown parent makes its sender a source of headers (_on_orphan)."""
        parent = self.chain.get_index(block.header.prev_hash)
        if parent is None:
            log.debug("peer=%d: unrequested block %s with an unknown parent, below the minimum chain "
                      "work: not read; asking for headers", peer.id, block.hash_hex)
            self._on_orphan(peer)
            return False
        if parent.chainwork + block_proof(block.header.bits) < self._minimum_chain_work():
            log.debug("peer=%d: unrequested block %s below the minimum chain work: not stored",
                      peer.id, block.hash_hex)
            return False
        if parent.height + 1 > self.chain.tip.height + MAX_UNREQUESTED_AHEAD:
            # bitcoind's fTooFarAhead. Before 12-07 a header chain of the minimum work (anyone's:
            # the real chain's, relayed) let a peer have any number of blocks forking from its
            # top stored unasked, however far above our tip (20 of 0.73 MB at height 2051 over
            # a tip at 0: +16.7 MB of database). The download asks for its blocks itself.
            log.debug("peer=%d: unrequested block %s at height %d, too far above our tip (%d): not stored",
                      peer.id, block.hash_hex, parent.height + 1, self.chain.tip.height)
            return False
        return True

    def _announce_tip(self) -> None:
        """Tell peers about our tip if it changed since we last did (end of a batch)."""
        tip = self.chain.tip.hash
        if tip != self._announced_tip:
            self.announce_block(tip)

    # ------------------------------------------------------------------ block download

    def _best_peer_height(self) -> int:
        """The IBD target: the highest start height a peer reported, or our own height.
        (Blocks-first download learns no heights ahead of time, so a peer that was behind
        at its handshake cannot raise the target.)"""
        heights = [p.start_height for p in self._peers.values() if p.handshake_done]
        return int(max([self.chain.tip.height, *heights]))

    def _peer_ahead(self, peer: Peer) -> bool:
        if not peer.handshake_done or peer.closed or peer.sync_exhausted:
            return False
        if peer.start_height > self.chain.tip.height:
            return True
        return peer.best_announced is not None and not self._have_block(peer.best_announced)

    def _have_block(self, h: bytes) -> bool:
        idx = self.chain.get_index(h)
        return idx is not None and _has_data(idx)

    def _maybe_start_sync(self) -> None:
        """Pick a sync peer if none is active and some peer is ahead of us. Outbound peers
        come first (bitcoind's preferred download peers): an inbound connection can be
        anyone's, and its claimed height costs nothing; an inbound sync peer gives the
        download up to an outbound peer that is ahead."""
        current = self._sync_peer
        if current is not None:
            if current.inbound and any(not p.inbound and self._peer_ahead(p) for p in self._peers.values()):
                log.info("Block download: outbound peer ahead, leaving inbound peer=%d", current.id)
                self._finish_sync(current, exhausted=False)   # picks the outbound one
            return
        candidates = [p for p in self._peers.values() if self._peer_ahead(p)]
        if not candidates:
            self._announce_tip()
            return
        outbound = [p for p in candidates if not p.inbound]
        # Fewest wasted sessions first: a claimed height costs nothing (failed_sessions.py).
        peer = max(outbound or candidates,
                   key=lambda p: (-self._failed_sessions.count(p.host), p.start_height, -p.id))
        self._start_sync(peer)

    def _start_sync(self, peer: Peer, *, answered: bool = False) -> None:
        """Make `peer` the sync peer and ask it for blocks (`answered`: blocks-first, its
        answer to a getblocks is already in)."""
        self._sync_peer = peer
        self._sync_race = None                      # (a racer that won, or a new session)
        tip = self.chain.tip
        self._sync_started_at = self._progress_at = asyncio.get_running_loop().time()
        self._sync_start_height = self._progress_height = tip.height
        self._sync_start_tip = tip.hash
        self._progress_final = False
        self._end_headers_first()
        if self._below_minimum():
            self._sync_headers_first = True
            peer.last_block_progress = self._sync_started_at
            behind = max(0.0, self.now() - tip.time) / max(self.params.target_spacing, 1)
            self._headers_sync_deadline = (self._sync_started_at + self.headers_sync_timeout
                                           + HEADERS_SYNC_TIMEOUT_PER_HEADER * behind)
            log.info("Block download from peer=%d %s: height %d, peer reports %d; below the minimum "
                     "chain work: headers-first", peer.id, peer.addr, tip.height, peer.start_height)
            if self._download_target(peer) is None:
                self._ask_headers(peer, self._header_start(peer))
            else:
                self._continue_sync(peer)
            return
        log.info("Block download from peer=%d %s: height %d, peer reports %d",
                 peer.id, peer.addr, tip.height, peer.start_height)
        if not answered:
            self._send_getblocks(peer, self.chain.locator())

    # ------------------------------------------------------------------ below the minimum chain work

    def _minimum_chain_work(self) -> int:
        return int(getattr(self.chain, "minimum_chain_work", 0))

    def _below_minimum(self) -> bool:
        """Whether our tip has less work than the minimum chain work (-minimumchainwork): then
        blocks are downloaded headers-first ("Block download")."""
        minimum = self._minimum_chain_work()
        return minimum > 0 and self.chain.tip.chainwork < minimum

    def _download_target(self, peer: Peer) -> Any | None:
        """The stored header up to which `peer`'s blocks may be downloaded headers-first: the
        best header it showed, when its chain has at least the minimum chain work and more
        work than our tip; else None."""
        if peer.best_header is None:
            return None
        best = self.chain.get_index(peer.best_header.hash)      # (its status may have changed)
        if (best is None or getattr(best, "failed", False) or best.chainwork < self._minimum_chain_work()
                or best.chainwork <= self.chain.tip.chainwork):
            return None
        return best

    def _header_start(self, peer: Peer) -> bytes:
        """Where to ask `peer`'s headers from: the best stored header it showed, or our tip."""
        best = peer.best_header
        return best.hash if best is not None and self.chain.get_index(best.hash) is not None else self.chain.tip.hash

    def _end_headers_first(self) -> None:
        self._sync_headers_first = False
        self._header_download = None
        self._stall_races.clear()

    def _continue_headers_first(self, peer: Peer) -> None:
        """Headers-first session (`peer` is the sync peer): follow its header chain
        (HeaderDownload) and ask every peer that has it for the window's next blocks
        (_fill_download). Once no block is in flight from anyone and none can be asked for:
        at or above the minimum chain work the session goes on blocks-first, as any session
        above it; below it, once no header of that peer's is on its way, its chain has shown
        too little work (or its blocks did not come, each refused twice): the session ends."""
        target = self._download_target(peer)
        plan = self._header_download
        if target is not None:
            if plan is None:
                plan = self._header_download = HeaderDownload.start(self.chain, target)
            else:
                plan.retarget(self.chain, target)
        if plan is not None:
            self._fill_download()
            if any(p.blocks_in_flight for p in self._peers.values()) or self._sync_peer is not peer:
                return
        if not self._below_minimum():
            log.info("Block download from peer=%d: the minimum chain work is reached at height %d, "
                     "going on blocks-first", peer.id, self.chain.tip.height)
            self._end_headers_first()
            self._send_getblocks(peer, self.chain.locator())
            return
        if peer.headers_sent_at or peer.header_sync is not None:
            return                                  # its headers are still coming
        if target is None:
            log.info("Block download from peer=%d: its headers show less than the minimum chain work; "
                     "no block asked for", peer.id)
        else:
            log.info("Block download from peer=%d: the blocks of its headers up to height %d did not "
                     "come (asked twice); session ended", peer.id, target.height)
        self._finish_sync(peer, exhausted=True)

    def _check_headers_sync_deadline(self, loop_now: float) -> None:
        """A headers-first sync peer whose headers show no chain of the minimum chain work by
        the session's deadline is disconnected when another peer is ahead (bitcoind's
        headers sync timeout): one that answers every getheaders at once with more headers
        of a cheap chain never stalls, and held the download for as long as it went on, with
        no other peer asked for headers (tests/test_p2p_headers_first.py: 30,000 headers
        counted in 8 s, the honest peer never asked)."""
        sync = self._sync_peer
        if (sync is None or not self._sync_headers_first or loop_now <= self._headers_sync_deadline
                or self._download_target(sync) is not None
                or not any(p is not sync and self._peer_ahead(p) for p in self._peers.values())):
            return
        log.info("peer=%d %s: headers sync timed out (no chain of the minimum chain work shown in "
                 "%.0f s), disconnecting", sync.id, sync.addr, loop_now - self._sync_started_at)
        sync.close("headers sync timeout")
        self._forget_peer(sync)

    def _fill_download(self) -> None:
        """Headers-first, with a plan: ask each peer whose headers lead along the plan's
        branch for the download window's next blocks, up to MAX_BLOCKS_IN_TRANSIT_PER_PEER in
        flight (block_window.next_blocks); a peer that finds nothing only because another
        holds the window's first missing block marks that one as stalling (disconnected in
        _check_block_stalls). Inbound peers are asked only while no outbound peer serves the
        branch or one that does is overdue (_outbound_downloads_well). A peer that is ahead
        but has shown no headers of the branch is asked for them once per target, from the
        target's parent: its answer (one header, or more) says whether it has the branch.
        Before 12-07 only the sync peer was asked for blocks, 500 at a time: one block every
        119 s from it held the download for days while a peer with every block was connected
        (test_p2p_min_chain_work_stall.py)."""
        plan = self._header_download
        if plan is None:
            return
        loop_now = asyncio.get_running_loop().time()
        peers = [p for p in self._peers.values() if not p.closed and p.handshake_done]
        outbound_only = self._outbound_downloads_well(plan, peers, loop_now)
        for p in peers:
            height = self._serve_height(p, plan)
            if height < 0:
                if (p.asked_headers_for != plan.target.hash and not p.headers_sent_at
                        and p.header_sync is None and self._peer_ahead(p)):
                    p.asked_headers_for = plan.target.hash
                    self._ask_headers(p, plan.target.prev)
                continue
            free = MAX_BLOCKS_IN_TRANSIT_PER_PEER - len(p.blocks_in_flight)
            if free <= 0:
                continue
            hashes, stall = next_blocks(self.chain, plan, peer_id=p.id, serve_height=height, count=free,
                                          requested=self._blocks_requested, refused=p.blocks_refused)
            if p.inbound and outbound_only and not p.blocks_in_flight:
                # Not asked (one let in while an outbound peer was overdue, still downloading,
                # is refilled); but one that finds the window full still names its staller:
                # it would wait for the stalling timeout to let it in first, and a slow
                # outbound peer delivering just within twice that would never be found.
                hashes = []
            if hashes:
                self._request_blocks(p, hashes)
            elif stall is not None and not p.blocks_in_flight:
                holder = self._peers.get(stall.peer_id)
                if holder is not None and not holder.stalling_since:
                    holder.stalling_since, holder.stalling_block = loop_now, stall.block
                    log.debug("peer=%d stalls the block download window at height %d (peer=%d waits)",
                              holder.id, stall.height, p.id)

    def _outbound_downloads_well(self, plan: HeaderDownload, peers: Sequence[Peer], loop_now: float) -> bool:
        """Whether the download's blocks are asked of outbound peers only: some outbound peer
        serves the plan's branch and none that does has awaited its oldest requested block
        for longer than the stalling timeout. bitcoind's fFetch asks only its preferred
        download peers (outbound: we chose them; an inbound connection is anyone's) during
        the initial download when it has any. Before 12-07 (later that day) every inbound peer that
        relayed the headers was asked for 16 blocks of the window: eight that never sent one
        stopped the tip for minutes (until the outbound peer alone had filled the window),
        then cost a stalling timeout each, and again each time they reconnected
        (test_p2p_min_chain_work_stall.py, variant 7). An outbound peer that is slow itself
        lets the inbound ones in, so that they can fetch the window and find it the staller
        (variant 8)."""
        serving = [p for p in peers if not p.inbound and self._serve_height(p, plan) >= 0]
        return bool(serving) and all(not p.blocks_in_flight
                                     or loop_now - p.downloading_since <= self._stall_timeout.seconds
                                     for p in serving)

    def _serve_height(self, peer: Peer, plan: HeaderDownload) -> int:
        """block_window.serve_height for `peer`, walked once per best header and target."""
        if peer.best_header is None:
            return -1
        key = (peer.best_header.hash, plan.target.hash)
        if peer.serve_key != key:
            peer.serve_key = key
            peer.serve_up_to = serve_height(self.chain, plan, peer.best_header, self.chain.ancestor)
        return peer.serve_up_to

    def _check_block_stalls(self, loop_now: float) -> None:
        """Headers-first: disconnect a peer that has stalled the download window for the
        stalling timeout (then doubled for the next), and one whose oldest requested block
        is overdue (bitcoind's block download timeout: the base, plus half of it for each
        other peer we download from)."""
        downloading = sum(1 for p in self._peers.values() if p.blocks_in_flight)
        for p in list(self._peers.values()):
            if p.closed:
                continue
            if p.stalling_block not in p.blocks_in_flight:
                p.stalling_since, p.stalling_block = 0.0, None      # (no longer holds it)
            if (p.stalling_since and self._stall_timeout.seconds > BLOCK_STALLING_TIMEOUT_DEFAULT
                    and p.stalling_block not in self._stall_races
                    and loop_now - p.stalling_since > BLOCK_STALLING_TIMEOUT_DEFAULT):
                self._race_stalled_block(p, loop_now)
            if p.stalling_since and loop_now - p.stalling_since > self._stall_timeout.seconds:
                self._drop_staller(p, p.stalling_block or b"", loop_now - p.stalling_since)
            elif (p.blocks_in_flight and loop_now - p.downloading_since
                    > download_timeout(self.block_download_timeout, downloading - 1)):
                log.info("peer=%d %s: timeout downloading block %s (%.0f s), disconnecting", p.id, p.addr,
                         hash_to_hex(next(iter(p.blocks_in_flight))), loop_now - p.downloading_since)
                p.close("block download timeout")
                self._forget_peer(p)

    def _race_stalled_block(self, holder: Peer, loop_now: float) -> None:
        """Headers-first: `holder` has stalled the window for the default stalling timeout
        (2 s) while the doubling has made the timeout in force longer: its block is asked of
        every peer that serves it and has nothing in flight, and the first to deliver it ends
        the stall (_end_stall_race; a deliverer other than `holder` gets it disconnected as
        the staller). Before 12-07 (later that day) only the timeout in force applied, doubled by
        each staller's disconnection and shrunk only by blocks that move the tip: connections
        of one attacker, each serving its blocks but the window's first, were asked in turn
        for the block the last one had held and held it twice as long (2, 4, 8, 16, 32 s:
        the tip at 0 for over a minute while an honest peer with every block waited;
        test_p2p_min_chain_work_stall.py, variant 11)."""
        plan = self._header_download
        block = holder.stalling_block
        idx = self.chain.get_index(block) if plan is not None and block is not None else None
        if idx is None:
            return
        racers = [q for q in self._peers.values()
                  if q is not holder and not q.closed and q.handshake_done and not q.blocks_in_flight
                  and q.blocks_refused.get(block, 0) < MAX_REFUSALS and self._serve_height(q, plan) >= idx.height]
        if not racers:
            return                          # (the next pass looks again)
        self._stall_races[block] = holder.id
        log.debug("peer=%d has held block %s for %.1f s: asking peer=%s for it too", holder.id, hash_to_hex(block),
                  loop_now - holder.stalling_since, ",".join(str(q.id) for q in racers))
        for q in racers:
            q.blocks_in_flight[block] = loop_now
            q.downloading_since = q.last_block_progress = loop_now
            q.send(GetData((InvItem(MSG_BLOCK, block),)))

    def _end_stall_race(self, peer: Peer, block: bytes, holder_id: int, loop_now: float) -> None:
        """Headers-first: `peer` delivered `block`, stored now, for which a stall race was
        on (_race_stalled_block): nobody else is waited for it; when `peer` is not the
        staller, the staller is disconnected (the timeout doubled for the next one, after
        the decay the stored block brought)."""
        del self._stall_races[block]
        self._blocks_requested.pop(block, None)
        for q in self._peers.values():
            if q is not peer:
                q.blocks_in_flight.pop(block, None)
        holder = self._peers.get(holder_id)
        if holder is not None and holder is not peer and not holder.closed:
            self._drop_staller(holder, block, loop_now - holder.stalling_since if holder.stalling_since else 0.0)

    def _check_sync_peer_stall(self, loop_now: float) -> None:
        """Blocks-first (one sync peer, above the minimum chain work): the sync peer holds
        the next block our tip waits for, and no other peer can be asked while it has the
        session. When its oldest requested block has been awaited for the stalling timeout
        while another peer is ahead and idle, that block is asked of the idle peer too (one
        at a time, outbound peers first, the next one when that one has not delivered it
        within the stalling timeout either): whichever delivers it first wins, and when that is
        the other peer the sync peer has stalled the download, as a peer holding the
        window's first block does headers-first (block_window.py), and is disconnected the
        same way (_on_block; the timeout doubled for the next). Before 12-07 only the 120 s
        without any block applied: one block every 3 s held the download for as long as it
        went on. Until 12-07 (later that day) the sync peer was disconnected at once: "ahead and
        idle" is a number in a version message, so an attacker claiming a high chain and
        answering nothing had every sync peer slower than the timeout disconnected, then
        held the download itself until its block download timeout (120 s)."""
        self._charge_unanswered_race(loop_now)
        sync = self._sync_peer
        if sync is None or sync.closed:
            return
        if sync.getblocks_sent_at and not sync.blocks_in_flight:
            self._race_getblocks(sync, loop_now)
            return
        if not sync.blocks_in_flight or loop_now - sync.downloading_since <= self._stall_timeout.seconds:
            return
        block = next(iter(sync.blocks_in_flight))
        timeout = self._stall_timeout.seconds
        others = [p for p in self._peers.values() if p is not sync and not p.closed]
        if any(block in p.blocks_in_flight and loop_now - p.blocks_in_flight[block] <= timeout for p in others):
            return                      # (asked of another already; one that is slow too: the next)
        idle = [p for p in others if not p.blocks_in_flight and not p.blocks_refused.get(block)
                and self._peer_ahead(p)]
        if not idle:
            return
        racer = _first_to_race(idle, self._failed_sessions)
        log.debug("peer=%d has held block %s for %.1f s: asking peer=%d for it too", sync.id,
                  hash_to_hex(block), loop_now - sync.downloading_since, racer.id)
        racer.downloading_since = racer.last_block_progress = loop_now
        racer.blocks_in_flight[block] = loop_now
        racer.send(GetData((InvItem(MSG_BLOCK, block),)))
        self._sync_race = (racer.id, block)

    def _charge_unanswered_race(self, loop_now: float) -> None:
        """Blocks-first: the peer last asked in a stall race (_check_sync_peer_stall,
        _race_getblocks) that has held the block or the getblocks for the stalling timeout
        wasted a session: its address is asked last from now on, as a sync peer's that lost
        a race (leaving with it unanswered is charged in _forget_peer). Before 12-07 (night)
        it cost nothing: connections claiming a higher chain than an honest idle peer, each
        leaving once asked and coming back from the same address, were raced before the
        honest peer for as long as they went on (the victim not at the tip 60 s after the
        honest peer came; test_p2p_sync_races.py)."""
        race = self._sync_race
        if race is None:
            return
        racer_id, block = race
        racer = self._peers.get(racer_id)
        if racer is None or racer.closed:
            self._sync_race = None                  # (gone: charged in _forget_peer if it owed)
            return
        asked_at = (racer.blocks_in_flight.get(block) if block is not None
                    else racer.getblocks_sent_at or racer.headers_sent_at or None)
        if asked_at is None:
            self._sync_race = None                  # (answered)
        elif loop_now - asked_at > self._stall_timeout.seconds:
            self._sync_race = None
            self._charge_wasted(racer, "left a stall race unanswered past the stalling timeout")

    def _race_getblocks(self, sync: Peer, loop_now: float) -> None:
        """Blocks-first: the sync peer has left our getblocks unanswered for the stalling
        timeout: send it to an idle peer that is ahead too (one at a time, outbound first,
        the next when that one has not answered within the stalling timeout either); the
        first to answer has the session (_on_inv). Before 12-07 (later that day) only the block
        download timeout (120 s) applied: an attacker that connected first claiming a higher
        chain than anyone's and answered nothing held the download that long while an honest
        peer with every block waited, and again after each reconnection."""
        if loop_now - sync.getblocks_sent_at <= self._stall_timeout.seconds:
            return
        timeout = self._stall_timeout.seconds
        others = [p for p in self._peers.values() if p is not sync and not p.closed]
        if any(p.getblocks_sent_at and loop_now - p.getblocks_sent_at <= timeout for p in others):
            return                                  # (the race is on; one that is slow too: the next)
        idle = [p for p in others if not p.blocks_in_flight and not p.getblocks_sent_at and self._peer_ahead(p)]
        if not idle:
            return
        racer = _first_to_race(idle, self._failed_sessions)
        log.debug("peer=%d has left getblocks unanswered for %.1f s: asking peer=%d too", sync.id,
                  loop_now - sync.getblocks_sent_at, racer.id)
        self._send_getblocks(racer, self.chain.locator())
        self._sync_race = (racer.id, None)

    def _race_getheaders(self, loop_now: float) -> None:
        """Headers-first, before any header chain of the minimum work is known: the sync
        peer has left our getheaders unanswered for the stalling timeout: ask an idle peer
        that is ahead for headers too (one at a time, fewest wasted sessions first, the next
        when that one has not answered within the stalling timeout either); a peer whose
        headers show the minimum chain work takes the download over
        (_after_headers_below_minimum), and the sync peer's address is charged. Before 12-07
        (night) only the 120 s getheaders timeout applied, and headers-first sessions were
        never charged: connections claiming a far higher chain than an honest peer and
        answering nothing held a fresh node's download (height 0 of 2050 60 s after the
        honest peer came, asked for nothing but a ping), for as long as they reconnected."""
        sync = self._sync_peer
        if (sync is None or sync.closed or self._header_download is not None or not sync.headers_sent_at
                or loop_now - sync.headers_sent_at <= self._stall_timeout.seconds):
            return
        timeout = self._stall_timeout.seconds
        others = [p for p in self._peers.values() if p is not sync and not p.closed and p.handshake_done]
        if any(p.headers_sent_at and loop_now - p.headers_sent_at <= timeout for p in others):
            return                                  # (the race is on; one that is slow too: the next)
        idle = [p for p in others if not p.headers_sent_at and p.header_sync is None and self._peer_ahead(p)]
        if not idle:
            return
        racer = _first_to_race(idle, self._failed_sessions)
        log.debug("peer=%d has left getheaders unanswered for %.1f s: asking peer=%d too", sync.id,
                  loop_now - sync.headers_sent_at, racer.id)
        self._ask_headers(racer, self.chain.tip.hash)
        self._sync_race = (racer.id, None)

    def _lost_stall_race(self, peer: Peer) -> None:
        """Blocks-first: `peer`, ahead of us, was asked for the block the sync peer has held
        for the stalling timeout (_check_sync_peer_stall) and says it has no such block: the
        sync peer feeds a chain the other does not have. The session moves to `peer` (the
        sync peer keeps its connection, and the blocks it still holds are asked of whoever
        has them): otherwise a sync peer answering getblocks with made-up hashes it never
        delivers held the download for its block download timeout (120 s)."""
        sync = self._sync_peer
        if sync is None or not self._peer_ahead(peer):
            return
        log.info("peer=%d has no block peer=%d has held past the stalling timeout: block download moves",
                 peer.id, sync.id)
        for h in sync.blocks_in_flight:
            if self._blocks_requested.get(h) == sync.id:
                del self._blocks_requested[h]
        sync.blocks_in_flight.clear()
        sync.getblocks_sent_at = 0.0
        self._charge_wasted(sync, "held a block nobody else has past the stalling timeout")
        self._sync_peer = None
        self._start_sync(peer)

    def _won_stall_race(self, peer: Peer, block: bytes, loop_now: float) -> None:
        """Blocks-first: `peer` delivered `block`, asked of it because the sync peer had held
        it for the stalling timeout (_check_sync_peer_stall), before the sync peer did: the
        sync peer stalled the download and is disconnected; `peer` takes the session over."""
        sync = self._sync_peer
        if sync is None or sync is peer or block not in sync.blocks_in_flight:
            return
        self._sync_peer = None                      # (so that dropping it starts no other session)
        self._charge_wasted(sync, "stalled the download")
        self._drop_staller(sync, block, loop_now - sync.downloading_since)
        if self._sync_peer is None and self._peer_ahead(peer):
            self._start_sync(peer)
        else:
            self._maybe_start_sync()

    def _drop_staller(self, peer: Peer, block: bytes, held: float) -> None:
        """Disconnect `peer` for stalling the download (it held `block` for `held` seconds);
        the next staller gets twice the time (StallTimeout.after_stall)."""
        log.info("peer=%d %s is stalling block download (block %s held %.1f s, the stalling timeout "
                 "%.0f s), disconnecting", peer.id, peer.addr, hash_to_hex(block), held, self._stall_timeout.seconds)
        self._stall_timeout.after_stall()
        peer.close("stalling block download")
        self._forget_peer(peer)

    def _request_blocks(self, peer: Peer, hashes: Sequence[bytes]) -> None:
        loop_now = asyncio.get_running_loop().time()
        if not peer.blocks_in_flight:
            peer.downloading_since = loop_now
        for h in hashes:
            self._blocks_requested[h] = peer.id
            peer.blocks_in_flight[h] = loop_now
        peer.last_block_progress = loop_now
        for i in range(0, len(hashes), MAX_INV):
            peer.send(GetData(tuple(InvItem(MSG_BLOCK, h) for h in hashes[i:i + MAX_INV])))

    def _log_header_progress(self, force: bool, text: str, *args: Any) -> None:
        """A header sync progress line (bitcoind's "Pre-synchronizing blockheaders"): when
        `force`, else at most every _PROGRESS_INTERVAL seconds."""
        loop_now = asyncio.get_running_loop().time()
        if force or loop_now - self._header_log_at >= _PROGRESS_INTERVAL:
            self._header_log_at = loop_now
            log.info(text, *args)

    def _on_orphan(self, peer: Peer) -> None:
        if self._sync_peer is None:
            peer.sync_exhausted = False
            self._start_sync(peer)
        elif self._sync_peer is peer:
            if self._sync_headers_first:
                self._ask_headers(peer, self._header_start(peer))
            elif not peer.getblocks_sent_at and not peer.blocks_in_flight:
                self._send_getblocks(peer, self.chain.locator())
        else:
            # A block we cannot place, from a peer other than the one feeding us: its chain
            # may have more work than the one we are being fed. Its headers tell (_on_headers
            # moves the download to it if they do); otherwise a sync peer that never lets its
            # session end would keep us from that chain for good.
            self._ask_headers(peer, self.chain.tip.hash)

    def _send_getblocks(self, peer: Peer, locator: list[bytes]) -> None:
        loop_now = asyncio.get_running_loop().time()
        locator = locator[:101]
        peer.getblocks_sent_at = loop_now
        peer.last_block_progress = loop_now
        peer.getblocks_first = locator[0] if locator else None
        peer.send(GetBlocks(tuple(locator)))

    def _continue_sync(self, peer: Peer) -> None:
        """The sync peer's batch is in: ask for the next one, or end the sync with it."""
        if self._sync_headers_first:
            self._continue_headers_first(peer)
            return
        if peer.getblocks_sent_at:
            return                        # a request is already out
        start = peer.sync_continue_from
        peer.sync_continue_from = None
        if peer.refetch_from_fork:
            peer.refetch_from_fork = False
            self._send_getblocks(peer, self.chain.locator())
            return
        if start is not None and self._have_block(start):
            # Continue from the batch's last block, which is on the peer's best chain even
            # when it is not (yet) on ours, then our own locator as a fallback.
            self._send_getblocks(peer, [start, *self.chain.locator()])
        else:
            # No continuation (the batch was a relay inv, or its last block never became
            # valid here): this round is over; the peer stays eligible if still ahead.
            self._finish_sync(peer, exhausted=False)

    def _finish_sync(self, peer: Peer, *, exhausted: bool) -> None:
        if self._sync_peer is not peer:
            peer.sync_exhausted = exhausted or peer.sync_exhausted
            return
        # A whole session that did not move our tip is not worth repeating with this peer
        # until it announces something new (this also stops a peer that answers with
        # hashes it then does not deliver from keeping us busy).
        peer.sync_exhausted = (exhausted or peer.sync_exhausted
                               or self.chain.tip.hash == self._sync_start_tip)
        if not self._sync_headers_first and self.chain.tip.hash == self._sync_start_tip:
            self._charge_wasted(peer, "its session ended without a block")
        self._sync_peer = None
        self._end_headers_first()
        tip = self.chain.tip
        elapsed = max(asyncio.get_running_loop().time() - self._sync_started_at, 1e-9)
        got = tip.height - self._sync_start_height
        if got > 0:
            log.info("Block download from peer=%d done: height %d, %d blocks in %.1f s (%.1f blocks/s)",
                     peer.id, tip.height, got, elapsed, got / elapsed)
        self._maybe_start_sync()

    def _charge_wasted(self, peer: Peer, why: str) -> None:
        """Blocks-first: `peer` wasted its sync session (`why`): peers of its address are
        asked last from now on (failed_sessions.py)."""
        self._failed_sessions.charge(peer.host)
        log.debug("peer=%d %s wasted its block download session (%s): %d by its address",
                  peer.id, peer.addr, why, self._failed_sessions.count(peer.host))

    def _report_progress(self) -> None:
        """IBD progress line every _PROGRESS_INTERVAL seconds and when the target is reached."""
        if self._sync_peer is None:
            return
        loop_now = asyncio.get_running_loop().time()
        height = self.chain.tip.height
        total = self._best_peer_height()
        reached = height >= total
        first_time_reached = reached and not self._progress_final
        if loop_now - self._progress_at < _PROGRESS_INTERVAL and not first_time_reached:
            return
        self._progress_final = reached
        dt = max(loop_now - self._progress_at, 1e-9)
        rate = (height - self._progress_height) / dt
        log.info("IBD progress: height=%d total=%d (%.1f%%) %.1f blocks/s peer=%d",
                 height, total, 100.0 * height / max(total, 1), rate, self._sync_peer.id)
        self._progress_at, self._progress_height = loop_now, height

    # ------------------------------------------------------------------ transactions

    def _on_tx(self, peer: Peer, msg: TxMessage) -> None:
        tx = msg.tx
        txid = tx.txid
        peer.known_inventory.add(txid)
        self._release_tx_request(txid, failed=False)
        self._request_txs(peer)
        if txid in self.mempool:
            return
        self._orphans.add_announcer(txid, peer.id)      # (if it is an orphan)
        if self._recently_rejected(txid) or txid in self._orphans:
            # Sent unsolicited again (a `tx` needs no `inv` first): validating it again would
            # cost the same and end the same. Not charged again either: the peer may relay
            # what another sent first (bitcoind ignores it the same way). An orphan is tried
            # again when its parent comes.
            log.debug("peer=%d: tx %s refused before or waiting for its parent, not validated again",
                      peer.id, tx.txid_hex)
            return
        if self._try_tx(peer, tx):
            self._accept_orphans_of(txid)

    def _try_tx(self, peer: Peer, tx: Transaction, *, orphan: bool = False) -> bool:
        """Offer `tx`, sent by `peer`, to the mempool: announced if accepted; kept as an
        orphan if an input is unknown; otherwise refused until the tip moves, and `peer`
        banned if it broke a consensus rule. Whether it was accepted. `orphan`: it was kept
        as one and its parent just came (logged so)."""
        txid = tx.txid
        try:
            self.mempool.accept(tx)
        except Exception as e:
            # The mempool raises MempoolReject, whose `failure` (as a ValidationError's) is the
            # consensus rule that failed, None for a policy rule.
            reason = getattr(e, "reason", None)
            if reason is None:
                # Not a rejection: a bug in the mempool. Log it; do not blame the peer.
                log.exception("mempool.accept failed for %s", tx.txid_hex)
            else:
                failure = getattr(e, "failure", None)
                text = getattr(e, "message", reason)
                if failure is Failure.MISSING_INPUTS:
                    if self._keep_orphan(peer, tx):
                        return False
                elif failure in (Failure.PREMATURE_SPEND, Failure.TIME_FUTURE):
                    # Possibly valid later: not the peer's fault. It is refused until the tip
                    # moves all the same, or a peer could have it validated as often as it likes.
                    log.debug("peer=%d: tx %s not accepted yet: %s", peer.id, tx.txid_hex, text)
                elif failure is not None:
                    # Banned at once, as bitcoind's (TX_CONSENSUS: Misbehaving 100): at 10
                    # points a peer sent 9, connected again and went on, each one (640
                    # inputs, the last signature broken) 8 ms of our CPU, for ever.
                    self.misbehaving(peer, BAN_THRESHOLD, f"invalid transaction {tx.txid_hex}: {text}")
                else:
                    log.debug("peer=%d: tx %s rejected by policy: %s", peer.id, tx.txid_hex, text)
            self._reject_tx(txid)
            return False
        log.debug("peer=%d: accepted %stx %s", peer.id, "orphan " if orphan else "", tx.txid_hex)
        peer.last_tx_time = asyncio.get_running_loop().time()     # a new transaction (eviction)
        self._announce(MSG_TX, txid, tx=True)
        return True

    def block_connected(self, block: Block, index: Any) -> None:
        """Chain listener: drop at once the orphans `block` confirms or conflicts with
        (bitcoind's EraseForBlock; before 12-07 they stayed until their 20-minute expiry).
        Called on the thread that connected the block (an RPC's too): the work is handed to
        the event loop, which owns the orphan pool."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):         # (the loop closing at shutdown)
            loop.call_soon_threadsafe(self._erase_orphans_for_block, block)

    def _erase_orphans_for_block(self, block: Block) -> None:
        erased = self._orphans.erase_for_block(block.txs)
        if erased:
            log.debug("block %s settled %d orphan txs (%d kept)", block.hash_hex, erased, len(self._orphans))

    def _keep_orphan(self, peer: Peer, tx: Transaction) -> bool:
        """Keep `tx`, whose inputs are unknown, until a parent enters the pool; False when a
        parent was refused (then so is `tx`: it cannot be valid before the tip moves).

        Its parents are not asked of `peer`, as bitcoind does: a request waits 60 s for its
        answer before the next announcer is asked (bitcoind first delays requests to inbound
        peers, which this node does not), so the sender of a child could withhold the honest
        parent for a minute by asking for it first. The parent comes as any transaction
        does, announced by whoever has it."""
        if any(self._recently_rejected(txin.prevout.txid) for txin in tx.vin):
            log.debug("peer=%d: orphan tx %s has a refused parent", peer.id, tx.txid_hex)
            return False
        dropped = self._orphans.add(tx, peer.id, asyncio.get_running_loop().time())
        log.debug("peer=%d: tx %s kept as an orphan (%d kept, %d dropped)", peer.id, tx.txid_hex,
                  len(self._orphans), len(dropped))
        return True

    def _accept_orphans_of(self, txid: bytes) -> None:
        """Try again the orphans waiting for `txid` (now in the pool), and theirs in turn
        when they enter; each is tried once per parent that comes. One accepted or refused
        leaves the orphan pool; one still missing an input stays with its announcers and
        expiry (bitcoind v29; before 12-07 it was put back with its sender alone, and went
        when that one disconnected though an honest peer had announced it too)."""
        work = [txid]
        while work:
            for orphan, peer_id in self._orphans.children(work.pop()):
                sender = self._peers.get(peer_id)
                if orphan.txid not in self._orphans:
                    continue          # (dropped meanwhile: its sender was banned for another)
                if sender is None or sender.closed or orphan.txid in self.mempool:
                    self._orphans.remove(orphan.txid)
                    continue
                if self._try_tx(sender, orphan, orphan=True):
                    self._orphans.remove(orphan.txid)
                    work.append(orphan.txid)
                elif self._recently_rejected(orphan.txid):
                    self._orphans.remove(orphan.txid)

    # ================================================================== maintenance

    async def _maintenance(self) -> None:
        """Once a second (or faster with short timeouts): handshake, ping and download
        timeouts, pings, expired bans and requests."""
        tick = max(0.05, min(1.0, self.ping_interval / 4, self.handshake_timeout / 4,
                             self.ping_timeout / 4, self.block_download_timeout / 4,
                             self.tx_request_timeout / 4))
        loop = asyncio.get_running_loop()
        while self._running:
            await asyncio.sleep(tick)
            try:
                self._maintain(loop.time())
            except Exception:
                log.exception("p2p maintenance failed")

    def _maintain(self, loop_now: float) -> None:
        self._close_hung_up()
        for peer in list(self._peers.values()):
            if peer.closed:
                continue
            if not peer.handshake_done:
                if loop_now - peer.connected_at > self.handshake_timeout:
                    log.info("peer=%d %s: handshake timeout", peer.id, peer.addr)
                    peer.close("handshake timeout")
                continue
            if peer.ping_sent_at and loop_now - peer.ping_sent_at > self.ping_timeout:
                log.info("peer=%d %s: ping timeout", peer.id, peer.addr)
                peer.close("ping timeout")
                continue
            if not peer.ping_sent_at and loop_now - peer.last_ping_at >= self.ping_interval:
                self._send_ping(peer)
            if peer.tx_to_announce and peer.outbox_bytes <= SEND_BUFFER_LIMIT:
                self._flush_tx_announcements(peer)
            # (A headers-first sync peer waits for headers too: one that never answers
            # them must not keep the download for itself.)
            # (A headers-first download's blocks have their own timeouts: _check_block_stalls.)
            waiting = ((peer.blocks_in_flight and not self._sync_headers_first) or peer.getblocks_sent_at
                       or (peer is self._sync_peer and self._sync_headers_first and peer.headers_sent_at))
            if waiting and loop_now - peer.last_block_progress > self.block_download_timeout:
                log.info("peer=%d %s: block download stalled, disconnecting", peer.id, peer.addr)
                peer.close("block download stalled")
                self._forget_peer(peer)
        self._cpu_budgets.prune(loop_now)
        now = self.now()
        for key in [k for k, e in self._bans.items() if e.until <= now]:
            self._drop_ban(key)
        expired = [t for t, (_, at) in self._txs_requested.items() if loop_now - at > self.tx_request_timeout]
        self._orphans.expire(loop_now)
        for txid in expired:
            self._release_tx_request(txid, failed=True)
        if self._sync_peer is None:
            for peer in list(self._peers.values()):
                if peer.tx_announced and not peer.closed:
                    self._request_txs(peer)
        self._check_headers_sync_deadline(loop_now)
        if self._sync_headers_first:
            self._charge_unanswered_race(loop_now)
            self._race_getheaders(loop_now)
            self._check_block_stalls(loop_now)
            self._fill_download()
        else:
            self._check_sync_peer_stall(loop_now)
        if self._sync_peer is None:
            self._maybe_start_sync()
