"""Attacker code of a compromised CleanCoin-node against its wallet process's view of the chain,
for tests/functional/test_wallet_fake_chain.py. Like attacks.py (whose PRELUDE AttackedNode
prepends): each constant is the body of a function the attack_site harness runs inside the
real confined node, with `ctx` and `report(name, escaped, detail)`; these patch the node's
NodeChain (the Chain the wallet process is served) or use its NotificationHub, as code of a
compromised node could.
"""

# The wallet believed its node's chain without proof of work: the confined node, compromised,
# shows its wallet process a block on top of the real tip that pays one of the wallet's
# addresses 1000 coins from an input that never existed. The block is well formed (merkle root,
# coinbase, linked to the tip); only its proof of work is missing: `high-hash` (the hash is
# above the target its bits name) or `bad-diffbits` (a hash that meets its own bits, but bits
# other than the ones the difficulty rule demands). The test names mode and payee in
# <netdir>/attack_payee.txt; each fake made is reported as fake-<mode> with its txid.
NODE_FAKES_PAYMENT = r'''
import cleancoin.components.node.chain_binding as binding
from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.pow import check_proof_of_work
from cleancoin.components.common.primitives import (
    Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut, coinbase_height_prefix, merkle_root)
from cleancoin.components.interfaces.chain import BlockInfo
attempt("fake-chain")
payee_file = os.path.join(ctx["netdir"], "attack_payee.txt")
real = {name: getattr(binding.NodeChain, name)
        for name in ("get_height", "get_blocks", "get_block_hash", "get_block_header_info")}
made = {}        # (tip hash, mode, address) -> (block, height)
by_hash = {}     # every fake's hash -> (block, height)

def fake(self):
    try:
        with open(payee_file) as f:
            mode, address = f.read().split()
    except (OSError, ValueError):
        return None
    tip = self._chain.tip
    key = (tip.hash, mode, address)
    if key not in made:
        height = tip.height + 1
        coinbase = Transaction(1, (TxIn(OutPoint.null(), coinbase_height_prefix(height) + b"fake"),),
                               (TxOut(50 * 10**8, bytes(20)),), 0)
        payment = Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x00" * 100),),
                              (TxOut(1000 * 10**8, decode_address(address, REGTEST)),), 0)
        root, _ = merkle_root([coinbase.txid, payment.txid])
        bits = tip.header.bits if mode == "high-hash" else 0x1F7FFFFF
        for nonce in range(1 << 20):
            header = BlockHeader(1, tip.hash, root, tip.header.time + 1, bits, nonce)
            meets = check_proof_of_work(header.hash, bits, REGTEST)
            if meets == (mode != "high-hash"):
                break
        block = Block(header, (coinbase, payment))
        made[key] = by_hash[block.hash] = (block, height)
        report(f"fake-{mode}", False, payment.txid_hex)
    return made[key]

async def get_height(self):
    f = fake(self)
    return f[1] if f else await real["get_height"](self)

async def get_blocks(self, start_height, count):
    out = await real["get_blocks"](self, start_height, count)
    f = fake(self)
    if f and len(out) < count and start_height + len(out) == f[1]:
        out.append(f[0].to_bytes())
    return out

async def get_block_hash(self, height):
    f = fake(self)
    return f[0].hash if f and height == f[1] else await real["get_block_hash"](self, height)

async def get_block_header_info(self, block_hash):
    if block_hash in by_hash:
        block, height = by_hash[block_hash]
        f = fake(self)
        return BlockInfo(block.hash, height, block.header.time, block.header.prev_hash,
                         bool(f) and f[0].hash == block_hash)
    return await real["get_block_header_info"](self, block_hash)

for name, fn in (("get_height", get_height), ("get_blocks", get_blocks),
                 ("get_block_hash", get_block_hash), ("get_block_header_info", get_block_header_info)):
    setattr(binding.NodeChain, name, fn)
report("fake-chain", False, "the node now shows a block of its own making on top of its tip")
'''

# The wallet trusted an unconfirmed transaction that spends one of its coins as its own (its
# outputs count in the trusted balance, as bitcoind counts its change), without checking that
# its key signed it. The confined node, compromised, hands the wallet through the mempool
# notifications (never through its mempool, which would refuse it) a transaction spending the
# wallet's first coinbase with a made-up signature and paying the wallet 1000 coins: on the
# next chain read after <netdir>/attack_payee.txt names the payee. Reported as
# fake-own-spend with its txid.
NODE_FAKES_OWN_SPEND = r'''
import cleancoin.components.node.chain_binding as binding
from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
attempt("armed")
payee_file = os.path.join(ctx["netdir"], "attack_payee.txt")
real_get_height = binding.NodeChain.get_height
sent = set()

def first_coin_of(chain, pkh):
    for height in range(1, chain.height + 1):
        coinbase = chain.get_block(chain.block_at_height(height).hash).txs[0]
        for n, out in enumerate(coinbase.vout):
            if out.pkh == pkh:
                return OutPoint(coinbase.txid, n)
    return None

async def get_height(self):
    try:
        with open(payee_file) as f:
            address = f.read().split()[-1]
    except (OSError, IndexError):
        address = None
    if address and address not in sent and self._hub is not None:
        sent.add(address)
        pkh = decode_address(address, REGTEST)
        coin = first_coin_of(self._chain, pkh)
        signature = b"\x30\x44\x02\x20" + b"\x11" * 32 + b"\x02\x20" + b"\x22" * 32 + b"\x01"
        script = bytes([len(signature)]) + signature + bytes([33]) + b"\x02" + b"\x33" * 32
        fake = Transaction(1, (TxIn(coin, script),), (TxOut(1000 * 10**8, pkh),), 0)
        self._hub.transaction_added(fake)
        report("fake-own-spend", False, fake.txid_hex)
    return await real_get_height(self)

binding.NodeChain.get_height = get_height
report("armed", False, "the node will announce a spend of the wallet's coin it never signed")
'''

# A reorganisation to a branch with less work: once <netdir>/attack_payee.txt names a payee,
# the node says the wallet's newest block left the active chain for a branch of one block
# forking two below the node's real tip at that moment (valid proof of work, the bits the
# rule demands: only its work is short), paying the wallet 1000 coins out of nothing.
# Reported as fake-branch with the fake payment's txid. get_headers (where the node has it)
# shows the same branch (ctx depth: the fork that far below the tip, 2 unless set).
# With ctx rewind_first the node first says its chain ends at the fork
# (a rewind, as invalidateblock makes: get_height is the fork's once, right after find_fork),
# and shows the one-block branch from then on.
NODE_REORGS_TO_LESS_WORK = r'''
import cleancoin.components.node.chain_binding as binding
from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.interfaces.chain import BlockInfo, ChainError
from cleancoin.components.node.mining import mine_block
attempt("armed")
payee_file = os.path.join(ctx["netdir"], "attack_payee.txt")
real = {name: getattr(binding.NodeChain, name) for name in
        ("get_height", "get_blocks", "get_block_hash", "get_block_header_info", "find_fork", "get_headers")
        if hasattr(binding.NodeChain, name)}
REWIND_FIRST = ctx.get("rewind_first", False)
state = {"forked": False, "rewound": not REWIND_FIRST}

def branch(self):
    if "fork" not in state:
        try:
            with open(payee_file) as f:
                address = f.read().split()[-1]
        except (OSError, IndexError):
            return None
        pkh = decode_address(address, REGTEST)
        fork = self._chain.block_at_height(self._chain.height - ctx.get("depth", 2))
        payment = Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x00" * 100),),
                              (TxOut(1000 * 10**8, pkh),), 0)
        fake = mine_block(fork.header, fork.height + 1, pkh, REGTEST, fork.header.time + 1,
                          fork.header.bits, (payment,))
        state.update(fork=fork.height, fake=fake)
        report("fake-branch", False, payment.txid_hex)
    return state

async def get_height(self):
    b = branch(self)
    if b and not state["rewound"]:
        state["rewound"] = state["forked"]       # (once, right after find_fork: a rewind)
        return b["fork"]
    return b["fork"] + 1 if b else await real["get_height"](self)

async def get_blocks(self, start_height, count):
    b = branch(self)
    if not b:
        return await real["get_blocks"](self, start_height, count)
    if start_height == b["fork"] + 1 and count and b["rewound"]:
        return [b["fake"].to_bytes()]
    if start_height > b["fork"]:
        return []
    return await real["get_blocks"](self, start_height, min(count, b["fork"] + 1 - start_height))

async def get_block_hash(self, height):
    b = branch(self)
    if b and height == b["fork"] + 1 and b["rewound"]:
        return b["fake"].hash
    if b and height > b["fork"] + 1:
        raise ChainError(f"height {height} is out of range")
    return await real["get_block_hash"](self, height)

async def get_block_header_info(self, block_hash):
    b = branch(self)
    if b and block_hash == b["fake"].hash:
        h = b["fake"].header
        return BlockInfo(block_hash, b["fork"] + 1, h.time, h.prev_hash, True)
    info = await real["get_block_header_info"](self, block_hash)
    if b and info.height > b["fork"]:
        return BlockInfo(info.hash, info.height, info.time, info.prev_hash, False)
    return info

async def find_fork(self, locator):
    b = branch(self)
    if b:
        b["forked"] = True
    return b["fork"] if b else await real["find_fork"](self, locator)

async def get_headers(self, start_height, count):
    b = branch(self)
    if not b:
        return await real["get_headers"](self, start_height, count)
    out = b""
    if start_height <= b["fork"]:
        out = await real["get_headers"](self, start_height, min(count, b["fork"] + 1 - start_height))
    if b["rewound"] and count > len(out) // 80 and start_height + len(out) // 80 == b["fork"] + 1:
        out += b["fake"].header.serialized
    return out

patched = {"get_height": get_height, "get_blocks": get_blocks, "get_block_hash": get_block_hash,
           "get_block_header_info": get_block_header_info, "find_fork": find_fork, "get_headers": get_headers}
for name, fn in patched.items():
    if name in real:
        setattr(binding.NodeChain, name, fn)
report("armed", False, "the node will report a reorganisation to a branch of less work")
'''

# The bait and switch (12-07): while <netdir>/attack_payee.txt names an address ("bait
# <address>"), the node first rewinds the wallet DEPTH blocks (its chain said to end there, as
# invalidateblock would: followed, the undone blocks' header rows kept as the bar), then shows
# its real header chain, one block short of its tip, and at the fork's next height its own
# block paying the address 1000 coins (on the real block at the fork: at that era's
# difficulty). When the wallet asks for that height again right after the fake, before it asks
# for the chain's height (the wallet weighing the node's branch against its rows, before
# 12-07), the node shows its real blocks, one more than the rows: more work, and the rows gave
# way; from then on, the fake and nothing above it. Reported: armed, fake-branch (the payment's
# txid), weighed (each time the real blocks were shown for the weighing).
NODE_BAIT_AND_SWITCH = r'''
import cleancoin.components.node.chain_binding as binding
from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.interfaces.chain import BlockInfo
from cleancoin.components.node.mining import mine_block
attempt("armed")
payee_file = os.path.join(ctx["netdir"], "attack_payee.txt")
real = {name: getattr(binding.NodeChain, name) for name in
        ("get_height", "get_blocks", "get_block_header_info", "find_fork", "get_headers")}
state = {"phase": "", "fake_served": False, "weighed": 0}

def plan(self):
    if not state["phase"]:
        try:
            with open(payee_file) as f:
                words = f.read().split()
        except OSError:
            return None
        if len(words) != 2 or words[0] != "bait":
            return None
        fork = self._chain.block_at_height(self._chain.height - ctx.get("depth", 50))
        payment = Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x00" * 100),),
                              (TxOut(1000 * 10**8, decode_address(words[1], REGTEST)),), 0)
        fake = mine_block(fork.header, fork.height + 1, bytes(20), REGTEST, fork.header.time + 1,
                          fork.header.bits, (payment,))
        state.update(phase="rewind", fork=fork.height, fake=fake, top=self._chain.height)
        report("fake-branch", False, payment.txid_hex)
    return state

async def get_height(self):
    p = plan(self)
    state["fake_served"] = False
    if p and p["phase"] == "rewind":
        if p.get("asked_fork"):
            p["phase"] = "bait"         # the wallet saw the rewind: from now on the bait
        return p["fork"]
    return p["top"] if p else await real["get_height"](self)

async def find_fork(self, locator):
    p = plan(self)
    if p and p["phase"] == "rewind":
        p["asked_fork"] = True
        return p["fork"]
    return await real["find_fork"](self, locator)

async def get_block_header_info(self, block_hash):
    p = plan(self)
    if p and block_hash == p["fake"].hash:
        h = p["fake"].header
        return BlockInfo(block_hash, p["fork"] + 1, h.time, h.prev_hash, True)
    info = await real["get_block_header_info"](self, block_hash)
    if p and p["phase"] == "rewind" and info.height > p["fork"]:
        return BlockInfo(info.hash, info.height, info.time, info.prev_hash, False)
    return info

async def get_headers(self, start_height, count):
    p = plan(self)
    if not p:
        return await real["get_headers"](self, start_height, count)
    end = p["fork"] if p["phase"] == "rewind" else p["top"] - 1     # one short of the tip
    return await real["get_headers"](self, start_height, max(0, min(count, end + 1 - start_height)))

async def get_blocks(self, start_height, count):
    p = plan(self)
    if not p or p["phase"] != "bait":
        if p and start_height > p["fork"]:
            return []
        return await real["get_blocks"](self, start_height, count)
    if start_height == p["fork"] + 1:
        if not state["fake_served"]:
            state["fake_served"] = True
            return [p["fake"].to_bytes()]
        state["weighed"] += 1
        report("weighed", False, str(state["weighed"]))
        return await real["get_blocks"](self, start_height, min(count, p["top"] - p["fork"]))
    if start_height > p["fork"] + 1:
        return []
    return await real["get_blocks"](self, start_height, count)

for name, fn in {"get_height": get_height, "find_fork": find_fork, "get_block_header_info": get_block_header_info,
                 "get_headers": get_headers, "get_blocks": get_blocks}.items():
    setattr(binding.NodeChain, name, fn)
report("armed", False, "the node will rewind the wallet, then bait and switch its blocks")
'''

# The anchor on a cheap branch (h40): a node already compromised when a wallet is created shows
# it, while <netdir>/attack_payee.txt exists, a branch of its own: FAKE_LENGTH blocks forked at
# FORK_HEIGHT of the real chain (valid proof of work and bits: free on regtest; its work only is
# short), consistently through every Chain method the wallet reads the chain with (get_height,
# get_blocks, get_block_hash, get_block_header_info, find_fork and, where the node has it,
# get_headers). The wallet created meanwhile is born at the branch's tip and takes its anchor
# from it; once the file names an address ("pay <address>") the branch gets one more block
# paying that address 1000 coins out of nothing. Reported as fake-branch (armed) and
# fake-payment with the payment's txid. ctx may set fork_height and fake_length, and
# honest_headers (get_headers left alone: the node shows the real header chain, whose work is
# enough, and its cheap branch only in blocks, forked just below the birth it names).
NODE_ANCHORS_ON_A_CHEAP_BRANCH = r'''
import cleancoin.components.node.chain_binding as binding
from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.interfaces.chain import BlockInfo, ChainError
from cleancoin.components.node.mining import mine_block
attempt("fake-branch")
FORK_HEIGHT, FAKE_LENGTH = ctx.get("fork_height", 10), ctx.get("fake_length", 30)
HONEST_HEADERS = ctx.get("honest_headers", False)
payee_file = os.path.join(ctx["netdir"], "attack_payee.txt")
real = {name: getattr(binding.NodeChain, name) for name in
        ("get_height", "get_blocks", "get_block_hash", "get_block_header_info", "find_fork", "get_headers")
        if hasattr(binding.NodeChain, name)}
state = {"blocks": [], "paid": None}

def branch(self):
    try:
        with open(payee_file) as f:
            words = f.read().split()
    except OSError:
        return None
    blocks = state["blocks"]
    if not blocks:
        prev = self._chain.block_at_height(FORK_HEIGHT).header
        for i in range(FAKE_LENGTH):
            block = mine_block(prev, FORK_HEIGHT + 1 + i, bytes(20), REGTEST, prev.time + 1, prev.bits)
            blocks.append(block)
            prev = block.header
        report("fake-branch", False, f"{FAKE_LENGTH} blocks above {FORK_HEIGHT}")
    if len(words) == 2 and words[0] == "pay" and state["paid"] is None:
        payment = Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x00" * 100),),
                              (TxOut(1000 * 10**8, decode_address(words[1], REGTEST)),), 0)
        prev = blocks[-1].header
        blocks.append(mine_block(prev, FORK_HEIGHT + 1 + len(blocks), bytes(20), REGTEST, prev.time + 1,
                                 prev.bits, (payment,)))
        state["paid"] = payment.txid_hex
        report("fake-payment", False, payment.txid_hex)
    return blocks

def at(blocks, height):
    i = height - FORK_HEIGHT - 1
    return blocks[i] if 0 <= i < len(blocks) else None

async def get_height(self):
    b = branch(self)
    return FORK_HEIGHT + len(b) if b else await real["get_height"](self)

async def get_blocks(self, start_height, count):
    b = branch(self)
    if not b:
        return await real["get_blocks"](self, start_height, count)
    out = []
    if start_height <= FORK_HEIGHT:
        out = await real["get_blocks"](self, start_height, min(count, FORK_HEIGHT + 1 - start_height))
    h = start_height + len(out)
    while len(out) < count and at(b, h) is not None:
        out.append(at(b, h).to_bytes())
        h += 1
    return out

async def get_headers(self, start_height, count):
    b = branch(self)
    if not b:
        return await real["get_headers"](self, start_height, count)
    out = b""
    if start_height <= FORK_HEIGHT:
        out = await real["get_headers"](self, start_height, min(count, FORK_HEIGHT + 1 - start_height))
    h = start_height + len(out) // 80
    while len(out) // 80 < count and at(b, h) is not None:
        out += at(b, h).header.serialized
        h += 1
    return out

async def get_block_hash(self, height):
    b = branch(self)
    if b and height > FORK_HEIGHT:
        if at(b, height) is None:
            raise ChainError(f"height {height} is out of range")
        return at(b, height).hash
    return await real["get_block_hash"](self, height)

async def get_block_header_info(self, block_hash):
    b = branch(self)
    for i, block in enumerate(b or ()):
        if block.hash == block_hash:
            h = block.header
            return BlockInfo(block_hash, FORK_HEIGHT + 1 + i, h.time, h.prev_hash, True)
    info = await real["get_block_header_info"](self, block_hash)
    if b and info.height > FORK_HEIGHT:
        return BlockInfo(info.hash, info.height, info.time, info.prev_hash, False)
    return info

async def find_fork(self, locator):
    b = branch(self)
    if b:
        for h in locator:
            for i, block in enumerate(b):
                if block.hash == h:
                    return FORK_HEIGHT + 1 + i
    fork = await real["find_fork"](self, locator)
    return min(fork, FORK_HEIGHT) if b else fork

patched = {"get_height": get_height, "get_blocks": get_blocks, "get_block_hash": get_block_hash,
           "get_block_header_info": get_block_header_info, "find_fork": find_fork, "get_headers": get_headers}
if HONEST_HEADERS:
    del patched["get_headers"]
for name, fn in patched.items():
    if name in real:
        setattr(binding.NodeChain, name, fn)
report("armed", False, "the node will show a cheap branch of its own while attack_payee.txt exists")
'''
