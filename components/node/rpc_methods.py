"""The node's JSON-RPC methods, with bitcoind's names, parameters, result shapes and errors.

`register_node_methods(registry, node)` adds them to a `components.rpc.registry.Registry`.
Handlers run on the node's event loop and call the chain manager and mempool directly (they
are synchronous); `generatetoaddress` yields to the loop between blocks so P2P keeps going.
Amounts are Decimal coins (the RPC encoder prints them as JSON numbers, exactly).
"""

from __future__ import annotations

import asyncio
import logging
import os
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cleancoin.components.rpc.errors import (
    RPC_CLIENT_INVALID_IP_OR_SUBNET, RPC_CLIENT_NODE_ALREADY_ADDED,
    RPC_CLIENT_P2P_DISABLED, RPC_DATABASE_ERROR, RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPC_MISC_ERROR, RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED, RpcError,
)
from cleancoin.components.rpc.registry import AMOUNT, ANY, ARR, BOOL, INT, STR, Param, Registry

from ..common.address import AddressError, address_error, decode_address, encode_address
from ..common.amount import format_amount, parse_amount
from .chain import BlockNotFound
from ..common.consensus import block_subsidy
from ..common.errors import DeserializationError, ValidationError
from ..common.hashes import hash_to_hex
from .mempool import MempoolReject, fee_rate
from .mining import assemble_block, create_coinbase, solve
from .p2p import P2PError
from .p2p.messages import NODE_NETWORK, PROTOCOL_VERSION
from .verify_chain import DEFAULT_CHECK_BLOCKS, DEFAULT_CHECK_LEVEL
from ..common.pow import difficulty
from ..common import descriptors
from ..common.primitives import Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut

if TYPE_CHECKING:
    from .node import NodeContext

#: bitcoind's DEFAULT_MAX_RAW_TX_FEE_RATE: 0.10 coins per 1000 bytes.
DEFAULT_MAX_FEE_RATE = Decimal("0.10")
CLIENT_VERSION: int = 1000     # 0.1.0 in bitcoind's encoding

log = logging.getLogger("cleancoin.chain")


# ------------------------------------------------------------------------------ helpers

def parse_hash(name: str, value: str) -> bytes:
    """A 64-hex-digit hash in display order -> internal bytes, with bitcoind's -8 errors."""
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value}')")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None
    return raw[::-1]


def _decode_tx(hexstring: str) -> Transaction:
    try:
        return Transaction.from_hex(hexstring)
    except (DeserializationError, ValueError):
        raise RpcError(RPC_DESERIALIZATION_ERROR,
                       "TX decode failed. Make sure the tx has at least one input.") from None


def _verbosity(value: Any, default: int) -> int:
    """getblock/getrawtransaction accept a bool (old `verbose`) or a number."""
    if value is None:
        return default
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    raise RpcError(-3, "JSON value of type " + type(value).__name__ + " is not of expected type number")


class NodeRpc:
    """The handlers, bound to one node."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node

    # -- shorthands ---------------------------------------------------------------------

    @property
    def chain(self) -> Any:
        assert self.node.chain is not None
        return self.node.chain

    @property
    def mempool(self) -> Any:
        assert self.node.mempool is not None
        return self.node.mempool

    @property
    def params(self) -> Any:
        return self.node.params

    def _index(self, blockhash: str) -> Any:
        idx = self.chain.get_index(parse_hash("blockhash", blockhash))
        if idx is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return idx

    def _confirmations(self, idx: Any) -> int:
        """bitcoind: depth in the active chain, -1 when not on it."""
        if not self.chain.is_in_active_chain(idx.hash):
            return -1
        return self.chain.height - idx.height + 1

    def _header_dict(self, idx: Any) -> dict[str, Any]:
        d = idx.header.to_dict(self.params)
        d["confirmations"] = self._confirmations(idx)
        d["height"] = idx.height
        d["mediantime"] = self.chain.median_time_past(idx)
        d["chainwork"] = idx.chainwork_hex
        # Field order as bitcoind's: hash, confirmations, height first.
        ordered = {k: d[k] for k in ("hash", "confirmations", "height", "version", "versionHex",
                                      "merkleroot", "time", "mediantime", "nonce", "bits",
                                      "difficulty", "chainwork")}
        ordered["nTx"] = 0
        if "previousblockhash" in d:
            ordered["previousblockhash"] = d["previousblockhash"]
        nxt = self.chain.block_at_height(idx.height + 1) if ordered["confirmations"] > 0 else None
        if nxt is not None:
            ordered["nextblockhash"] = nxt.hash_hex
        return ordered

    def _address_pkh(self, address: str, message: str = "Error: Invalid address") -> bytes:
        try:
            return decode_address(address, self.params)
        except (AddressError, ValueError):
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, message) from None

    def _announce_tx(self, txid: bytes) -> None:
        if self.node.p2p is not None:
            self.node.p2p.announce_tx(txid)

    def _announce_block(self, block_hash: bytes) -> None:
        if self.node.p2p is not None:
            self.node.p2p.announce_block(block_hash)

    # -- control ------------------------------------------------------------------------

    def uptime(self, ctx: Any) -> int:
        return self.node.uptime

    # -- blockchain ---------------------------------------------------------------------

    def getblockcount(self, ctx: Any) -> int:
        return self.chain.height

    def getbestblockhash(self, ctx: Any) -> str:
        return self.chain.tip.hash_hex

    def getblockhash(self, ctx: Any, height: int) -> str:
        idx = self.chain.block_at_height(height)
        if idx is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return idx.hash_hex

    def getblockheader(self, ctx: Any, blockhash: str, verbose: bool) -> Any:
        idx = self._index(blockhash)
        if not verbose:
            return idx.header.serialized.hex()
        d = self._header_dict(idx)
        block = self.chain.get_block(idx.hash) if idx.have_data else None
        d["nTx"] = len(block.txs) if block is not None else 0
        return d

    def getblock(self, ctx: Any, blockhash: str, verbosity: Any) -> Any:
        level = _verbosity(verbosity, 1)
        idx = self._index(blockhash)
        block = self.chain.get_block(idx.hash)
        if block is None:
            raise RpcError(RPC_MISC_ERROR, "Block not available (not fully downloaded)")
        if level <= 0:
            return block.serialized.hex()
        d = self._header_dict(idx)
        body = block.to_dict(self.params, verbosity=2 if level >= 2 else 1)
        d["nTx"] = body["nTx"]
        for k in ("size", "strippedsize", "weight"):
            d[k] = body[k]
        d["tx"] = body["tx"]
        if level >= 2:
            # bitcoind adds each tx's hex (and fee when undo data is there) at verbosity 2.
            for tx, entry in zip(block.txs, d["tx"], strict=True):
                entry["hex"] = tx.serialized.hex()
        return d

    def getblockchaininfo(self, ctx: Any) -> dict[str, Any]:
        tip = self.chain.tip
        best = self.chain.best_header
        db = os.path.join(self.node.netdatadir, "chainstate.sqlite")
        size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        return {
            "chain": self.params.name,
            "blocks": tip.height,
            "headers": max(best.height, tip.height),
            "bestblockhash": tip.hash_hex,
            "difficulty": difficulty(tip.bits, self.params),
            "time": tip.time,
            "mediantime": self.chain.median_time_past(tip),
            "verificationprogress": 1.0 if tip.height >= best.height else tip.height / max(best.height, 1),
            "initialblockdownload": self._in_ibd(),
            "chainwork": tip.chainwork_hex,
            "size_on_disk": size,
            "pruned": False,
            # bitcoind >= 28: a list of the node's warnings (none here), not a string.
            "warnings": [],
        }

    def _in_ibd(self) -> bool:
        return self.chain.initial_block_download(self.node.now())

    def getchaintips(self, ctx: Any) -> list[dict[str, Any]]:
        return self.chain.chain_tips()

    def getdifficulty(self, ctx: Any) -> float:
        return difficulty(self.chain.tip.bits, self.params)

    def gettxout(self, ctx: Any, txid: str, n: int, include_mempool: bool) -> Any:
        op = OutPoint(parse_hash("txid", txid), n) if n >= 0 else None
        if op is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
        tip = self.chain.tip
        if include_mempool:
            if self.mempool.spends(op) is not None:
                return None
            entry = self.mempool.get(op.txid)
            if entry is not None:
                if n >= len(entry.tx.vout):
                    return None
                out = entry.tx.vout[n]
                return self._txout_dict(tip, 0, out.value, out.pkh, False)
        coin = self.chain.utxo(op)
        if coin is None:
            return None
        return self._txout_dict(tip, tip.height - coin.height + 1, coin.value, coin.pkh, coin.is_coinbase)

    def _txout_dict(self, tip: Any, confirmations: int, value: int, pkh: bytes, coinbase: bool) -> dict[str, Any]:
        return {
            "bestblock": tip.hash_hex,
            "confirmations": confirmations,
            "value": format_amount(value),
            "scriptPubKey": self._spk(pkh),
            "coinbase": coinbase,
        }

    def _spk(self, pkh: bytes) -> dict[str, Any]:
        return {"hex": pkh.hex(), "address": encode_address(pkh, self.params), "type": "pubkeyhash"}

    def gettxoutsetinfo(self, ctx: Any) -> dict[str, Any]:
        stats = dict(self.chain.utxo_stats())
        stats["total_amount"] = format_amount(stats["total_amount"])
        stats["bogosize"] = stats["txouts"] * 69     # bitcoind's estimate shape: 32+4+4+8+1+20
        db = os.path.join(self.node.netdatadir, "chainstate.sqlite")
        stats["disk_size"] = os.path.getsize(db) if os.path.exists(db) else 0
        return stats

    def invalidateblock(self, ctx: Any, blockhash: str) -> None:
        idx = self._index(blockhash)
        try:
            self.chain.invalidate_block(idx.hash)
        except BlockNotFound:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
        except ValueError as exc:
            raise RpcError(RPC_MISC_ERROR, str(exc)) from None
        except ValidationError as exc:
            raise RpcError(RPC_DATABASE_ERROR, str(exc)) from None
        self._announce_block(self.chain.tip.hash)

    def verifychain(self, ctx: Any, checklevel: int, nblocks: int) -> bool:
        # bitcoind: false, with the reason in the log only.
        result = self.chain.verify_chain(checklevel, nblocks)
        if not result.ok:
            log.warning("verifychain: %s", result.problem)
        return result.ok

    def reconsiderblock(self, ctx: Any, blockhash: str) -> None:
        idx = self._index(blockhash)
        try:
            self.chain.reconsider_block(idx.hash)
        except BlockNotFound:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
        except ValidationError as exc:
            raise RpcError(RPC_DATABASE_ERROR, str(exc)) from None
        self._announce_block(self.chain.tip.hash)

    # -- mempool ------------------------------------------------------------------------

    def getmempoolinfo(self, ctx: Any) -> dict[str, Any]:
        return self.mempool.info()

    def getrawmempool(self, ctx: Any, verbose: bool, mempool_sequence: bool) -> Any:
        txids = self.mempool.txids()
        if verbose:
            return {hash_to_hex(t): self.mempool.entry_dict(t) for t in txids}
        return [hash_to_hex(t) for t in txids]

    def getmempoolentry(self, ctx: Any, txid: str) -> dict[str, Any]:
        try:
            return self.mempool.entry_dict(parse_hash("txid", txid))
        except KeyError:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool") from None

    # -- raw transactions ---------------------------------------------------------------

    def getrawtransaction(self, ctx: Any, txid: str, verbose: Any, blockhash: str | None) -> Any:
        level = _verbosity(verbose, 0)
        h = parse_hash("parameter 1", txid)
        tx: Transaction | None = None
        in_block: Any = None
        if blockhash is not None:
            idx = self._index(blockhash)
            block = self.chain.get_block(idx.hash)
            if block is None:
                raise RpcError(RPC_MISC_ERROR, "Block not available")
            tx = next((t for t in block.txs if t.txid == h), None)
            if tx is None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "No such transaction found in the provided block.")
            in_block = idx
        else:
            entry = self.mempool.get(h)
            if entry is not None:
                tx = entry.tx
            else:
                found = self.chain.find_tx(h)
                if found is not None:
                    tx = found[0]
                    in_block = self.chain.get_index(found[1]) if found[1] is not None else None
        if tx is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY,
                           "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.")
        if level <= 0:
            return tx.serialized.hex()
        d = tx.to_dict(self.params)
        d["hex"] = tx.serialized.hex()
        if in_block is not None:
            d["blockhash"] = in_block.hash_hex
            conf = self._confirmations(in_block)
            d["in_active_chain"] = conf > 0
            if conf > 0:
                d["confirmations"] = conf
                d["time"] = d["blocktime"] = in_block.time
        return d

    def decoderawtransaction(self, ctx: Any, hexstring: str, iswitness: Any) -> dict[str, Any]:
        return _decode_tx(hexstring).to_dict(self.params)

    def createrawtransaction(self, ctx: Any, inputs: list[Any], outputs: Any, locktime: int,
                             replaceable: Any) -> str:
        vin: list[TxIn] = []
        for item in inputs:
            if not isinstance(item, dict):
                raise RpcError(-3, "Expected type object, got " + type(item).__name__)
            txid = item.get("txid")
            if not isinstance(txid, str):
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, missing txid key")
            vout = item.get("vout")
            if isinstance(vout, bool) or not isinstance(vout, int):
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, missing vout key")
            if vout < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            vin.append(TxIn(OutPoint(parse_hash("txid", txid), vout)))
        # bitcoind takes an object or an array of one-key objects (to allow ordering).
        pairs: list[tuple[str, Any]] = []
        if isinstance(outputs, dict):
            pairs = list(outputs.items())
        elif isinstance(outputs, list):
            for o in outputs:
                if not isinstance(o, dict):
                    raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, key-value pair not an object as expected")
                pairs.extend(o.items())
        else:
            raise RpcError(-3, "JSON value is not an object or array as expected")
        if not pairs:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, output argument must be non-null")
        seen: set[str] = set()
        vout_list: list[TxOut] = []
        for address, amount in pairs:
            if address == "data":
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, data outputs are not supported")
            pkh = self._address_pkh(address, f"Invalid CleanCoin address: {address}")
            if address in seen:
                raise RpcError(RPC_INVALID_PARAMETER, f"Invalid parameter, duplicated address: {address}")
            seen.add(address)
            try:
                value = parse_amount(amount)
            except ValueError as exc:
                raise RpcError(-3, str(exc)) from None
            vout_list.append(TxOut(value, pkh))
        if not 0 <= locktime <= 0xFFFFFFFF:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, locktime out of range")
        return Transaction(2, tuple(vin), tuple(vout_list), locktime).serialized.hex()


    def sendrawtransaction(self, ctx: Any, hexstring: str, maxfeerate: Any, maxburnamount: Any) -> str:
        tx = _decode_tx(hexstring)
        if tx.txid in self.mempool:
            # bitcoind: already in our pool is success (re-announced).
            self._announce_tx(tx.txid)
            return tx.txid_hex
        limit = parse_amount(DEFAULT_MAX_FEE_RATE if maxfeerate is None else maxfeerate)
        fee = self.mempool.fee_of(tx)
        if limit and fee is not None and fee_rate(fee, tx.size) > limit:
            raise RpcError(RPC_VERIFY_REJECTED, "max-fee-exceeded")
        try:
            self.mempool.accept(tx)
        except MempoolReject as rej:
            code = rej.code if rej.code in (RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED,
                                            RPC_VERIFY_ALREADY_IN_CHAIN) else RPC_VERIFY_REJECTED
            if code == RPC_VERIFY_ALREADY_IN_CHAIN:
                raise RpcError(code, "Transaction outputs already in utxo set") from None
            raise RpcError(code, rej.message) from None
        self._announce_tx(tx.txid)
        return tx.txid_hex

    # -- mining -------------------------------------------------------------------------

    def _mine(self, pkh: bytes, txs: list[Transaction], fees: int, max_tries: int,
              submit: bool = True) -> Block | None:
        """Build a block on the tip with `txs`, solve it within `max_tries` nonces (None if
        not found), and hand it to the chain as any block from a peer would be."""
        tip = self.chain.tip
        height = tip.height + 1
        block_time = max(int(self.node.now()), self.chain.median_time_past(tip) + 1)
        bits = self.chain.next_bits(tip)
        coinbase = create_coinbase(height, pkh, block_subsidy(height, self.params) + fees)
        block = solve(assemble_block(tip.header, [coinbase, *txs], block_time, bits),
                      self.params, max_tries)
        if block is None or not submit:
            return block
        try:
            self.chain.accept_block(block)
        except ValidationError as exc:
            raise RpcError(RPC_VERIFY_ERROR, f"TestBlockValidity failed: {exc.reason}") from None
        self._announce_block(block.hash)
        return block

    async def generatetoaddress(self, ctx: Any, nblocks: int, address: str, maxtries: int) -> list[str]:
        pkh = self._address_pkh(address)
        hashes: list[str] = []
        tries = maxtries
        while len(hashes) < nblocks and tries > 0:
            txs = self.mempool.select_for_block(self.params.max_block_size - 1000)
            fees = 0
            for tx in txs:
                entry = self.mempool.get(tx.txid)
                fees += entry.fee if entry is not None else 0
            block = self._mine(pkh, txs, fees, min(tries, 1_000_000))
            if block is None:
                break
            tries -= block.header.nonce + 1
            hashes.append(block.hash_hex)
            # Let P2P and other RPC calls in between blocks: a long generate must not
            # starve the loop.
            await asyncio.sleep(0)
        return hashes

    def generateblock(self, ctx: Any, output: str, transactions: list[Any], submit: bool) -> dict[str, Any]:
        pkh = self._address_pkh(output)
        txs: list[Transaction] = []
        for item in transactions:
            if not isinstance(item, str):
                raise RpcError(-3, "Expected type string")
            h = None
            if len(item) == 64:
                try:
                    h = bytes.fromhex(item)[::-1]
                except ValueError:
                    h = None
            entry = self.mempool.get(h) if h is not None else None
            if entry is not None:
                txs.append(entry.tx)
                continue
            if h is not None:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
            try:
                txs.append(Transaction.from_hex(item))
            except (DeserializationError, ValueError):
                raise RpcError(RPC_DESERIALIZATION_ERROR, f"Transaction decode failed for {item}") from None
        fees = self._block_fees(txs)
        block = self._mine(pkh, txs, fees, 1 << 32, submit=submit)
        assert block is not None
        out: dict[str, Any] = {"hash": block.hash_hex}
        if not submit:
            out["hex"] = block.serialized.hex()
        return out

    def _block_fees(self, txs: list[Transaction]) -> int:
        """Fees of `txs` in block order (a tx may spend an earlier one); an unknown input
        makes the block invalid, reported as bitcoind's TestBlockValidity failure."""
        created: dict[tuple[bytes, int], int] = {}
        fees = 0
        for tx in txs:
            total = 0
            for txin in tx.vin:
                key = (txin.prevout.txid, txin.prevout.n)
                if key in created:
                    total += created.pop(key)
                    continue
                coin = self.chain.utxo(txin.prevout)
                if coin is None:
                    raise RpcError(RPC_VERIFY_ERROR, "TestBlockValidity failed: bad-txns-inputs-missingorspent")
                total += coin.value
            fees += total - tx.value_out
            for n, out in enumerate(tx.vout):
                created[(tx.txid, n)] = out.value
        return fees

    # -- network ------------------------------------------------------------------------

    def _p2p(self) -> Any:
        if self.node.p2p is None:
            raise RpcError(RPC_CLIENT_P2P_DISABLED, "Error: Peer-to-peer functionality missing or disabled")
        return self.node.p2p

    def getconnectioncount(self, ctx: Any) -> int:
        return self._p2p().connection_count

    def getpeerinfo(self, ctx: Any) -> list[dict[str, Any]]:
        return self._p2p().peer_info()

    def getnetworkinfo(self, ctx: Any) -> dict[str, Any]:
        p2p = self._p2p()
        peers = p2p.peer_info()
        inbound = sum(1 for p in peers if p["inbound"])
        return {
            "version": CLIENT_VERSION,
            "subversion": p2p.user_agent,
            "protocolversion": PROTOCOL_VERSION,
            "localservices": f"{NODE_NETWORK:016x}",
            "localservicesnames": ["NETWORK"],
            "localrelay": True,
            "timeoffset": 0,
            "networkactive": True,
            "connections": len(peers),
            "connections_in": inbound,
            "connections_out": len(peers) - inbound,
            "networks": [],
            "relayfee": format_amount(self.mempool.min_relay_fee_per_kb),
            "incrementalfee": format_amount(self.mempool.incremental_relay_fee_per_kb),
            "localaddresses": [],
            "warnings": [],
        }

    def addnode(self, ctx: Any, node: str, command: str) -> None:
        if command not in ("add", "remove", "onetry"):
            raise RpcError(RPC_MISC_ERROR, self.node.registry.get("addnode").help_text())
        try:
            self._p2p().add_node(node, command)
        except P2PError as exc:
            raise RpcError(exc.code, exc.message) from None

    def disconnectnode(self, ctx: Any, address: str, nodeid: int | None) -> None:
        try:
            if address and nodeid is None:
                self._p2p().disconnect_node(addr=address)
            elif not address and nodeid is not None:
                self._p2p().disconnect_node(peer_id=nodeid)
            else:
                raise RpcError(RPC_INVALID_PARAMETER, "Only one of address and nodeid should be provided.")
        except P2PError as exc:
            raise RpcError(exc.code, exc.message) from None

    def setban(self, ctx: Any, subnet: str, command: str, bantime: int, absolute: bool) -> None:
        """bitcoind's setban for single addresses (this node bans IPs, not subnets)."""
        if command not in ("add", "remove"):
            raise RpcError(RPC_MISC_ERROR, self.node.registry.get("setban").help_text())
        p2p = self._p2p()
        address, slash, prefix = subnet.partition("/")
        if slash and prefix not in ("32", "128"):
            raise RpcError(RPC_CLIENT_INVALID_IP_OR_SUBNET,
                           "Error: Invalid IP/Subnet (this node bans single addresses: /32 or /128)")
        try:
            if command == "remove":
                p2p.unban(address)
                return None
            if p2p.is_banned(address):
                raise RpcError(RPC_CLIENT_NODE_ALREADY_ADDED, "Error: IP/Subnet already banned")
            if absolute:
                if bantime <= int(self.node.now()):
                    raise RpcError(RPC_INVALID_PARAMETER, f"Error: Absolute timestamp ({bantime}) "
                                                          "cannot be in the past")
                duration = bantime - int(self.node.now())
            else:
                duration = bantime if bantime > 0 else None
            p2p.ban(address, duration)
        except P2PError as exc:
            raise RpcError(exc.code, exc.message) from None
        return None

    def getaddednodeinfo(self, ctx: Any, node: str | None) -> list[dict[str, Any]]:
        try:
            return self._p2p().added_node_info(node)
        except P2PError as exc:
            raise RpcError(exc.code, exc.message) from None

    def listbanned(self, ctx: Any) -> list[dict[str, Any]]:
        return self._p2p().ban_list()

    def clearbanned(self, ctx: Any) -> None:
        self._p2p().clear_banned()

    # -- control and test helpers -------------------------------------------------------

    def getrpcinfo(self, ctx: Any) -> dict[str, Any]:
        return {"active_commands": ctx.registry.active_commands(),
                "logpath": os.path.join(self.node.netdatadir, "debug.log")}

    def setmocktime(self, ctx: Any, timestamp: int) -> None:
        if self.params.name != "regtest":
            raise RpcError(RPC_MISC_ERROR, "setmocktime is for regression testing (-regtest mode) only")
        if timestamp < 0:
            raise RpcError(RPC_INVALID_PARAMETER, f"Mocktime cannot be negative: {timestamp}.")
        self.node.mocktime = timestamp

    async def syncwithvalidationinterfacequeue(self, ctx: Any) -> None:
        """Until every wallet (in this process or another) has been handed the chain and mempool
        events that happened before this call, and has answered."""
        if self.node.notifications is not None:
            await self.node.notifications.wait_delivered()

    def submitheader(self, ctx: Any, hexdata: str) -> None:
        try:
            header = BlockHeader.from_bytes(bytes.fromhex(hexdata))
        except (ValueError, DeserializationError):
            raise RpcError(RPC_DESERIALIZATION_ERROR, "Block header decode failed") from None
        if self.chain.get_index(header.prev_hash) is None:
            raise RpcError(RPC_VERIFY_ERROR, f"Must submit previous header ({hash_to_hex(header.prev_hash)}) first")
        try:
            self.chain.accept_header(header)
        except ValidationError as exc:
            raise RpcError(RPC_VERIFY_ERROR, exc.reason) from None
        return None

    def scantxoutset(self, ctx: Any, action: str, scanobjects: list[Any] | None) -> Any:
        """bitcoind's scantxoutset in CleanCoin's descriptor forms (descriptors.py). A scan is
        one synchronous pass, so there is never one in progress to ask about or abort."""
        if action == "status":
            return None
        if action == "abort":
            return False
        if action != "start":
            raise RpcError(RPC_INVALID_PARAMETER, f"Invalid action '{action}'")
        if scanobjects is None:
            raise RpcError(RPC_MISC_ERROR, "scanobjects argument is required for the start action")
        wanted: dict[bytes, str] = {}
        for item in scanobjects:
            text = item.get("desc") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise RpcError(RPC_INVALID_PARAMETER, "Scan object needs to be either a string or an object")
            if isinstance(item, dict) and "range" in item:
                raise RpcError(RPC_INVALID_PARAMETER, "Range should not be specified for an un-ranged descriptor")
            try:
                descriptor = descriptors.parse(text, self.params)
            except descriptors.DescriptorError as exc:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, str(exc)) from None
            wanted[descriptor.pkh] = descriptor.text
        coins, scanned, tip = self.chain.coins_paying(frozenset(wanted))
        unspents = []
        total = 0
        for op, coin in coins:
            total += coin.value
            block = self.chain.block_at_height(coin.height)
            unspents.append({"txid": hash_to_hex(op.txid), "vout": op.n, "scriptPubKey": coin.pkh.hex(),
                             "desc": descriptors.with_checksum(wanted[coin.pkh]),
                             "amount": format_amount(coin.value), "coinbase": coin.is_coinbase,
                             "height": coin.height, "blockhash": block.hash_hex if block else None,
                             "confirmations": tip.height - coin.height + 1})
        return {"success": True, "txouts": scanned, "height": tip.height,
                "bestblock": tip.hash_hex, "unspents": unspents, "total_amount": format_amount(total)}

    def getdescriptorinfo(self, ctx: Any, descriptor: str) -> dict[str, Any]:
        try:
            parsed = descriptors.parse(descriptor, self.params)
        except descriptors.DescriptorError as exc:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, str(exc)) from None
        return {"descriptor": descriptors.with_checksum(parsed.text), "checksum": descriptors.checksum(descriptor.partition("#")[0]),
                "isrange": False, "issolvable": True, "hasprivatekeys": False}

    # -- util ---------------------------------------------------------------------------

    def validateaddress(self, ctx: Any, address: str) -> dict[str, Any]:
        try:
            pkh = decode_address(address, self.params)
        except (AddressError, ValueError):
            return {"isvalid": False, "error_locations": [],
                    "error": address_error(address, self.params) or "Invalid address"}
        return {"isvalid": True, "address": address, "scriptPubKey": pkh.hex(), "isscript": False,
                "iswitness": True, "witness_version": 0, "witness_program": pkh.hex()}


#: The "Result:" section of each method's help, in bitcoind's notation (abbreviated where a
#: result is a large object: the fields are those of the method's description).
RESULTS: dict[str, str] = {
    "uptime": "n    (numeric) The number of seconds that the server has been running",
    "getblockcount": "n    (numeric) The current block count",
    "getbestblockhash": '"hex"    (string) the block hash, hex-encoded',
    "getblockhash": '"hex"    (string) The block hash',
    "getblockheader": '{...}    (json object) for verbose = true: hash, confirmations, height, version, versionHex, merkleroot,\n'
                      '         time, mediantime, nonce, bits, difficulty, chainwork, nTx, previousblockhash, nextblockhash\n'
                      '"hex"    (string) for verbose = false: the 80-byte header, hex-encoded',
    "getblock": '"hex"    (string) for verbosity = 0: the serialized block, hex-encoded\n'
                '{...}    (json object) for verbosity = 1: the header fields, size, strippedsize, weight, tx (txids)\n'
                '{...}    (json object) for verbosity = 2: as 1, with each transaction decoded (and its hex)',
    "getblockchaininfo": '{                          (json object)\n'
                         '  "chain" : "str",         (string) main, test or regtest\n'
                         '  "blocks" : n,            (numeric) the height of the most-work fully-validated chain\n'
                         '  "headers" : n,           (numeric) the current number of headers validated\n'
                         '  "bestblockhash" : "str", (string) the hash of the currently best block\n'
                         '  "difficulty" : n, "time" : xxx, "mediantime" : xxx, "verificationprogress" : n,\n'
                         '  "initialblockdownload" : true|false, "chainwork" : "hex", "size_on_disk" : n,\n'
                         '  "pruned" : false,\n'
                         '  "warnings" : [ "str", ... ]   (json array) the node\'s warnings (bitcoind >= 28: a list)\n'
                         '}',
    "getchaintips": '[ { "height" : n, "hash" : "hex", "branchlen" : n, "status" : "str" }, ... ]    (json array)\n'
                    'status: active, valid-fork, valid-headers, headers-only or invalid',
    "getdifficulty": "n    (numeric) the proof-of-work difficulty as a multiple of the minimum difficulty",
    "getmempoolinfo": '{ "loaded" : true, "size" : n, "bytes" : n, "usage" : n, "total_fee" : n, "maxmempool" : n,\n'
                      '  "mempoolminfee" : n, "minrelaytxfee" : n, ... }    (json object)',
    "getrawmempool": '[ "hex", ... ]    (json array) for verbose = false: the transaction ids\n'
                     '{ "txid" : { ... }, ... }    (json object) for verbose = true: each as getmempoolentry',
    "getmempoolentry": '{ "vsize" : n, "weight" : n, "time" : xxx, "height" : n, "descendantcount" : n, ... ,\n'
                       '  "depends" : [ "hex", ... ], "spentby" : [ "hex", ... ] }    (json object)',
    "gettxout": 'null    (json null) when the output is spent or unknown\n'
                '{ "bestblock" : "hex", "confirmations" : n, "value" : n, "scriptPubKey" : { ... },\n'
                '  "coinbase" : true|false }    (json object)',
    "gettxoutsetinfo": '{ "height" : n, "bestblock" : "hex", "transactions" : n, "txouts" : n, "bogosize" : n,\n'
                       '  "hash_serialized" : "hex", "disk_size" : n, "total_amount" : n }    (json object)',
    "invalidateblock": "null    (json null)",
    "verifychain": "true|false    (boolean) Verified or not",
    "reconsiderblock": "null    (json null)",
    "getrawtransaction": '"str"    (string) for verbose = 0: the serialized transaction, hex-encoded\n'
                         '{ "txid" : "hex", ..., "hex" : "hex", "blockhash" : "hex", "confirmations" : n,\n'
                         '  "time" : xxx, "blocktime" : xxx }    (json object) for verbose = 1',
    "sendrawtransaction": '"hex"    (string) The transaction hash in hex',
    "decoderawtransaction": '{ "txid" : "hex", "hash" : "hex", "size" : n, "vsize" : n, "weight" : n, "version" : n,\n'
                            '  "locktime" : xxx, "vin" : [ ... ], "vout" : [ ... ] }    (json object)',
    "createrawtransaction": '"hex"    (string) hex string of the transaction',
    "generatetoaddress": '[ "hex", ... ]    (json array) hashes of blocks generated',
    "generateblock": '{ "hash" : "hex", "hex" : "str" }    (json object) the block hash; its hex when submit is false',
    "getconnectioncount": "n    (numeric) The connection count",
    "getpeerinfo": '[ { "id" : n, "addr" : "str", "addrbind" : "str", "network" : "str", "services" : "hex",\n'
                   '    "relaytxes" : true|false, "lastsend" : xxx, "lastrecv" : xxx, "bytessent" : n, "bytesrecv" : n,\n'
                   '    "conntime" : xxx, "pingtime" : n, "version" : n, "subver" : "str", "inbound" : true|false,\n'
                   '    "permissions" : [ "str", ... ], "connection_type" : "str", "startingheight" : n,\n'
                   '    "presynced_headers" : n, "synced_blocks" : n, ... }, ... ]    (json array)',
    "getnetworkinfo": '{ "version" : n, "subversion" : "str", "protocolversion" : n, "localservices" : "hex",\n'
                      '  "connections" : n, "connections_in" : n, "connections_out" : n, "relayfee" : n,\n'
                      '  "incrementalfee" : n, "warnings" : [ "str", ... ], ... }    (json object)',
    "addnode": "null    (json null)",
    "disconnectnode": "null    (json null)",
    "setban": "null    (json null)",
    "getaddednodeinfo": '[ { "addednode" : "str", "connected" : true|false,\n'
                        '    "addresses" : [ { "address" : "str", "connected" : "outbound" }, ... ] }, ... ]    (json array)',
    "listbanned": '[ { "address" : "str", "ban_created" : xxx, "banned_until" : xxx, "ban_duration" : xxx,\n'
                  '    "time_remaining" : xxx, "ban_reason" : "str" }, ... ]    (json array)',
    "clearbanned": "null    (json null)",
    "getrpcinfo": '{ "active_commands" : [ { "method" : "str", "duration" : n }, ... ],  (json array) the calls\n'
                  '                                          being executed, each with its running time in microseconds\n'
                  '  "logpath" : "str" }    (string) the complete path to the debug log',
    "setmocktime": "null    (json null)",
    "syncwithvalidationinterfacequeue": "null    (json null)",
    "submitheader": "null    (json null) None",
    "scantxoutset": '{ "success" : true, "txouts" : n, "height" : n, "bestblock" : "hex",\n'
                    '  "unspents" : [ { "txid" : "hex", "vout" : n, "scriptPubKey" : "hex", "desc" : "str",\n'
                    '                   "amount" : n, "coinbase" : true|false, "height" : n, "blockhash" : "hex",\n'
                    '                   "confirmations" : n }, ... ],\n'
                    '  "total_amount" : n }    (json object) for start\n'
                    'null    (json null) for status (a scan is never in progress: scans are synchronous)\n'
                    'false   (boolean) for abort',
    "getdescriptorinfo": '{ "descriptor" : "str", "checksum" : "str", "isrange" : false, "issolvable" : true,\n'
                         '  "hasprivatekeys" : false }    (json object)',
    "validateaddress": '{ "isvalid" : true|false, "address" : "str", "scriptPubKey" : "hex", "isscript" : false,\n'
                       '  "iswitness" : true, "witness_version" : n, "witness_program" : "hex",\n'
                       '  "error" : "str", "error_locations" : [ n, ... ] }    (json object)',
}


def register_node_methods(registry: Registry, node: NodeContext) -> NodeRpc:
    """Add every node method to `registry`; returns the handler object."""
    r = NodeRpc(node)
    bh = Param("blockhash", STR, help="The block hash")

    def add(name: str, handler: Any, params: Any = (), **options: Any) -> None:
        registry.add(name, handler, params, result=RESULTS[name], **options)

    add("uptime", r.uptime, category="control", help="Returns the total uptime of the server.")
    add("getrpcinfo", r.getrpcinfo, category="control", help="Returns details of the RPC server.")
    # blockchain
    add("getblockcount", r.getblockcount, category="blockchain",
        help="Returns the height of the most-work fully-validated chain.")
    add("getbestblockhash", r.getbestblockhash, category="blockchain",
        help="Returns the hash of the best (tip) block in the most-work fully-validated chain.")
    add("getblockhash", r.getblockhash, [Param("height", INT, help="The height index")],
        category="blockchain", help="Returns hash of block in best-block-chain at height provided.")
    add("getblockheader", r.getblockheader, [bh, Param("verbose", BOOL, True, "true for a json object, false for the hex-encoded data")],
        category="blockchain", help="Returns information about the block header (hex when verbose is false).")
    add("getblock", r.getblock, [bh, Param("verbosity", ANY, 1, "0 for hex-encoded data, 1 for a JSON object, 2 for JSON object with transaction data")],
        category="blockchain", help="Returns the block as hex (0), a JSON object (1) or with decoded transactions (2).")
    add("getblockchaininfo", r.getblockchaininfo, category="blockchain",
        help="Returns an object containing various state info regarding blockchain processing.")
    add("getchaintips", r.getchaintips, category="blockchain",
        help="Return information about all known tips in the block tree, including the main chain as well as orphaned branches.")
    add("getdifficulty", r.getdifficulty, category="blockchain",
        help="Returns the proof-of-work difficulty as a multiple of the minimum difficulty.")
    add("getmempoolinfo", r.getmempoolinfo, category="blockchain", help="Returns details on the active state of the TX memory pool.")
    add("getrawmempool", r.getrawmempool, [Param("verbose", BOOL, False, "True for a json object, false for array of transaction ids"),
                                           Param("mempool_sequence", BOOL, False, "Not supported; ignored")],
        category="blockchain", help="Returns all transaction ids in memory pool.")
    add("getmempoolentry", r.getmempoolentry, [Param("txid", STR, help="The transaction id (must be in mempool)")],
        category="blockchain", help="Returns mempool data for given transaction.")
    add("gettxout", r.gettxout, [Param("txid", STR, help="The transaction id"), Param("n", INT, help="vout number"),
                                 Param("include_mempool", BOOL, True, "Whether to include the mempool")],
        category="blockchain", help="Returns details about an unspent transaction output.")
    add("gettxoutsetinfo", r.gettxoutsetinfo, category="blockchain",
        help="Returns statistics about the unspent transaction output set.")
    add("scantxoutset", r.scantxoutset, [Param("action", STR, help='"start" to scan, "abort" or "status" (no scan is ever in progress)'),
                                         Param("scanobjects", ARR, None, 'Descriptors to scan for: "addr(<address>)" or '
                                               '"pkh(<public key hex>)", or objects {"desc": ...}')],
        category="blockchain", help="Scans the unspent transaction output set for entries that match certain output descriptors.")
    add("invalidateblock", r.invalidateblock, [bh], category="blockchain",
        help="Permanently marks a block as invalid, as if it violated a consensus rule.")
    add("verifychain", r.verifychain, [Param("checklevel", INT, DEFAULT_CHECK_LEVEL,
                                             "How thorough the block verification is: 0 reads the blocks, 1 checks "
                                             "their rules, 2 their undo data, 3 the coins they left in the UTXO set, "
                                             "4 connects them again (0-4)"),
                                       Param("nblocks", INT, DEFAULT_CHECK_BLOCKS, "The number of blocks to check (0 = all)")],
        category="blockchain", help="Verifies blockchain database.")
    add("reconsiderblock", r.reconsiderblock, [bh], category="blockchain",
        help="Removes invalidity status of a block, its ancestors and its descendants, reconsider them for activation.")
    add("syncwithvalidationinterfacequeue", r.syncwithvalidationinterfacequeue, category="hidden", hidden=True,
        help="Waits for the validation interface queue to catch up on everything that was there when we entered this function.")
    # raw transactions
    add("getrawtransaction", r.getrawtransaction, [Param("txid", STR, help="The transaction id"),
                                                   Param("verbose", ANY, 0, "0/false for hex, 1/true for a json object"),
                                                   Param("blockhash", STR, None, "The block in which to look for the transaction")],
        category="rawtransactions", help="Return the raw transaction data (from the mempool or the transaction index).")
    add("sendrawtransaction", r.sendrawtransaction, [Param("hexstring", STR, help="The hex string of the raw transaction"),
                                                     Param("maxfeerate", AMOUNT, DEFAULT_MAX_FEE_RATE, "Reject transactions whose fee rate is higher than this, in coins/kvB; 0 accepts any"),
                                                     Param("maxburnamount", AMOUNT, Decimal(0), "Not used (no unspendable outputs here)")],
        category="rawtransactions", help="Submit a raw transaction (serialized, hex-encoded) to local node and network.")
    add("decoderawtransaction", r.decoderawtransaction, [Param("hexstring", STR, help="The transaction hex string"),
                                                         Param("iswitness", BOOL, None, "Ignored (no witness data)")],
        category="rawtransactions", help="Return a JSON object representing the serialized, hex-encoded transaction.")
    add("createrawtransaction", r.createrawtransaction, [Param("inputs", ARR, help='[{"txid":"hex","vout":n},...]'),
                                                         Param("outputs", ANY, help='{"address":amount,...}'),
                                                         Param("locktime", INT, 0, "Raw locktime"),
                                                         Param("replaceable", BOOL, False, "Ignored (no replacement)")],
        category="rawtransactions", help="Create an unsigned transaction spending the given inputs and creating new outputs. Returns hex.")
    # mining / generating
    add("generatetoaddress", r.generatetoaddress, [Param("nblocks", INT, help="How many blocks are generated"),
                                                   Param("address", STR, help="The address to send the newly generated coins to"),
                                                   Param("maxtries", INT, 1_000_000, "How many iterations to try")],
        category="generating", help="Mine blocks immediately to a specified address (before the RPC call returns).")
    add("generateblock", r.generateblock, [Param("output", STR, help="The address to send the newly generated coins to"),
                                           Param("transactions", ARR, help="An array of hex strings which are either txids or raw transactions"),
                                           Param("submit", BOOL, True, "Whether to submit the block")],
        category="generating", help="Mine a set of ordered transactions to a specified address and return the block hash.")
    add("submitheader", r.submitheader, [Param("hexdata", STR, help="the hex-encoded block header data")],
        category="mining", help="Decode the given hexdata as a header and submit it as a candidate chain tip if valid.\n"
                                "Throws when the header is invalid.")
    # network
    add("getconnectioncount", r.getconnectioncount, category="network", help="Returns the number of connections to other nodes.")
    add("getpeerinfo", r.getpeerinfo, category="network", help="Returns data about each connected network peer.")
    add("getnetworkinfo", r.getnetworkinfo, category="network", help="Returns an object containing various state info regarding P2P networking.")
    add("addnode", r.addnode, [Param("node", STR, help="The address of the peer to connect to"),
                               Param("command", STR, help="'add' to add a node to the list, 'remove' to remove a node from the list, 'onetry' to try a connection to the node once")],
        category="network", help="Attempts to add or remove a node from the addnode list, or to try a connection to a node once.")
    add("disconnectnode", r.disconnectnode, [Param("address", STR, "", "The IP address/port of the node"),
                                             Param("nodeid", INT, None, "The node ID (see getpeerinfo for node IDs)")],
        category="network", help="Immediately disconnects from the specified peer node.")
    add("setban", r.setban, [Param("subnet", STR, help="The IP address (with an optional /32 or /128) to ban or unban"),
                             Param("command", STR, help="'add' to add an IP to the list, 'remove' to remove it"),
                             Param("bantime", INT, 0, "time in seconds how long the IP is banned (0 or empty means the "
                                   "default of 24h); an absolute Unix time with absolute=true"),
                             Param("absolute", BOOL, False, "If set, the bantime must be an absolute timestamp")],
        category="network", help="Attempts to add or remove an IP from the banned list.")
    add("getaddednodeinfo", r.getaddednodeinfo, [Param("node", STR, None, "If provided, return information about this specific node")],
        category="network", help="Returns information about the given added node, or all added nodes (onetry nodes are not listed here).")
    add("listbanned", r.listbanned, category="network", help="List all manually banned IPs.")
    add("clearbanned", r.clearbanned, category="network", help="Clear all banned IPs.")
    # util
    add("validateaddress", r.validateaddress, [Param("address", STR, help="The address to validate")],
        category="util", help="Return information about the given address.")
    add("getdescriptorinfo", r.getdescriptorinfo, [Param("descriptor", STR, help="The descriptor.")],
        category="util", help="Analyses a descriptor (CleanCoin's forms: addr(<address>), pkh(<public key hex>)).")
    add("setmocktime", r.setmocktime, [Param("timestamp", INT, help="Unix seconds-since-epoch timestamp; 0 returns "
                                             "to the system time")],
        category="hidden", hidden=True, help="Set the local time to given timestamp (-regtest only).")
    return r
