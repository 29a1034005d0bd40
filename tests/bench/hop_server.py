"""The wallet process's side of bench_ipc.py's forwarded-call benchmark: a `WalletRpcHandler`
(components/wallet/service.py, the class a wallet process registers with its node) served on
the inherited socket `argv[1]` with CleanCoin's stream gate, over a registry whose only method,
`getwalletinfo`, answers a fixed result shaped like a real one (amounts as Decimal). A fresh
interpreter, not a fork of pytest: KJ refuses a loop in a process that had one."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import capnp

from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.ipc.connection import serve
from cleancoin.components.ipc.debug_log import CallLog
from cleancoin.components.ipc.specs import spec
from cleancoin.components.ipc.transport import stream_from_fd
from cleancoin.components.rpc.registry import Registry
from cleancoin.components.wallet.service import WalletRpcHandler

#: getwalletinfo of a regtest wallet with 101 blocks mined to it.
RESULT: dict[str, Any] = {
    "walletname": "w", "walletversion": 169900, "format": "sqlite", "balance": Decimal("50.00000000"),
    "unconfirmed_balance": Decimal("0E-8"), "immature_balance": Decimal("5000.00000000"), "txcount": 101,
    "keypoolsize": 1000, "keypoolsize_hd_internal": 1000, "paytxfee": Decimal("0E-8"),
    "private_keys_enabled": True, "avoid_reuse": False, "scanning": False, "descriptors": False,
    "external_signer": False, "lastprocessedblock": {"hash": "ab" * 32, "height": 101}}


@dataclass
class _NoWallets:
    """The loader a `WalletRpcHandler` asks which wallets to catch up: none here."""

    wallets: dict[str, Any] = field(default_factory=dict)


async def _serve(fd: int) -> None:
    registry = Registry()
    registry.add("getwalletinfo", lambda ctx: RESULT)
    log = CallLog(IpcPeer("bench-wallet", os.getpid()), enabled=False)
    stream = await stream_from_fd(fd)
    await serve(stream, spec("RpcHandler").server(WalletRpcHandler(registry, _NoWallets()), log), log)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(capnp.run(_serve(int(sys.argv[1]))))
