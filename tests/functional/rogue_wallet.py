"""A compromised wallet process, for attack tests: a real IPC peer that a CleanCoin-node
uses as its wallet (`CleanCoin-node -ipcconnect=unix:PATH`).

    python rogue_wallet.py SOCKET RESULTS MODE

listens on the unix socket SOCKET with CleanCoin's own IPC runtime and serves an Init whose
`makeWalletLoader` misbehaves as MODE says, writing what it saw to the JSON file RESULTS:

- `inject`: registers wallet method names whose `RpcHandler.execute` answers with hostile
  result text (JSON that closes its own `result` and forges a reply for another id, two
  values, deep nesting, NaN, a huge string) or a hostile error message (escape sequences);
  `listunspent` answers honestly, with exact decimals.
- `forge`: registers one honest method, then refuses the node's subscription to its wallet
  events with an error whose text holds a line break, a whole line in debug.log's format and
  escape sequences (FORGED_LOG_LINE): what the node logs of it must stay in its own record.
- `names`: tries registrations a node must refuse (bad names, node methods, escape
  sequences in help, thousands of methods, oversized help), records each outcome, then
  registers one honest method so that the node can start.

It prints `ready` once it listens, and runs until killed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from typing import Any

import capnp

from cleancoin.components.interfaces.chain import RpcMethodInfo, RpcRequest, RpcResponse
from cleancoin.components.ipc.address import parse
from cleancoin.components.ipc.init_impl import ProcessInit
from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.ipc.transport import ListenOptions, listen

#: Closes the `result` of its own reply and forges one for id 2 (a node method in a batch).
FORGED_RESULT = '1.00000000,"error":null,"id":1},{"result":"FORGED","error":null,"id":2},{"result":null'
ESCAPES = "\x1b[2J\x1b]0;pwned\x07"
#: `forge` mode: a line as CleanCoin-node's debug.log writes its own.
FORGED_LOG_LINE = "2026-01-01T00:00:00.000Z [cleancoin.node] INFO wallet process verified: all wallets closed cleanly"

#: method -> (ok, result text or error message) the inject mode answers with.
INJECT: dict[str, tuple[bool, str]] = {
    "getbalance": (True, FORGED_RESULT),
    "getnewaddress": (True, '"addr1" "addr2"'),
    "getwalletinfo": (True, "[" * 5000 + "]" * 5000),
    "gettransaction": (True, "NaN"),
    "listwallets": (True, '"' + "x" * (20 * 1024 * 1024) + '"'),
    "getbalances": (True, '{"a": "\\ud800"}'),
    "sendtoaddress": (False, "bad things" + ESCAPES + "\nsecond line"),
    "listunspent": (True, '[{"amount":1.50000000,"txid":"ab","confirmations":0}]'),
}


def info(name: str, help_text: str | None = None, category: str = "wallet",
         signature: str | None = None) -> RpcMethodInfo:
    return RpcMethodInfo(name, category, name if signature is None else signature,
                         f"{name}\n\nA rogue method." if help_text is None else help_text)


def refused_attempts() -> dict[str, list[RpcMethodInfo]]:
    """Registrations a node must refuse, by label."""
    big_help = "h" * 10_000
    return {
        "case variant Stop": [info("Stop")],
        "trailing space": [info("stop ")],
        "case variant of a wallet method": [info("GetBalance")],
        "empty name": [info("")],
        "newline in name": [info("get\nbalance")],
        "escape in name": [info("x" + ESCAPES)],
        "node method": [info("getblockcount")],
        "help": [info("help")],
        "escape in help": [info("evilhelp", help_text="evilhelp\n\n" + ESCAPES)],
        "escape in signature": [info("evilsig", signature="evilsig " + ESCAPES)],
        "escape in category": [info("evilcat", category="wallet" + ESCAPES)],
        "oversized help": [info("bighelp", help_text="bighelp\n\n" + "h" * 200_000)],
        "duplicate names": [info("dupname"), info("dupname")],
        "2000 methods with 10 kB help": [info(f"m{i}", help_text=f"m{i}\n\n{big_help}") for i in range(2000)],
    }


class RogueHandler:
    async def execute(self, request: RpcRequest) -> RpcResponse:
        ok, text = INJECT.get(request.method, (True, "null"))
        if ok:
            return RpcResponse(True, text)
        return RpcResponse(False, "null", -4, text)


class RogueLoader:
    async def load_wallets(self, names: list[str]) -> list[str]:
        return []

    async def loaded_wallets(self) -> list[str]:
        return []

    async def shutdown(self) -> None:
        return None


class ForgingLoader(RogueLoader):
    async def handle_notifications(self, receiver: Any) -> Any:
        raise ValueError("no events\n" + FORGED_LOG_LINE + "\r" + ESCAPES + "\u202e")


async def make_loader(mode: str, results_path: str, chain: Any, options: Any) -> RogueLoader:
    results: dict[str, str] = {}
    if mode == "inject":
        await chain.register_rpc([info(name) for name in INJECT], RogueHandler())
    elif mode == "forge":
        await chain.register_rpc([info("getbalance")], RogueHandler())
    else:
        for label, methods in refused_attempts().items():
            try:
                handle = await chain.register_rpc(methods, RogueHandler())
            except Exception as exc:  # noqa: BLE001 - what the node answered is the result
                results[label] = f"refused: {exc}"
            else:
                results[label] = "accepted"
                await handle.disconnect()
        await chain.register_rpc([info("getbalance")], RogueHandler())
    with open(results_path, "w", encoding="utf-8") as out:
        json.dump(results, out)
    return ForgingLoader() if mode == "forge" else RogueLoader()


async def main(path: str, results_path: str, mode: str) -> None:
    factory = functools.partial(make_loader, mode, results_path)
    make_init = functools.partial(ProcessInit, wallet_loader_factory=factory)
    await listen(parse(f"unix:{path}", path), make_init, IpcPeer("rogue-wallet", os.getpid()), ListenOptions())
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(capnp.run(main(sys.argv[1], sys.argv[2], sys.argv[3])))
