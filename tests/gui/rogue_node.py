"""A compromised CleanCoin-node, for the window's attack tests: a real Cap'n Proto peer that
serves the `Node` interface (components/interfaces/node.capnp) with attacker behaviour.

    python rogue_node.py SOCKET MODE

listens on the unix socket SOCKET with CleanCoin's own IPC runtime (the Init a CleanCoin-node
serves, `makeNode` included), prints `ready`, and runs until killed. MODE:

- `markup`: every string the window may show is HTML: wallet names, labels, addresses, RPC
  error messages, the node's and the peers' user agents, process events, log lines.
- `hostile`: answers the window cannot hold or should not believe: multi-megabyte strings
  (a wallet name, an error, a user agent, a log line), a quarter of a million peers, NaN and
  negative progress, heights and balances, a thousand wallets.
- `flood`: once subscribed, pushes notifications without waiting for the window (log lines,
  tips, wallet events, process events), as fast as it can, for FLOOD_SECONDS.
- `forge`: a wallet name and an RPC error that carry a line break, a line of the window's log
  format and escape sequences (the window's log must keep them on their own record line).
- `mute`: subscribes honestly, then never answers an RPC call (the call stays open).
- `deaf`: never answers the subscription (handleNotifications stays open).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from typing import Any

import capnp

from cleancoin.components.interfaces.chain import RpcRequest, RpcResponse
from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.interfaces.node import ProcessEvent, TipInfo
from cleancoin.components.interfaces.wallet import WalletEvent
from cleancoin.components.ipc.address import parse
from cleancoin.components.ipc.init_impl import ProcessInit
from cleancoin.components.ipc.transport import ListenOptions, listen

LINK = '<a href="https://evil.example/">Click here to restore your wallet</a>'
IMAGE = '<img src="file:///etc/passwd" width="4000" height="4000">'
BIG = "<b>" + "W" * (4 * 1024 * 1024) + "</b>"       # 4 MiB of markup in one string
FLOOD_SECONDS = float(os.environ.get("ROGUE_FLOOD_SECONDS", "3"))
HASH = bytes(32)

MARKUP = {
    "wallets": [LINK, IMAGE, "<h1>plain?</h1>"],
    "error": "<b>Invalid</b> address: " + LINK,
    "subversion": IMAGE + "/Evil:1.0/",
    "peer": {"id": 1, "addr": "<i>10.0.0.1:8333</i>", "inbound": True, "subver": IMAGE,
             "synced_blocks": 5, "pingtime": 0.01, "bytessent": 1, "bytesrecv": 2},
    "log": "<font color=red size=7>" + LINK + "</font>",
    "process": ProcessEvent("exited", "<h1>CleanCoin-wallet</h1>", 42, LINK, 1),
}

#: `forge` mode: text that, written raw into the window's log, would add a line of its own
#: (a new line that starts as the log's own lines do) and reach a terminal that shows the log
#: as escape sequences (OSC 52 writes the clipboard; CSI 2J clears the screen; U+202E turns
#: what follows around).
FORGED_LINE = "2026-01-01T00:00:00.000Z [cleancoin.gui] INFO wallet backup verified: all coins safe"
FORGE = {
    "wallet": "savings\n" + FORGED_LINE + "\r\x1b[2K",
    "error": "Insufficient funds\n" + FORGED_LINE + "\x1b]52;c;cGF5IHRvIGV2aWw=\x07\x1b[2J\u202eevil",
}


def tip(height: int = 5, progress: float = 1.0, when: int | None = None) -> TipInfo:
    return TipInfo(height, HASH, int(time.time()) if when is None else when, height, progress, False, 0)


def loaded(name: str, trusted: int = 0, pending: int = 0) -> WalletEvent:
    return WalletEvent(name, "loaded", b"", trusted, pending, 0, False, False, 0)


class Handler:
    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task

    async def disconnect(self) -> None:
        if self.task is not None:
            self.task.cancel()


class RogueNode:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def shutdown(self) -> None:
        return None

    # ------------------------------------------------------------------ subscription

    async def handle_notifications(self, n: Any) -> Handler:
        if self.mode == "markup":
            await n.tip_changed(tip())
            await n.wallet_events([loaded(name, 100_000_000) for name in MARKUP["wallets"]])
            await n.process_event(MARKUP["process"])
            await n.log_lines([MARKUP["log"]])
            return Handler(None)
        if self.mode == "hostile":
            await n.tip_changed(TipInfo(-7, HASH, -(2**62), -3, float("nan"), True, 2**32 - 1))
            await n.wallet_events([loaded(BIG, -5 * 10**8, -(2**63)), loaded("w", 2**63 - 1, 2**63 - 1)])
            await n.wallet_events([loaded(f"wallet-{i}") for i in range(1000)])
            await n.process_event(ProcessEvent("<b>" + "k" * 100_000, BIG, -1, BIG, 2**32 - 1))
            await n.log_lines([BIG, "x" * 100_000] + ["short"] * 10_000)
            return Handler(None)
        if self.mode == "forge":
            await n.tip_changed(tip())
            await n.wallet_events([loaded(FORGE["wallet"], 100_000_000)])
            return Handler(None)
        if self.mode == "flood":
            await n.tip_changed(tip())
            await n.wallet_events([loaded("flood")])
            return Handler(asyncio.ensure_future(self.flood(n)))
        if self.mode == "deaf":
            await asyncio.Event().wait()
        await n.tip_changed(tip())                      # mute: honest until the first call
        await n.wallet_events([loaded("mute", 100_000_000)])
        return Handler(None)

    async def flood(self, n: Any) -> None:
        """Calls without waiting for their answers, as fast as this process can make them."""
        lines = [f"warning {i}: " + "z" * 200 for i in range(200)]
        pending: set[asyncio.Future[Any]] = set()
        deadline = time.monotonic() + FLOOD_SECONDS
        i = 0
        while time.monotonic() < deadline:
            for call in (n.log_lines(lines), n.tip_changed(tip(i)),
                         n.wallet_events([WalletEvent("flood", "balance", b"", i, 0, 0, False, False, 0)]),
                         n.process_event(ProcessEvent("restarted", "CleanCoin-wallet", 1000 + i, "", i))):
                future = asyncio.ensure_future(call)
                pending.add(future)
                future.add_done_callback(pending.discard)
            i += 1
            if i % 50 == 0:
                await asyncio.sleep(0)       # let the calls go out
        print(f"flooded {i} rounds", flush=True)
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ calls

    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        if self.mode == "mute":
            await asyncio.Event().wait()
        answer = getattr(self, f"{self.mode}_answer")(request.method, request.params)
        if isinstance(answer, BaseException):
            return RpcResponse(False, "null", -5, str(answer))
        return RpcResponse(True, answer if isinstance(answer, str) and answer[:1] in "[{\"n" else json.dumps(answer))

    def markup_answer(self, method: str, params: str) -> Any:
        return {
            "validateaddress": {"isvalid": "good" in params, "error": MARKUP["error"]},
            "getnetworkinfo": {"subversion": MARKUP["subversion"], "protocolversion": 70016, "relayfee": 0.00001},
            "getwalletinfo": {"paytxfee": 0},
            "getpeerinfo": [MARKUP["peer"]],
            "listtransactions": [{"category": "receive", "amount": 1, "time": 1700000000, "confirmations": 3,
                                  "address": "<i>addr</i>", "label": "<h1>label</h1>" + LINK, "txid": "ab" * 32}],
            "sendtoaddress": ValueError(MARKUP["error"]),
            "getprocessinfo": {"processes": [{"name": "<b>node</b>", "pid": 1},
                                             {"name": "<i>wallet</i>", "pid": 2, "wallets": [LINK]}]},
            "help": "== <b>Wallet</b> ==\n" + LINK,
        }.get(method, None)

    def forge_answer(self, method: str, params: str) -> Any:
        return {"getwalletinfo": {"paytxfee": 0},
                "sendtoaddress": ValueError(FORGE["error"])}.get(method, None)

    def flood_answer(self, method: str, params: str) -> Any:
        return None

    deaf_answer = flood_answer

    def hostile_answer(self, method: str, params: str) -> Any:
        return {
            "validateaddress": {"isvalid": False, "error": BIG},
            "getnetworkinfo": {"subversion": BIG, "protocolversion": -1, "relayfee": -5},
            "getwalletinfo": {"paytxfee": "NaN"},
            "getpeerinfo": json.dumps([{"id": i, "addr": "a", "subver": "s"} for i in range(250_000)]),
            "listtransactions": [{"category": "receive", "amount": "NaN", "time": -1, "confirmations": -5,
                                  "address": BIG, "label": BIG, "txid": "ab"}],
            "sendtoaddress": ValueError(BIG),
            "getprocessinfo": {"processes": [{"name": BIG, "pid": -1, "sandbox": {"policy": BIG}}]},
            "listwalletdir": {"wallets": [{"name": BIG}, {"name": "<b>other</b>"}, {"name": 5}, "x", {}]},
            "help": BIG,
        }.get(method, None)


async def main(path: str, mode: str) -> None:
    make_init = functools.partial(ProcessInit, node_factory=lambda: RogueNode(mode))
    await listen(parse(f"unix:{path}", path), make_init, IpcPeer("rogue-node", os.getpid()), ListenOptions())
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(capnp.run(main(sys.argv[1], sys.argv[2])))
