"""Network parameters: main, test and regtest.

Each network has its own magic, ports, address prefix and genesis block, so a node or a wallet
can never mistake one network's data for another's. Choices, and why:

- Ports are ours (Bitcoin uses 8333/8332, 18333/18332, 18444/18443), kept below 32768 so they
  stay out of Linux's ephemeral port range, where an outgoing connection could occupy them.
- Magic bytes are all >= 0x80 and not valid UTF-8, so they rarely occur in ordinary data, as
  in Bitcoin; each network's differ, so peers of another network are refused at the
  handshake.
- Addresses are bech32 with a per-network prefix ("cc", "tc", "ccrt"); see address.py.
- pow_limit on main and test is 2**236 - 1 (bits 0x1e0fffff): about a million hashes per
  block at minimum difficulty, which a Python CPU miner finds in a second or so; retargeting
  raises it from there. Regtest uses Bitcoin's 0x207fffff: every other nonce is a solution.
- Main retargets like Bitcoin (10 minutes, every 2016 blocks, x4 clamp); test targets the
  same spacing but retargets every 144 blocks (a day), because a test network's hash rate
  comes and goes with a few CPU miners, and waiting two weeks at a wrong difficulty is no use.
  Both enforce BIP94's time-warp rule. Regtest never retargets.
- minimum_chain_work (bitcoind's nMinimumChainWork, -minimumchainwork overrides it): the work
  a chain must have before the node leaves initial block download, before presync stores a
  branch's headers, before the node downloads any of its blocks (p2p/node.py, "Block
  download"), and before a wallet takes its anchor from it (wallet/headers.py). Bitcoind
  sets it at each release to the chain work of a block a few weeks old. This project's main
  and test networks have no chain beyond their genesis block yet (no release has pinned a
  block), so their value is the genesis block's own work (block_proof of 0x1e0fffff, 2**20 + 1):
  a bar every chain of the network clears, i.e. no protection until a release sets it from a
  real block (`getblockchaininfo`'s `chainwork` of that block). Regtest: 0, as bitcoind's.
- The genesis coinbase pays 50 coins to the all-zero pubkey hash, whose key nobody knows;
  moreover, as in Bitcoin, its outputs are never added to the UTXO set (storage's job), so
  they are unspendable twice over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .amount import COIN, MAX_MONEY
from .primitives import (
    NULL_HASH, Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut,
    coinbase_height_prefix, merkle_root, push_data,
)
from .pow import block_proof, target_to_compact

GENESIS_MESSAGE: bytes = b"CleanCoin 25/Nov/2026 real coins, every part in its own sandbox"
#: The genesis coinbase pays here; nobody has a key hashing to twenty zero bytes.
UNSPENDABLE_PKH: bytes = b"\x00" * 20
NETWORKS: tuple[str, ...] = ("main", "test", "regtest")
#: Serialized block size limit (all networks); also bounds a single transaction.
MAX_BLOCK_SIZE: int = 1_000_000


def build_genesis(time: int, bits: int, nonce: int, reward: int,
                  message: bytes = GENESIS_MESSAGE, version: int = 1) -> Block:
    """The genesis block, deterministically from its parameters."""
    script = coinbase_height_prefix(0) + push_data(message)
    coinbase = Transaction(1, (TxIn(OutPoint.null(), script),), (TxOut(reward, UNSPENDABLE_PKH),), 0)
    root, _ = merkle_root([coinbase.txid])
    header = BlockHeader(version, NULL_HASH, root, time, bits, nonce)
    return Block(header, (coinbase,))


@dataclass(frozen=True)
class ChainParams:
    """Everything that differs between networks. Build-time checked: the genesis block built
    from these values must hash to `genesis_hash_hex`, or construction fails (so a change to
    serialization or hashing cannot silently fork us off our own networks)."""

    name: str
    datadir_subdir: str          # "" for main: <datadir> itself, else <datadir>/<subdir>
    magic: bytes                 # P2P message start, 4 bytes
    default_port: int            # P2P
    rpc_port: int
    bech32_hrp: str
    wif_prefix: int              # version byte of base58check WIF private keys
    pow_limit: int               # easiest allowed target
    target_spacing: int          # seconds per block
    retarget_interval: int       # blocks per difficulty period
    pow_no_retargeting: bool
    enforce_bip94: bool          # time-warp fix at period boundaries
    initial_subsidy: int         # units
    halving_interval: int        # blocks
    coinbase_maturity: int       # blocks until a coinbase output may be spent
    max_block_size: int          # serialized bytes
    genesis_time: int
    genesis_bits: int
    genesis_nonce: int
    genesis_hash_hex: str
    max_future_block_time: int = 2 * 60 * 60   # a block may be this far ahead of our clock
    #: Work a chain must have before it is believed (module docstring; -minimumchainwork).
    minimum_chain_work: int = 0
    genesis_block: Block = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.magic) != 4:
            raise ValueError("magic must be 4 bytes")
        block = build_genesis(self.genesis_time, self.genesis_bits, self.genesis_nonce,
                              self.initial_subsidy)
        if block.hash_hex != self.genesis_hash_hex:
            raise RuntimeError(f"{self.name} genesis hash mismatch: built {block.hash_hex}, "
                               f"expected {self.genesis_hash_hex}")
        object.__setattr__(self, "genesis_block", block)
        if self.minimum_chain_work < 0:
            raise ValueError("minimum_chain_work must not be negative")

    @property
    def genesis_hash(self) -> bytes:
        """Genesis block hash, internal byte order."""
        return self.genesis_block.hash

    @property
    def pow_limit_bits(self) -> int:
        """pow_limit in compact form (difficulty 1)."""
        return target_to_compact(self.pow_limit)

    @property
    def target_timespan(self) -> int:
        """Seconds one retarget period should take."""
        return self.target_spacing * self.retarget_interval

    @property
    def coin(self) -> int:
        """Units per coin (same on every network)."""
        return COIN

    @property
    def max_money(self) -> int:
        """Upper bound for any amount (same on every network)."""
        return MAX_MONEY


#: Main's and test's minimum chain work until a release pins a block (module docstring): the
#: work of their genesis block alone.
GENESIS_WORK: int = block_proof(0x1E0FFFFF)

# Genesis nonces were found offline (a plain nonce search from 0 with mining.solve's hashing);
# main and test needed 60292 and 2390821 tries at 0x1e0fffff, regtest's nonce 0 already works.

MAIN = ChainParams(
    name="main",
    datadir_subdir="",
    magic=bytes.fromhex("ccc1ea9e"),
    default_port=27491,
    rpc_port=27490,
    bech32_hrp="cc",
    wif_prefix=0x9A,
    pow_limit=(1 << 236) - 1,
    target_spacing=600,
    retarget_interval=2016,
    pow_no_retargeting=False,
    enforce_bip94=True,
    initial_subsidy=50 * COIN,
    halving_interval=210_000,
    coinbase_maturity=100,
    max_block_size=MAX_BLOCK_SIZE,
    genesis_time=1795600000,
    genesis_bits=0x1E0FFFFF,
    genesis_nonce=60292,
    genesis_hash_hex="00000088e86b51daac37de564d4be51a1afb22ba2162cccc2d1b9c1f420fbb17",
    minimum_chain_work=GENESIS_WORK,
)

TESTNET = ChainParams(
    name="test",
    datadir_subdir="testnet",
    magic=bytes.fromhex("cdc1eb9f"),
    default_port=27591,
    rpc_port=27590,
    bech32_hrp="tc",
    wif_prefix=0xEA,
    pow_limit=(1 << 236) - 1,
    target_spacing=600,
    retarget_interval=144,
    pow_no_retargeting=False,
    enforce_bip94=True,
    initial_subsidy=50 * COIN,
    halving_interval=210_000,
    coinbase_maturity=100,
    max_block_size=MAX_BLOCK_SIZE,
    genesis_time=1795600600,
    genesis_bits=0x1E0FFFFF,
    genesis_nonce=2390821,
    genesis_hash_hex="00000bff611eec18030efe79ac273c29ce9b136e34a8826b62dcc66763c2581c",
    minimum_chain_work=GENESIS_WORK,
)

REGTEST = ChainParams(
    name="regtest",
    datadir_subdir="regtest",
    magic=bytes.fromhex("cec1ec90"),
    default_port=27691,
    rpc_port=27690,
    bech32_hrp="ccrt",
    wif_prefix=0xEA,
    pow_limit=(1 << 255) - 1,
    target_spacing=600,
    retarget_interval=2016,     # unused: pow_no_retargeting
    pow_no_retargeting=True,
    enforce_bip94=False,
    initial_subsidy=50 * COIN,
    halving_interval=150,
    coinbase_maturity=100,
    max_block_size=MAX_BLOCK_SIZE,
    genesis_time=1795601200,
    genesis_bits=0x207FFFFF,
    genesis_nonce=0,
    genesis_hash_hex="74e6584a2f26afd1a15e9851fc3649f10384065db369511915056fce9ecf5f25",
    minimum_chain_work=0,
)

_BY_NAME: dict[str, ChainParams] = {p.name: p for p in (MAIN, TESTNET, REGTEST)}


def parse_minimum_chain_work(value: str) -> int:
    """-minimumchainwork=<hex>, as bitcoind reads it (hex digits, an optional 0x, at most 64
    of them); ValueError with bitcoind's message otherwise."""
    text = value.strip()
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not digits or len(digits) > 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"Invalid non-hex ({value}) minimum chain work value specified")
    return int(digits, 16)


def params_for(name: str) -> ChainParams:
    """Parameters of network `name` ("main", "test" or "regtest", as bitcoind's -chain=)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown chain {name!r}; expected one of {', '.join(NETWORKS)}") from None
