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


@dataclass(frozen=True)
class WalletOptions:
    """What a wallet process started by its node learns from it (it takes no options)."""

    network: str          # "main", "test", "regtest"
    netdatadir: str       # the node's network datadir; wallets live in its wallets/
    # -nowallet on the node's command line: load_wallets skips the start-up list of
    # wallets/settings.json, as bitcoind ignores settings.json's wallets then.
    ignore_startup_list: bool = False


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
