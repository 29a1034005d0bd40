"""The wallet's JSON-RPC methods, with bitcoind's names, parameters, result shapes and errors.

`register_wallet_methods(registry, loader)` adds them to a `components.rpc.registry.Registry`
and installs bitcoind's wallet resolution (`/wallet/<name>`; the only loaded wallet is the
default). Per-wallet methods are `wallet=True`: the resolver gives the wallet's name and the
handler looks it up in the `WalletManager`. Error codes are bitcoind's: -4 wallet error,
-5 invalid address, -6 insufficient funds, -13 unlock needed, -14 wrong passphrase,
-15 wrong encryption state, -18 not found, -19 not specified, -35 already loaded.

Messages never echo a passphrase or a secret: the handlers pass passphrases to the wallet and
build their errors from fixed texts only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cleancoin.components.common.address import AddressError, decode_address, encode_address
from cleancoin.components.common.amount import format_amount, parse_amount
from cleancoin.components.common.hashes import hash_to_hex, hex_to_hash
from cleancoin.components.common.errors import DeserializationError, ValidationError
from cleancoin.components.common.keys import verify_input
from cleancoin.components.common.primitives import OutPoint, Transaction
from cleancoin.components.common.private_files import ReplacedFile
from cleancoin.components.rpc.errors import (
    RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_MISC_ERROR, RPC_INVALID_PARAMETER, RPC_TYPE_ERROR, RPC_WALLET_ALREADY_LOADED,
    RPC_WALLET_ERROR, RPC_WALLET_INSUFFICIENT_FUNDS, RPC_WALLET_KEYPOOL_RAN_OUT,
    RPC_WALLET_NOT_FOUND, RPC_WALLET_PASSPHRASE_INCORRECT, RPC_WALLET_UNLOCK_NEEDED,
    RPC_WALLET_WRONG_ENC_STATE, RpcError,
)
from cleancoin.components.rpc.registry import (
    AMOUNT, ARR, BOOL, INT, OBJ, STR, CallContext, Param, Registry, loaded_wallets_resolver,
)

from .coins import AmountTooSmall, CoinSelectionError, FeeExceedsMaximum, InsufficientFunds
from .crypto import WrongPassphrase
from cleancoin.components.common.fee_cap import fee_rate_text
from .hd import path_string
from .store import WalletError, WalletInUse, WalletTx
from ..common.diskfail import WriteFailure
from .wallet import KeypoolRanOut, UnlockNeeded, Wallet, WalletFormatError, WalletManager, verify_message

#: Longest walletpassphrase timeout (bitcoind caps it at 2^30 seconds).
MAX_UNLOCK_SECONDS: int = 1 << 30


def _wallet_error(exc: Exception) -> RpcError:
    """A wallet exception -> its bitcoind error code."""
    if isinstance(exc, WriteFailure):
        return RpcError(exc.rpc_code, exc.rpc_message)
    if isinstance(exc, UnlockNeeded):
        return RpcError(RPC_WALLET_UNLOCK_NEEDED, str(exc))
    if isinstance(exc, WrongPassphrase):
        return RpcError(RPC_WALLET_PASSPHRASE_INCORRECT,
                        "Error: The wallet passphrase entered was incorrect.")
    if isinstance(exc, KeypoolRanOut):
        return RpcError(RPC_WALLET_KEYPOOL_RAN_OUT, str(exc))
    if isinstance(exc, InsufficientFunds):
        return RpcError(RPC_WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")
    if isinstance(exc, FeeExceedsMaximum):      # bitcoind's SendMoney: -6 with the error's text
        return RpcError(RPC_WALLET_INSUFFICIENT_FUNDS, str(exc))
    if isinstance(exc, AmountTooSmall):
        return RpcError(RPC_TYPE_ERROR, str(exc))
    if isinstance(exc, CoinSelectionError):
        return RpcError(RPC_WALLET_ERROR, str(exc))
    return RpcError(RPC_WALLET_ERROR, str(exc))


@dataclass(frozen=True)
class _Coins:
    """What the listing methods ask about each transaction, read once per call (one query
    for what each spender spends of our coins, one for the best block) instead of once or
    twice per transaction and coin: listtransactions read every coin of the wallet again
    for each transaction, quadratic in its size (issue #16). A handler reads it where it
    does not await again."""

    best: int                       # the wallet's best block's height
    spenders: set[bytes]            # txids of transactions that spend coins of ours
    spent: dict[bytes, int]         # the value of our coins each of those spends

    @classmethod
    def read(cls, w: Wallet) -> "_Coins":
        spent = w.store.spent_values()
        _, best = w.store.best_block
        return cls(best, set(spent), spent)


class WalletRpc:
    """The handlers, bound to one loader."""

    def __init__(self, loader: WalletManager) -> None:
        self.loader = loader
        self.params = loader.params

    # -- helpers -----------------------------------------------------------------------

    def _w(self, ctx: CallContext) -> Wallet:
        try:
            return self.loader.get(ctx.wallet)
        except WalletError:
            raise RpcError(RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded") from None

    def _pkh(self, address: str) -> bytes:
        try:
            return decode_address(address, self.params)
        except (AddressError, ValueError):
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address") from None

    @staticmethod
    def _units(amount: Any) -> int:
        try:
            units = parse_amount(amount)
        except ValueError:
            raise RpcError(RPC_TYPE_ERROR, "Amount out of range") from None
        if units <= 0:
            raise RpcError(RPC_TYPE_ERROR, "Invalid amount for send")
        return units

    @staticmethod
    def _txid(value: str) -> bytes:
        try:
            if len(value) != 64:
                raise ValueError
            return hex_to_hash(value)
        except ValueError:
            raise RpcError(RPC_INVALID_PARAMETER, f"txid must be of length 64 (not {len(value)}, "
                                                  f"for '{value}')") from None

    def _tx_entries(self, w: Wallet, wtx: WalletTx, coins: _Coins) -> list[dict[str, Any]]:
        """listtransactions-style entries of one transaction: a "receive" per output paying
        us (not change of our own send), a "send" per output paying others when we spent."""
        tx = wtx.tx
        txid = tx.txid
        from_me = txid in coins.spenders
        conf = w.confirmations(wtx.block_height, coins.best)
        if wtx.conflicted or wtx.abandoned:
            conf = -1 if wtx.conflicted else 0
        base = self._tx_state(w, wtx, conf, coins.spenders)
        if wtx.abandoned:
            base["abandoned"] = True
        fee = None
        if from_me:
            spent = coins.spent.get(txid, 0)
            fee = spent - tx.value_out if spent >= tx.value_out else None
        out: list[dict[str, Any]] = []
        for n, o in enumerate(tx.vout):
            rec = w.store.key_by_pkh(o.pkh)
            address = encode_address(o.pkh, self.params)
            if rec is not None and not (from_me and rec.internal):
                if tx.is_coinbase:
                    coin_conf = w.confirmations(wtx.block_height, coins.best)
                    category = ("orphan" if wtx.conflicted else
                                "generate" if coin_conf > self.params.coinbase_maturity else "immature")
                else:
                    category = "receive"
                out.append({"address": address, "category": category,
                            "amount": format_amount(o.value), "vout": n, **base})
            if from_me and rec is None:
                e = {"address": address, "category": "send", "amount": -format_amount(o.value),
                     "vout": n, **base}
                if fee is not None:
                    e["fee"] = -format_amount(fee)
                out.append(e)
        return out

    @staticmethod
    def _tx_state(w: Wallet, wtx: WalletTx, conf: int, spenders: set[bytes]) -> dict[str, Any]:
        """bitcoind's WalletTxToJSON fields, in its order: where the transaction is confirmed,
        or, while it is not, whether it is `trusted` (CachedTxIsTrusted: ours, in the mempool,
        spending only trusted outputs of ours; its balance counts then)."""
        state: dict[str, Any] = {"confirmations": conf}
        if wtx.tx.is_coinbase:
            state["generated"] = True
        if wtx.block_hash is not None:
            state.update(blockhash=hash_to_hex(wtx.block_hash), blockheight=wtx.block_height,
                         blockindex=wtx.block_pos)
        else:
            state["trusted"] = w.tx_trusted(wtx.tx.txid, spenders)
        state.update(txid=hash_to_hex(wtx.tx.txid), time=wtx.time, timereceived=wtx.time)
        return state

    # -- wallet management (not per wallet) ---------------------------------------------

    async def createwallet(self, ctx: CallContext, wallet_name: str, disable_private_keys: bool,
                           blank: bool, passphrase: str, avoid_reuse: bool, descriptors: Any,
                           load_on_startup: Any) -> dict[str, Any]:
        if disable_private_keys or blank:
            raise RpcError(RPC_WALLET_ERROR, "Watch-only and blank wallets are not supported")
        self._check_load_on_startup(load_on_startup)
        try:
            await self.loader.create(wallet_name, passphrase or "")
        except WriteFailure as exc:
            raise _wallet_error(exc) from None
        except WalletInUse as exc:
            raise RpcError(RPC_WALLET_ERROR, str(exc)) from None
        except WalletError as exc:
            code = RPC_WALLET_ALREADY_LOADED if "loaded" in str(exc) else -36 if "exists" in str(exc) else RPC_WALLET_ERROR
            raise RpcError(code, str(exc)) from None
        return self._named(wallet_name, self.loader.update_startup(wallet_name, load_on_startup))

    @staticmethod
    def _check_load_on_startup(value: Any) -> None:
        if value is not None and not isinstance(value, bool):
            raise RpcError(RPC_TYPE_ERROR, "load_on_startup must be a boolean or null")

    @staticmethod
    def _named(name: str, warnings: list[str]) -> dict[str, Any]:
        """createwallet/loadwallet/restorewallet's result; `warnings` only when there are."""
        return {"name": name, "warnings": warnings} if warnings else {"name": name}

    async def loadwallet(self, ctx: CallContext, filename: str, load_on_startup: Any) -> dict[str, Any]:
        self._check_load_on_startup(load_on_startup)
        try:
            await self.loader.load(filename)
        except (FileNotFoundError, WalletFormatError) as exc:
            raise RpcError(RPC_WALLET_NOT_FOUND, str(exc)) from None
        except WalletInUse as exc:       # open in another process or loader: bitcoind's -4
            raise RpcError(RPC_WALLET_ERROR, str(exc)) from None
        except WalletError as exc:
            code = RPC_WALLET_ALREADY_LOADED if "already loaded" in str(exc) else RPC_WALLET_ERROR
            raise RpcError(code, str(exc)) from None
        return self._named(filename, self.loader.update_startup(filename, load_on_startup))

    async def unloadwallet(self, ctx: CallContext, wallet_name: str | None,
                           load_on_startup: Any) -> dict[str, Any]:
        if wallet_name is not None and ctx.uri_wallet is not None and wallet_name != ctx.uri_wallet:
            raise RpcError(RPC_INVALID_PARAMETER, "RPC endpoint wallet and wallet_name parameter "
                                                  "specify different wallets")
        self._check_load_on_startup(load_on_startup)
        name = wallet_name if wallet_name is not None else await _resolve(ctx)
        if name not in self.loader.wallets:
            raise RpcError(RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
        await self.loader.unload(name)
        warnings = self.loader.update_startup(name, load_on_startup)
        return {"warnings": warnings} if warnings else {}

    def listwallets(self, ctx: CallContext) -> list[str]:
        return self.loader.names()

    def listwalletdir(self, ctx: CallContext) -> dict[str, Any]:
        return {"wallets": [{"name": n} for n in self.loader.on_disk()]}

    async def restorewallet(self, ctx: CallContext, wallet_name: str, backup_file: str,
                            load_on_startup: Any) -> dict[str, Any]:
        self._check_load_on_startup(load_on_startup)
        try:
            await self.loader.restore(wallet_name, backup_file)
        except FileNotFoundError as exc:
            raise RpcError(RPC_INVALID_PARAMETER, str(exc)) from None
        except FileExistsError as exc:
            raise RpcError(-36, str(exc)) from None
        except WalletFormatError as exc:   # bitcoind's FAILED_BAD_FORMAT
            raise RpcError(RPC_WALLET_NOT_FOUND, str(exc)) from None
        except (WalletError, OSError) as exc:
            raise RpcError(RPC_WALLET_ERROR, str(exc)) from None
        return self._named(wallet_name, self.loader.update_startup(wallet_name, load_on_startup))

    # -- per-wallet -----------------------------------------------------------------------

    def getwalletinfo(self, ctx: CallContext) -> dict[str, Any]:
        w = self._w(ctx)
        with w.store.reading():         # one snapshot, one read lock (store.reading)
            return self._walletinfo(w)

    def _walletinfo(self, w: Wallet) -> dict[str, Any]:
        b = w.balances()
        best_hash, best_height = w.store.best_block
        info: dict[str, Any] = {
            "walletname": w.name, "walletversion": 1, "format": "sqlite",
            "balance": format_amount(b.trusted),
            "unconfirmed_balance": format_amount(b.untrusted_pending),
            "immature_balance": format_amount(b.immature),
            "txcount": w.store.transaction_count(),
            "keypoolsize": w.store.unused_keys(False),
            "keypoolsize_hd_internal": w.store.unused_keys(True),
            "paytxfee": format_amount(w.pay_tx_fee),
            "private_keys_enabled": True, "avoid_reuse": False, "descriptors": False,
            "scanning": False,
            "lastprocessedblock": {"hash": hash_to_hex(best_hash) if best_hash else None,
                                   "height": best_height},
            "anchor": w.anchor_info(),
        }
        if w.store.encrypted:
            info["unlocked_until"] = w.unlocked_until
        return info

    def _new(self, ctx: CallContext, internal: bool, label: str = "") -> str:
        w = self._w(ctx)
        try:
            rec = w.new_key(internal)
        except WalletError as exc:
            raise _wallet_error(exc) from None
        if label:
            w.store.set_label(rec.address, label)
        return rec.address

    def getnewaddress(self, ctx: CallContext, label: str, address_type: Any) -> str:
        return self._new(ctx, False, label)

    def getrawchangeaddress(self, ctx: CallContext, address_type: Any) -> str:
        return self._new(ctx, True)

    def getaddressinfo(self, ctx: CallContext, address: str) -> dict[str, Any]:
        w = self._w(ctx)
        pkh = self._pkh(address)
        rec = w.store.key_by_pkh(pkh)
        info: dict[str, Any] = {"address": address, "scriptPubKey": "76a914" + pkh.hex() + "88ac",
                                "ismine": rec is not None, "solvable": rec is not None,
                                "iswatchonly": False, "isscript": False, "iswitness": False}
        if rec is not None:
            info.update(pubkey=rec.pubkey.hex(), iscompressed=True, ischange=rec.internal,
                        hdkeypath=path_string(rec.index, rec.internal),
                        labels=[w.store.label(address)] if w.store.label(address) else [])
        return info

    def getbalance(self, ctx: CallContext, dummy: Any, minconf: int, include_watchonly: Any,
                   avoid_reuse: Any) -> Decimal:
        w = self._w(ctx)
        if dummy is not None and dummy != "*":
            raise RpcError(-32, 'dummy first argument must be excluded or set to "*".')
        # bitcoind counts locked coins in the balance: locking only keeps them out of selection.
        with w.store.reading():         # one snapshot, one read lock (store.reading)
            spenders = w._spenders()
            _, best = w.store.best_block        # once, not twice per coin (issue #16)
            total = sum(c.value for c in w.store.coins() if w.is_mature(c, best)
                        and w.is_trusted(c, spenders) and w.confirmations(c.height, best) >= minconf)
        return format_amount(total)

    def getbalances(self, ctx: CallContext) -> dict[str, Any]:
        w = self._w(ctx)
        with w.store.reading():         # one snapshot, one read lock (store.reading)
            b = w.balances()
            best_hash, best_height = w.store.best_block
        return {"mine": {"trusted": format_amount(b.trusted),
                         "untrusted_pending": format_amount(b.untrusted_pending),
                         "immature": format_amount(b.immature)},
                "lastprocessedblock": {"hash": hash_to_hex(best_hash) if best_hash else None,
                                       "height": best_height}}

    def listunspent(self, ctx: CallContext, minconf: int, maxconf: int, addresses: Any,
                    include_unsafe: bool, query_options: Any) -> list[dict[str, Any]]:
        w = self._w(ctx)
        wanted = None if not addresses else {self._pkh(a) for a in addresses}
        out = []
        spenders = w._spenders()
        _, best = w.store.best_block        # once, not twice per coin (issue #16)
        for c in w.store.coins():
            conf = w.confirmations(c.height, best)
            if not minconf <= conf <= maxconf or not w.is_mature(c, best):
                continue
            if wanted is not None and c.pkh not in wanted:
                continue
            if c.height is None and not w.in_mempool(c.outpoint.txid):
                continue        # bitcoind's AvailableCoins: unconfirmed and not in the mempool

            safe = w.is_trusted(c, spenders)
            if not safe and not include_unsafe:
                continue
            address = encode_address(c.pkh, self.params)
            rec = w.store.key_by_pkh(c.pkh)
            e = {"txid": hash_to_hex(c.outpoint.txid), "vout": c.outpoint.n, "address": address,
                 "scriptPubKey": "76a914" + c.pkh.hex() + "88ac", "amount": format_amount(c.value),
                 "confirmations": conf, "spendable": not w.is_locked_coin(c), "solvable": True,
                 "safe": safe}
            if w.store.label(address):
                e["label"] = w.store.label(address)
            if rec is not None and rec.internal:
                e["desc"] = f"pkh({rec.pubkey.hex()})"
            out.append(e)
        return out

    def lockunspent(self, ctx: CallContext, unlock: bool, transactions: Any, persistent: bool) -> bool:
        """bitcoind's lockunspent: a lock lives in memory (until unload or restart) unless
        `persistent`, which stores it in the wallet; unlocking removes either kind."""
        w = self._w(ctx)
        if transactions is None:
            if unlock:
                for c in w.store.coins():
                    if w.is_locked_coin(c):
                        w.unlock_coin(c.outpoint, c.locked)
            return True
        ops = []
        for t in transactions:
            if not isinstance(t, dict) or "txid" not in t or "vout" not in t:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, expected txid and vout")
            if not isinstance(t["vout"], int) or t["vout"] < 0:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, vout cannot be negative")
            ops.append(OutPoint(self._txid(t["txid"]), t["vout"]))
        unspent = {c.outpoint: c for c in w.store.coins()}
        for op in ops:
            c = unspent.get(op)
            if c is None:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, unknown transaction output")
            locked = w.is_locked_coin(c)
            # bitcoind: locking a locked coin again is an error, unless it makes it persistent.
            if not unlock and locked and not persistent:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, output already locked")
            if unlock and not locked:
                raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, expected locked output")
        for op in ops:
            if unlock:
                w.unlock_coin(op, unspent[op].locked)
            else:
                w.lock_coin(op, persistent)
        return True

    def listlockunspent(self, ctx: CallContext) -> list[dict[str, Any]]:
        w = self._w(ctx)
        return [{"txid": hash_to_hex(op.txid), "vout": op.n} for op in w.locked_outpoints()]

    def listtransactions(self, ctx: CallContext, label: Any, count: int, skip: int,
                         include_watchonly: Any) -> list[dict[str, Any]]:
        w = self._w(ctx)
        if count < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Negative count")
        if skip < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Negative from")
        coins = _Coins.read(w)
        entries = [e for wtx in w.store.transactions() for e in self._tx_entries(w, wtx, coins)]
        if label not in (None, "*"):
            entries = [e for e in entries if w.store.label(e["address"]) == label]
        # Newest last, as bitcoind: take `count` from the end after skipping `skip`.
        end = len(entries) - skip
        return entries[max(0, end - count):max(0, end)]

    def gettransaction(self, ctx: CallContext, txid: str, include_watchonly: Any,
                       verbose: bool) -> dict[str, Any]:
        w = self._w(ctx)
        wtx = w.store.get_transaction(self._txid(txid))
        if wtx is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
        coins = _Coins.read(w)
        details = self._tx_entries(w, wtx, coins)
        tx = wtx.tx
        mine_in = coins.spent.get(tx.txid, 0)
        mine_out = sum(o.value for o in tx.vout if w.store.key_by_pkh(o.pkh) is not None)
        conf = -1 if wtx.conflicted else w.confirmations(wtx.block_height, coins.best)
        r: dict[str, Any] = {}
        net = mine_out - mine_in
        fee = None
        if mine_in:
            fee = mine_in - tx.value_out
            net += fee      # bitcoind: amount excludes the fee
        r["amount"] = format_amount(net) if net >= 0 else -format_amount(-net)
        if fee is not None:
            r["fee"] = -format_amount(fee)
        r.update(self._tx_state(w, wtx, conf, coins.spenders))
        keep = ("address", "category", "amount", "vout", "fee", "abandoned")
        r["details"] = [{k: v for k, v in d.items() if k in keep} for d in details]
        r["hex"] = tx.to_bytes().hex()
        if wtx.abandoned:
            r["abandoned"] = True
        if wtx.conflicted:
            r["walletconflicts"] = []
        if verbose:
            r["decoded"] = tx.to_dict(self.params)
        return r

    async def listsinceblock(self, ctx: CallContext, blockhash: str | None, target_confirmations: int,
                             include_watchonly: Any, include_removed: Any) -> dict[str, Any]:
        """bitcoind's listsinceblock. `transactions`: the wallet's transactions whose depth is
        below that of `blockhash` (or of its fork point with the active chain, when the block
        left it), unconfirmed ones included. `removed` (include_removed, default true): the
        wallet transactions of the blocks from `blockhash` down to that fork point, i.e. of
        blocks a reorg took out of the active chain (the store keeps which blocks held which
        wallet transactions: block_txs). `lastblock`: the block at depth
        `target_confirmations` under the wallet's last block, to pass next time."""
        w = self._w(ctx)
        if target_confirmations < 1:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter")
        removed_wanted = True if include_removed is None else bool(include_removed)
        best_hash, best = w.store.best_block
        depth = -1
        stale: list[bytes] = []       # blocks of `blockhash`'s branch above the fork, newest first
        if blockhash:
            if len(blockhash) != 64:
                raise RpcError(RPC_INVALID_PARAMETER, f"blockhash must be of length 64 (not "
                                                      f"{len(blockhash)}, for '{blockhash}')")
            try:
                h = hex_to_hash(blockhash)
            except ValueError:
                raise RpcError(RPC_INVALID_PARAMETER, "blockhash must be hexadecimal string "
                                                      f"(not '{blockhash}')") from None
            # The common ancestor with the wallet's own chain (bitcoind's findCommonAncestor
            # with the wallet's last block): a block of it is found in the wallet's header
            # rows, by hash, at its own height; only a block off it is walked down through
            # the node's headers to the first that is the wallet's, or that the node's active
            # chain holds where the wallet has no rows (above its best block: not caught up
            # yet; below its rows). Before 12-07 the node's word decided: one that named a
            # wallet block 15 as its block 20 made the payments at 16..20 go unlisted.
            low = w.store.linked_from(best)
            # A block the wallet's chain held until a reorganisation replaced its row: its
            # branch is walked down by the wallet's own headers (`left_headers`, each naming
            # its parent by hash) to the wallet's chain. Before 12-07 this too was the node's
            # word: one that called such a block its active chain's, above the wallet's tip,
            # made `removed` empty, and a client kept crediting payments reorganised away.
            at, h, height = _walk_left(w, h, stale)
            if at is None and h == w.params.genesis_block.hash:
                at = 0                  # the network's own, whatever the node says of it
            if at is None:
                try:
                    info = await w.chain.get_block_header_info(h)
                    if stale and info.height != height:
                        raise ValueError("not the block the wallet's header names")
                    at = w.store.chain_height(h, info.height)
                    while at is None and not (info.in_active_chain and (
                            low is None or info.height > best or info.height < low)):
                        stale.append(info.hash)
                        parent = await w.chain.get_block_header_info(info.prev_hash)
                        # Down one height a step, at most MAX_STALE_WALK steps: the node may
                        # be compromised, and a branch of headers that never meets the active
                        # chain (a cycle, or heights that do not fall) would hold this call
                        # and its memory for ever.
                        if parent.height != info.height - 1 or len(stale) >= MAX_STALE_WALK:
                            raise ValueError("not a branch of the chain")
                        info = parent
                        # At the height the node names (no search by hash each step: the
                        # walk is the node's word anyway, and up to MAX_STALE_WALK steps long).
                        at = w.store.chain_height(info.hash, info.height, search=False)
                except Exception:  # noqa: BLE001 - the node does not know the block (or its parent)
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None
                if at is None:
                    at = info.height
            depth = best + 1 - min(at, best)
        coins = _Coins.read(w)             # after the awaits above: as the wallet is now
        txs = []
        for wtx in w.store.transactions():
            conf = -1 if wtx.conflicted else w.confirmations(wtx.block_height, coins.best)
            if depth == -1 or abs(conf) < depth:
                txs.extend(self._tx_entries(w, wtx, coins))
        removed = []
        if removed_wanted:
            for block_hash in stale:
                for txid in w.store.block_txids(block_hash):
                    wtx = w.store.get_transaction(txid)
                    if wtx is not None:
                        removed.extend(self._tx_entries(w, wtx, coins))
        lastblock = ""
        if best_hash is not None:
            # The wallet's own block at that depth (its header row), not the node's word; below
            # its rows the network's genesis block (the client lists more next time, never
            # less). Before 12-07 the node's hash there: a made-up one, which the node then
            # placed above its tip, hid the payments confirmed before the client's next poll.
            target = min(target_confirmations, best + 1)
            row = w.store.headers(best + 1 - target, best + 1 - target).get(best + 1 - target)
            lastblock = (hash_to_hex(best_hash if target == 1 else row[0]) if target == 1 or row is not None
                         else w.params.genesis_hash_hex)
        return {"transactions": txs, "removed": removed, "lastblock": lastblock}

    async def _send(self, w: Wallet, outputs: list[tuple[bytes, int]], sff: set[int],
                    fee_rate: int | None = None) -> Any:
        try:
            return await w.send(outputs, sff, fee_rate)
        except (WalletError, CoinSelectionError, WrongPassphrase) as exc:
            raise _wallet_error(exc) from None
        except ValueError as exc:
            raise RpcError(RPC_INVALID_PARAMETER, str(exc)) from None

    @staticmethod
    def _fee_rate(fee_rate: Any) -> int | None:
        """sendtoaddress' fee_rate is in units per byte (sat/vB); ours is per 1000 bytes."""
        if fee_rate is None:
            return None
        try:
            return int(Decimal(str(fee_rate)) * 1000)
        except Exception:  # noqa: BLE001
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid fee_rate") from None

    async def sendtoaddress(self, ctx: CallContext, address: str, amount: Any, comment: Any,
                            comment_to: Any, subtractfeefromamount: bool, replaceable: Any,
                            conf_target: Any, estimate_mode: Any, avoid_reuse: Any,
                            fee_rate: Any, verbose: bool) -> Any:
        w = self._w(ctx)
        pkh = self._pkh(address)
        tx, fee = await self._send(w, [(pkh, self._units(amount))],
                                   {0} if subtractfeefromamount else set(), self._fee_rate(fee_rate))
        if verbose:
            return {"txid": tx.txid_hex, "fee_reason": "Fallback fee" if not w.pay_tx_fee else "PayTxFee"}
        return tx.txid_hex

    async def sendmany(self, ctx: CallContext, dummy: Any, amounts: Any, minconf: Any, comment: Any,
                       subtractfeefrom: Any, replaceable: Any, conf_target: Any,
                       estimate_mode: Any, fee_rate: Any, verbose: bool) -> Any:
        w = self._w(ctx)
        if dummy not in (None, ""):
            raise RpcError(RPC_INVALID_PARAMETER, 'Dummy value must be set to ""')
        if not isinstance(amounts, dict) or not amounts:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, amounts must be a non-empty object")
        outputs, addresses = [], list(amounts)
        for address in addresses:
            outputs.append((self._pkh(address), self._units(amounts[address])))
        sff = set()
        for a in subtractfeefrom or []:
            if a not in amounts:
                raise RpcError(RPC_INVALID_PARAMETER,
                               f"Invalid parameter, subtractfeefrom address not among the outputs: {a}")
            sff.add(addresses.index(a))
        tx, _ = await self._send(w, outputs, sff, self._fee_rate(fee_rate))
        return {"txid": tx.txid_hex} if verbose else tx.txid_hex

    def settxfee(self, ctx: CallContext, amount: Any) -> bool:
        w = self._w(ctx)
        try:
            rate = parse_amount(amount)
        except ValueError:
            raise RpcError(RPC_TYPE_ERROR, "Amount out of range") from None
        if rate > w.max_tx_fee:     # bitcoind compares the rate with the cap read as a rate
            raise RpcError(RPC_INVALID_PARAMETER,
                           f"txfee cannot be more than wallet max tx fee ({fee_rate_text(w.max_tx_fee)})")
        w.pay_tx_fee = rate
        return True

    async def encryptwallet(self, ctx: CallContext, passphrase: str) -> str:
        w = self._w(ctx)
        if not passphrase:
            raise RpcError(RPC_INVALID_PARAMETER, "passphrase cannot be empty")
        if w.store.encrypted:
            raise RpcError(RPC_WALLET_WRONG_ENC_STATE, "Error: running with an encrypted wallet, "
                                                       "but encryptwallet was called.")
        try:
            await asyncio.to_thread(w.encrypt, passphrase)   # scrypt: keep the loop serving
        except WalletError as exc:
            raise _wallet_error(exc) from None
        return ("wallet encrypted; The keypool has been flushed and a new HD seed was not "
                "generated: the existing seed is now stored encrypted. You need to make a new "
                "backup with backupwallet.")

    async def walletpassphrase(self, ctx: CallContext, passphrase: str, timeout: int) -> None:
        w = self._w(ctx)
        if not w.store.encrypted:
            raise RpcError(RPC_WALLET_WRONG_ENC_STATE, "Error: running with an unencrypted wallet, "
                                                       "but walletpassphrase was called.")
        if not passphrase:
            raise RpcError(RPC_INVALID_PARAMETER, "passphrase cannot be empty")
        if timeout < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Timeout cannot be negative.")
        timeout = min(timeout, MAX_UNLOCK_SECONDS)
        try:
            secret = await asyncio.to_thread(w.store.unlock, passphrase)
        except WrongPassphrase as exc:
            raise _wallet_error(exc) from None
        try:
            w.set_unlocked(secret, timeout)      # on the loop: the relock timer lives here
        except WalletError as exc:
            raise _wallet_error(exc) from None
        return None

    async def walletpassphrasechange(self, ctx: CallContext, oldpassphrase: str,
                                     newpassphrase: str) -> None:
        w = self._w(ctx)
        if not w.store.encrypted:
            raise RpcError(RPC_WALLET_WRONG_ENC_STATE, "Error: running with an unencrypted wallet, "
                                                       "but walletpassphrasechange was called.")
        if not oldpassphrase or not newpassphrase:
            raise RpcError(RPC_INVALID_PARAMETER, "passphrase cannot be empty")
        try:
            await asyncio.to_thread(w.change_passphrase, oldpassphrase, newpassphrase)
        except (WalletError, WrongPassphrase) as exc:
            raise _wallet_error(exc) from None
        return None

    def walletlock(self, ctx: CallContext) -> None:
        w = self._w(ctx)
        if not w.store.encrypted:
            raise RpcError(RPC_WALLET_WRONG_ENC_STATE, "Error: running with an unencrypted wallet, "
                                                       "but walletlock was called.")
        w.lock()
        return None

    def backupwallet(self, ctx: CallContext, destination: str) -> None:
        w = self._w(ctx)
        try:
            w.backup(destination)
        except PermissionError:
            # Under CleanCoin-node the wallet process may write only in its wallets directory.
            raise RpcError(RPC_WALLET_ERROR, f"Error: Wallet backup failed! Permission denied writing "
                                             f"{destination} (a sandboxed wallet process can write only "
                                             f"inside {self.loader.netdatadir / 'wallets'})") from None
        except ReplacedFile as exc:
            raise RpcError(RPC_WALLET_ERROR, f"Error: Wallet backup failed! {exc}") from None
        except (OSError, WalletError) as exc:
            raise RpcError(RPC_WALLET_ERROR, f"Error: Wallet backup failed! ({type(exc).__name__})") from None
        return None

    async def rescanblockchain(self, ctx: CallContext, start_height: int,
                               stop_height: int | None) -> dict[str, Any]:
        w = self._w(ctx)
        tip = await w.chain.get_height()
        if start_height < 0 or start_height > tip:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid start_height")
        if stop_height is not None and (stop_height < 0 or stop_height > tip or stop_height < start_height):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid stop_height")
        try:
            start, stop = await w.rescan(start_height, stop_height)
        except WalletError as exc:      # a block of the node's refused (headers.py)
            raise RpcError(RPC_MISC_ERROR, str(exc)) from None
        return {"start_height": start, "stop_height": stop}

    async def abandontransaction(self, ctx: CallContext, txid: str) -> None:
        w = self._w(ctx)
        try:
            await w.abandon(self._txid(txid))
        except WalletError as exc:
            # bitcoind answers -5 both for an unknown and for an ineligible transaction.
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, str(exc)) from None
        return None

    def keypoolrefill(self, ctx: CallContext, newsize: int) -> None:
        w = self._w(ctx)
        if newsize < 0:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid parameter, expected valid size.")
        try:
            w.top_up_keypool(max(newsize, 1))
        except WalletError as exc:
            raise _wallet_error(exc) from None
        return None

    def signmessage(self, ctx: CallContext, address: str, message: str) -> str:
        w = self._w(ctx)
        try:
            pkh = decode_address(address, self.params)
        except (AddressError, ValueError):
            raise RpcError(RPC_TYPE_ERROR, "Invalid address") from None
        if w.store.key_by_pkh(pkh) is None:
            raise RpcError(RPC_WALLET_ERROR, "Private key not available")
        try:
            return w.sign_message(pkh, message)
        except WalletError as exc:
            raise _wallet_error(exc) from None

    def signrawtransactionwithwallet(self, ctx: CallContext, hexstring: str, prevtxs: Any,
                                     sighashtype: str) -> dict[str, Any]:
        """bitcoind's signrawtransactionwithwallet: signs the inputs that spend outputs paying
        this wallet's keys. The spent outputs come from `prevtxs` ({txid, vout, scriptPubKey,
        amount}: scriptPubKey is the 20-byte pubkey hash in hex, as gettxout shows it) or from
        the wallet's own transactions. An input is complete when its signature verifies."""
        w = self._w(ctx)
        if sighashtype not in ("ALL", "DEFAULT"):
            raise RpcError(RPC_INVALID_PARAMETER, f"'{sighashtype}' is not a valid sighash parameter.")
        try:
            tx = Transaction.from_hex(hexstring)
        except (DeserializationError, ValueError):
            raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.") from None
        given: dict[OutPoint, bytes] = {}
        for prev in prevtxs or []:
            if not isinstance(prev, dict):
                raise RpcError(RPC_TYPE_ERROR, "expected object with {\"txid\",\"vout\",\"scriptPubKey\"}")
            vout = prev.get("vout")
            spk = prev.get("scriptPubKey")
            if isinstance(vout, bool) or not isinstance(vout, int) or vout < 0:
                raise RpcError(RPC_DESERIALIZATION_ERROR, "vout must be positive")
            if not isinstance(spk, str):
                raise RpcError(RPC_TYPE_ERROR, "Missing scriptPubKey")
            try:
                pkh = bytes.fromhex(spk)
            except ValueError:
                pkh = b""
            if len(pkh) != 20:
                raise RpcError(RPC_INVALID_PARAMETER, "scriptPubKey must be a 20-byte pubkey hash in hex")
            given[OutPoint(self._txid(str(prev.get("txid", ""))), vout)] = pkh
        prev_pkhs: list[bytes | None] = []
        for txin in tx.vin:
            pkh = given.get(txin.prevout)
            if pkh is None:
                parent = w.store.get_transaction(txin.prevout.txid)
                if parent is not None and txin.prevout.n < len(parent.tx.vout):
                    pkh = parent.tx.vout[txin.prevout.n].pkh
            prev_pkhs.append(pkh)
        try:
            signed, _ = w.sign_inputs(tx, prev_pkhs)
        except WalletError as exc:
            raise _wallet_error(exc) from None
        errors = []
        for i, (txin, pkh) in enumerate(zip(signed.vin, prev_pkhs, strict=True)):
            reason = "Input not found or already spent" if pkh is None else None
            if pkh is not None:
                try:
                    verify_input(signed, i, pkh)
                except ValidationError:
                    reason = "Unable to sign input, invalid stack size (possibly missing key)"
            if reason is not None:
                errors.append({"txid": hash_to_hex(txin.prevout.txid), "vout": txin.prevout.n, "witness": [],
                               "scriptSig": txin.script_sig.hex(), "error": reason})   # no sequence numbers here
        result: dict[str, Any] = {"hex": signed.to_bytes().hex(), "complete": not errors}
        if errors:
            result["errors"] = errors
        return result

    def verifymessage(self, ctx: CallContext, address: str, signature: str, message: str) -> bool:
        try:
            pkh = decode_address(address, self.params)
        except (AddressError, ValueError):
            raise RpcError(RPC_TYPE_ERROR, "Invalid address") from None
        try:
            return verify_message(pkh, signature, message)
        except ValueError:
            raise RpcError(RPC_TYPE_ERROR, "Malformed base64 encoding") from None


async def _resolve(ctx: CallContext) -> str:
    """The wallet a call is for, by the registry's resolver (for methods not `wallet=True`)."""
    res = ctx.registry.wallet_resolver(ctx.uri_wallet)
    return await res if asyncio.iscoroutine(res) else res


_OBJ_NULL = "null    (json null)"

#: The "Result:" section of each method's help (bitcoind's notation, large objects abbreviated).
RESULTS: dict[str, str] = {
    "createwallet": '{ "name" : "str", "warnings" : [ "str", ... ] }    (json object) warnings only when there are',
    "loadwallet": '{ "name" : "str", "warnings" : [ "str", ... ] }    (json object) warnings only when there are',
    "unloadwallet": '{ "warnings" : [ "str", ... ] }    (json object) warnings only when there are',
    "listwallets": '[ "walletname", ... ]    (json array)',
    "listwalletdir": '{ "wallets" : [ { "name" : "str" }, ... ] }    (json object)',
    "restorewallet": '{ "name" : "str", "warnings" : [ "str", ... ] }    (json object) warnings only when there are',
    "getwalletinfo": '{ "walletname" : "str", "walletversion" : n, "format" : "sqlite", "balance" : n,\n'
                     '  "unconfirmed_balance" : n, "immature_balance" : n, "txcount" : n, "keypoolsize" : n,\n'
                     '  "keypoolsize_hd_internal" : n, "unlocked_until" : xxx, "paytxfee" : n,\n'
                     '  "private_keys_enabled" : true, "lastprocessedblock" : { "hash" : "hex", "height" : n },\n'
                     '  "anchor" : { "status" : "anchored"|"waiting"|"none", "minimumchainwork" : "hex",\n'
                     '               "reason" : "str", "message" : "str" }, ... }    (json object)',
    "getnewaddress": '"str"    (string) The new address',
    "getrawchangeaddress": '"str"    (string) The address',
    "getaddressinfo": '{ "address" : "str", "scriptPubKey" : "hex", "ismine" : true|false, "solvable" : true|false,\n'
                      '  "iswatchonly" : false, "pubkey" : "hex", "ischange" : true|false, "hdkeypath" : "str",\n'
                      '  "labels" : [ "str", ... ], ... }    (json object)',
    "getbalance": "n    (numeric) The total amount received for this wallet",
    "getbalances": '{ "mine" : { "trusted" : n, "untrusted_pending" : n, "immature" : n },\n'
                   '  "lastprocessedblock" : { "hash" : "hex", "height" : n } }    (json object)',
    "listunspent": '[ { "txid" : "hex", "vout" : n, "address" : "str", "label" : "str", "scriptPubKey" : "str",\n'
                   '    "amount" : n, "confirmations" : n, "spendable" : true|false, "solvable" : true,\n'
                   '    "safe" : true|false }, ... ]    (json array)',
    "lockunspent": "true|false    (boolean) Whether the command was successful or not",
    "listlockunspent": '[ { "txid" : "hex", "vout" : n }, ... ]    (json array)',
    "listtransactions": '[ { "address" : "str", "category" : "str", "amount" : n, "vout" : n, "fee" : n,\n'
                        '    "confirmations" : n, "generated" : true, "blockhash" : "hex", "blockheight" : n,\n'
                        '    "blockindex" : n, "trusted" : true|false (only when unconfirmed), "txid" : "hex",\n'
                        '    "time" : xxx, "timereceived" : xxx, "abandoned" : true }, ... ]    (json array)',
    "gettransaction": '{ "amount" : n, "fee" : n, "confirmations" : n, "blockhash" : "hex", "blockheight" : n,\n'
                      '  "trusted" : true|false (only when unconfirmed), "txid" : "hex", "time" : xxx,\n'
                      '  "details" : [ { "address" : "str", "category" : "str", "amount" : n, "vout" : n }, ... ],\n'
                      '  "hex" : "hex", "decoded" : {...} (verbose only) }    (json object)',
    "listsinceblock": '{ "transactions" : [ ... ], "removed" : [ ... ], "lastblock" : "hex" }    (json object)\n'
                      'each transaction as listtransactions shows it',
    "sendtoaddress": '"hex"    (string) The transaction id (verbose: { "txid" : "hex", "fee_reason" : "str" })',
    "sendmany": '"hex"    (string) The transaction id (verbose: { "txid" : "hex" })',
    "settxfee": "true|false    (boolean) Returns true if successful",
    "encryptwallet": '"str"    (string) A string with further instructions',
    "walletpassphrase": _OBJ_NULL,
    "walletpassphrasechange": _OBJ_NULL,
    "walletlock": _OBJ_NULL,
    "backupwallet": _OBJ_NULL,
    "rescanblockchain": '{ "start_height" : n, "stop_height" : n }    (json object)',
    "abandontransaction": _OBJ_NULL,
    "keypoolrefill": _OBJ_NULL,
    "signmessage": '"str"    (string) The signature of the message encoded in base 64',
    "signrawtransactionwithwallet": '{ "hex" : "hex", "complete" : true|false,\n'
                                    '  "errors" : [ { "txid" : "hex", "vout" : n, "witness" : [], "scriptSig" : "hex",\n'
                                    '                 "error" : "str" }, ... ] }    (json object)\n'
                                    'errors only when an input could not be signed (no "sequence": inputs have none here)',
    "verifymessage": "true|false    (boolean) If the signature is verified or not.",
}


def _walk_left(w: Wallet, block_hash: bytes, stale: list[bytes]) -> tuple[int | None, bytes, int | None]:
    """Walk down from `block_hash` through the headers of blocks that left the wallet's chain
    (`WalletStore.left_header`), appending each to `stale`: (the height where the walk met the
    wallet's chain, or None; the hash where it stopped; that hash's height, None if unknown).
    Heights fall one a step, so the walk ends."""
    height: int | None = None
    while (left := w.store.left_header(block_hash)) is not None:
        height = left[0]
        if w.store.chain_height(block_hash, height, search=False) is not None:
            return height, block_hash, height             # back in the wallet's chain
        stale.append(block_hash)
        block_hash, height = left[1][4:36], height - 1
        if w.store.chain_height(block_hash, height, search=False) is not None:
            return height, block_hash, height
    return None, block_hash, height


#: The longest stale branch listsinceblock walks down to the active chain (bitcoind's deepest
#: reorg on mainnet was 24 blocks; a node that answers with more is not believed).
MAX_STALE_WALK = 10_000

#: What a wallet process started with -forwardrpc=read serves through the node: the methods that
#: neither spend, sign, unlock, encrypt, back up, restore, load or unload, nor change how the
#: wallet spends (fees, locked coins, abandoned transactions). A node is the process the
#: internet talks to; in that mode a compromised one can read the wallet and hand out its
#: addresses, and nothing more (docs/multiprocess.md).
READ_METHODS = frozenset({
    "listwallets", "listwalletdir", "getwalletinfo", "getnewaddress", "getrawchangeaddress",
    "getaddressinfo", "getbalance", "getbalances", "listunspent", "listlockunspent",
    "listtransactions", "gettransaction", "listsinceblock", "verifymessage",
})


def register_wallet_methods(registry: Registry, loader: WalletManager) -> WalletRpc:
    """Add the wallet methods and bitcoind's /wallet/<name> resolution to `registry`."""
    registry.wallet_resolver = loaded_wallets_resolver(loader.names)
    r = WalletRpc(loader)

    def add(name: str, handler: Any, params: list[Param] | tuple[()] = (), *, wallet: bool = True,
            help: str = "") -> None:
        registry.add(name, handler, params, category="wallet", help=help, wallet=wallet,
                     result=RESULTS[name])

    lo = Param("load_on_startup", BOOL, None, "Save wallet name to persistent settings and load on startup. "
               "True to add wallet to startup list, false to remove, null to leave unchanged.")
    add("createwallet", r.createwallet, [
        Param("wallet_name", STR, help="The name for the new wallet."),
        Param("disable_private_keys", BOOL, False, "Not supported"),
        Param("blank", BOOL, False, "Not supported"),
        Param("passphrase", STR, "", "Encrypt the wallet with this passphrase."),
        Param("avoid_reuse", BOOL, False, "Ignored"), Param("descriptors", BOOL, None, "Ignored"), lo],
        wallet=False, help="Creates and loads a new wallet.")
    add("loadwallet", r.loadwallet, [Param("filename", STR, help="The wallet directory or .dat file."), lo],
        wallet=False, help="Loads a wallet from a wallet file or directory.")
    add("unloadwallet", r.unloadwallet, [Param("wallet_name", STR, None, "The name of the wallet to unload."), lo],
        wallet=False, help="Unloads the wallet referenced by the request endpoint or the wallet_name argument.")
    add("listwallets", r.listwallets, wallet=False, help="Returns a list of currently loaded wallets.")
    add("listwalletdir", r.listwalletdir, wallet=False, help="Returns a list of wallets in the wallet directory.")
    add("restorewallet", r.restorewallet, [Param("wallet_name", STR, help="The name that will be applied to the restored wallet"),
                                           Param("backup_file", STR, help="The backup file that will be used to restore the wallet."), lo],
        wallet=False, help="Restores and loads a wallet from backup.")
    add("getwalletinfo", r.getwalletinfo, help="Returns an object containing various wallet state info.")
    add("getnewaddress", r.getnewaddress, [Param("label", STR, "", "The label name for the address."),
                                           Param("address_type", STR, None, "Ignored (one address type)")],
        help="Returns a new address for receiving payments.")
    add("getrawchangeaddress", r.getrawchangeaddress, [Param("address_type", STR, None, "Ignored")],
        help="Returns a new address, for receiving change.")
    add("getaddressinfo", r.getaddressinfo, [Param("address", STR, help="The address")],
        help="Return information about the given address.")
    add("getbalance", r.getbalance, [Param("dummy", STR, None, 'Remains for backward compatibility. Must be excluded or set to "*".'),
                                     Param("minconf", INT, 0, "Only include transactions confirmed at least this many times."),
                                     Param("include_watchonly", BOOL, None, "Ignored"),
                                     Param("avoid_reuse", BOOL, None, "Ignored")],
        help="Returns the total available balance.")
    add("getbalances", r.getbalances, help="Returns an object with all balances in coins.")
    add("listunspent", r.listunspent, [Param("minconf", INT, 1, "The minimum confirmations to filter"),
                                       Param("maxconf", INT, 9999999, "The maximum confirmations to filter"),
                                       Param("addresses", ARR, None, "The addresses to filter"),
                                       Param("include_unsafe", BOOL, True, "Include outputs that are not safe to spend"),
                                       Param("query_options", OBJ, None, "Ignored")],
        help="Returns array of unspent transaction outputs with between minconf and maxconf confirmations.")
    add("lockunspent", r.lockunspent, [Param("unlock", BOOL, help="Whether to unlock (true) or lock (false) the specified transactions"),
                                       Param("transactions", ARR, None, "The transaction outputs"),
                                       Param("persistent", BOOL, False, "Whether to write/erase this lock in the wallet database, "
                                             "or keep the change in memory only (lost when the wallet is unloaded or the node restarts)")],
        help="Updates list of temporarily unspendable outputs.")
    add("listlockunspent", r.listlockunspent, help="Returns list of locked unspent outputs.")
    add("listtransactions", r.listtransactions, [Param("label", STR, None, "Return transactions with this label, or * for all"),
                                                 Param("count", INT, 10, "The number of transactions to return"),
                                                 Param("skip", INT, 0, "The number of transactions to skip"),
                                                 Param("include_watchonly", BOOL, None, "Ignored")],
        help="Returns up to 'count' most recent transactions skipping the first 'from' transactions.")
    add("gettransaction", r.gettransaction, [Param("txid", STR, help="The transaction id"),
                                             Param("include_watchonly", BOOL, None, "Ignored"),
                                             Param("verbose", BOOL, False, "Whether to include a `decoded` field")],
        help="Get detailed information about in-wallet transaction <txid>.")
    add("listsinceblock", r.listsinceblock, [Param("blockhash", STR, None, "If set, the block hash to list transactions since"),
                                             Param("target_confirmations", INT, 1, "Return the nth block hash from the main chain, "
                                                   "e.g. 1 would mean the best block hash (lastblock)"),
                                             Param("include_watchonly", BOOL, None, "Ignored"),
                                             Param("include_removed", BOOL, True, "Show transactions that were removed due to a "
                                                   "reorg in the \"removed\" array")],
        help="Get all transactions in blocks since block [blockhash], or all transactions if omitted.")
    fee_params = [Param("replaceable", BOOL, None, "Ignored"), Param("conf_target", INT, None, "Ignored"),
                  Param("estimate_mode", STR, None, "Ignored")]
    add("sendtoaddress", r.sendtoaddress, [Param("address", STR, help="The address to send to."),
                                           Param("amount", AMOUNT, help="The amount to send."),
                                           Param("comment", STR, None, "Ignored"), Param("comment_to", STR, None, "Ignored"),
                                           Param("subtractfeefromamount", BOOL, False, "The fee will be deducted from the amount being sent."),
                                           *fee_params, Param("avoid_reuse", BOOL, None, "Ignored"),
                                           Param("fee_rate", AMOUNT, None, "Fee rate in units per byte."),
                                           Param("verbose", BOOL, False, "If true, return extra information about the transaction.")],
        help="Send an amount to a given address.")
    add("sendmany", r.sendmany, [Param("dummy", STR, help='Must be set to "" for backwards compatibility.'),
                                 Param("amounts", OBJ, help='{"address":amount,...}'),
                                 Param("minconf", INT, None, "Ignored"), Param("comment", STR, None, "Ignored"),
                                 Param("subtractfeefrom", ARR, None, "The addresses the fee is subtracted from equally"),
                                 *fee_params, Param("fee_rate", AMOUNT, None, "Fee rate in units per byte."),
                                 Param("verbose", BOOL, False, "If true, return extra information.")],
        help="Send multiple times. Amounts are double-precision floating point numbers.")
    add("settxfee", r.settxfee, [Param("amount", AMOUNT, help="The transaction fee rate in coins/kvB")],
        help="Set the transaction fee rate in coins/kvB for this wallet (0: the network's minimum relay fee).")
    add("encryptwallet", r.encryptwallet, [Param("passphrase", STR, help="The pass phrase to encrypt the wallet with.")],
        help="Encrypts the wallet with 'passphrase'.")
    add("walletpassphrase", r.walletpassphrase, [Param("passphrase", STR, help="The wallet passphrase"),
                                                 Param("timeout", INT, help="The time to keep the decryption key in seconds")],
        help="Stores the wallet decryption key in memory for 'timeout' seconds.")
    add("walletpassphrasechange", r.walletpassphrasechange, [Param("oldpassphrase", STR, help="The current passphrase"),
                                                             Param("newpassphrase", STR, help="The new passphrase")],
        help="Changes the wallet passphrase from 'oldpassphrase' to 'newpassphrase'.")
    add("walletlock", r.walletlock, help="Removes the wallet encryption key from memory, locking the wallet.")
    add("backupwallet", r.backupwallet, [Param("destination", STR, help="The destination file")],
        help="Safely copies the wallet file to the destination, which must not exist.")
    add("rescanblockchain", r.rescanblockchain, [Param("start_height", INT, 0, "block height where the rescan should start"),
                                                 Param("stop_height", INT, None, "the last block height that should be scanned")],
        help="Rescan the local blockchain for wallet related transactions.")
    add("abandontransaction", r.abandontransaction, [Param("txid", STR, help="The transaction id")],
        help="Mark in-wallet transaction <txid> as abandoned.")
    add("keypoolrefill", r.keypoolrefill, [Param("newsize", INT, 100, "The new keypool size")],
        help="Fills the keypool.")
    add("signmessage", r.signmessage, [Param("address", STR, help="The address to use for the private key."),
                                       Param("message", STR, help="The message to create a signature of.")],
        help="Sign a message with the private key of an address.")
    add("signrawtransactionwithwallet", r.signrawtransactionwithwallet, [
        Param("hexstring", STR, help="The transaction hex string"),
        Param("prevtxs", ARR, None, 'The previous outputs this transaction depends on that the wallet does not know: '
              '[{"txid":"hex","vout":n,"scriptPubKey":"hex (the 20-byte pubkey hash)","amount":amount},...]'),
        Param("sighashtype", STR, "DEFAULT", 'The signature hash type: "DEFAULT" or "ALL" (the only one of this chain)')],
        help="Sign inputs for raw transaction (serialized, hex-encoded) with the keys of this wallet.")
    add("verifymessage", r.verifymessage, [Param("address", STR, help="The address to use for the signature."),
                                           Param("signature", STR, help="The signature provided by the signer in base 64 encoding."),
                                           Param("message", STR, help="The message that was signed.")],
        wallet=False, help="Verify a signed message.")
    return r
