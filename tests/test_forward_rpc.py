"""-forwardrpc=read: which wallet methods a node may call. Every wallet method is classified
here, so that a new one is a decision (does it spend, sign, unlock or change the wallet?), not
an accident; the attack test is in tests/functional/test_sandbox_attacks.py."""

from __future__ import annotations

from pathlib import Path

from cleancoin.components.rpc.registry import Registry
from cleancoin.components.wallet.rpc import READ_METHODS, register_wallet_methods
from cleancoin.components.wallet.service import node_registry
from cleancoin.components.wallet.wallet import WalletManager

#: Methods only the wallet's own RPC port serves under -forwardrpc=read, and why.
NOT_THROUGH_THE_NODE = {
    "sendtoaddress": "spends", "sendmany": "spends", "signmessage": "signs",
    "signrawtransactionwithwallet": "signs", "encryptwallet": "sets the passphrase",
    "walletpassphrase": "unlocks", "walletpassphrasechange": "sees passphrases",
    "walletlock": "changes the lock state", "backupwallet": "writes the keys elsewhere",
    "restorewallet": "replaces a wallet", "createwallet": "creates wallets",
    "loadwallet": "loads wallets", "unloadwallet": "unloads wallets", "settxfee": "changes what spending pays",
    "lockunspent": "changes which coins spend", "abandontransaction": "changes the wallet's transactions",
    "keypoolrefill": "changes the key pool", "rescanblockchain": "long work the node could start at will",
}


def _registry(tmp_path: Path) -> Registry:
    registry = Registry()
    register_wallet_methods(registry, WalletManager(str(tmp_path), None, "regtest"))  # type: ignore[arg-type]
    return registry


def test_every_wallet_method_is_read_only_or_kept_from_the_node(tmp_path: Path) -> None:
    names = {m.name for m in _registry(tmp_path)} - {"help"}
    assert READ_METHODS | set(NOT_THROUGH_THE_NODE) == names, (
        names - READ_METHODS - set(NOT_THROUGH_THE_NODE), (READ_METHODS | set(NOT_THROUGH_THE_NODE)) - names)
    assert not READ_METHODS & set(NOT_THROUGH_THE_NODE)


def test_the_node_registry_holds_only_the_read_methods(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert node_registry(registry, None) is registry
    subset = node_registry(registry, READ_METHODS)
    assert {m.name for m in subset} == READ_METHODS
    assert subset.get("sendtoaddress") is None and subset.get("getbalance") is registry.get("getbalance")
    assert subset.wallet_resolver is registry.wallet_resolver
