"""The `WalletLoader` interface: what a node asks of a wallet process it started.

Defined once as a Python protocol; CleanCoin-node holds the IPC proxy
(`components.ipc.specs.spec("WalletLoader")`) of the object a CleanCoin-wallet process makes in
`Init.make_wallet_loader(chain, options)`. The wallet itself talks to the node only through
the `Chain` it is given there (components/interfaces/chain.py), and registers its RPC methods
with it (`Chain.register_rpc`), as Bitcoin Core's wallet does with its `handleRpc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .chain import Handler


@dataclass(frozen=True)
class WalletOptions:
    """What a wallet process started by its node learns from it (it takes no options)."""

    network: str          # "main", "test", "regtest"
    netdatadir: str       # the node's network datadir; wallets live in its wallets/
    # -nowallet on the node's command line: load_wallets skips the start-up list of
    # wallets/settings.json, as bitcoind ignores settings.json's wallets then.
    ignore_startup_list: bool = False


#: WalletEvent kinds: what changed in one wallet since the last event for it.
WALLET_EVENT_KINDS: tuple[str, ...] = ("loaded", "unloaded", "transaction", "balance", "status")


@dataclass(frozen=True)
class WalletEvent:
    """One wallet's state after a change, pushed to front ends (through the node) so that a
    balance label changes when the balance does, without polling.

    `kind` says what changed ("loaded", "unloaded", "transaction": `txid` was added or its
    state changed, "balance": a block matured or confirmed coins, "status": encrypted,
    locked or unlocked); the rest is the wallet's state at that moment, amounts in units.
    Events of one wallet are coalesced: a burst of changes arrives as one event of the last
    kind with the state after all of them.
    """

    wallet: str
    kind: str
    txid: bytes = b""
    trusted: int = 0
    untrusted_pending: int = 0
    immature: int = 0
    encrypted: bool = False
    locked: bool = False
    unlocked_until: int = 0


class WalletNotifications(Protocol):
    """Implemented by whoever follows a wallet process's wallets (the node, which passes the
    events on to its front ends)."""

    async def wallet_events(self, events: list[WalletEvent]) -> None:
        """Changes of one or more wallets, in order; one call at a time."""
        ...


class WalletLoader(Protocol):
    async def load_wallets(self, names: list[str]) -> list[str]:
        """Load these wallets (the node's -wallet options, or what was loaded before a
        restart); returns the names loaded. Fails on the first one that cannot be loaded."""
        ...

    async def loaded_wallets(self) -> list[str]:
        """Names of the wallets loaded now, in load order."""
        ...

    async def shutdown(self) -> None:
        """Close every wallet (each database left consistent); the process exits when its
        connection then closes."""
        ...

    async def handle_notifications(self, notifications: WalletNotifications) -> Handler:
        """Push every wallet change (loads, unloads, transactions, balances, lock state) to
        `notifications` until the handler is disconnected or the connection is lost. First
        comes a "loaded" event for each wallet loaded now, delivered before this returns."""
        ...
