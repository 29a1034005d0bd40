"""The node's side of `Chain.register_rpc`: JSON-RPC methods served by a wallet process.

A wallet process registers its methods (names, help) and an `RpcHandler`; the router adds one
`RemoteMethod` per name to the node's registry, whose handler forwards the call's raw
parameters and wallet endpoint. The wallet process checks the parameters itself, with the
same registry code CleanCoind uses, so answers and errors are identical in both executables.

The wallet is less trusted than the node: its answer is parsed and checked
(`jsonfmt.loads_untrusted`: one JSON value, at most MAX_RESULT_BYTES and MAX_RESULT_DEPTH)
and the value goes into the reply, serialised by the node; a bad answer is an
RPC_INTERNAL_ERROR for that call only. An error message is cut to MAX_ERROR_CHARS and loses
its control characters (a terminal prints it).

A registration ends when the wallet disconnects it, when its connection is lost, or when a
forwarded call finds the wallet gone. The methods then stay listed and answer
RPC_IN_WARMUP with `status` (bitcoind answers -28 while wallets load, and clients retry on it)
until a wallet process registers them again: a restarted wallet takes over where the old one
left off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..chain_interface import ChainError, Handler, RpcHandler, RpcMethodInfo, RpcRequest
from ..ipc.errors import IpcError
from ..rpc import jsonfmt
from ..rpc.errors import RPC_IN_WARMUP, RPC_INTERNAL_ERROR, RpcError
from ..rpc.registry import CallContext, Method, Registry

log = logging.getLogger("cleancoin.rpc")

#: Bounds of a wallet's answer. A listtransactions of 16 MB is some 30,000 entries (clients
#: page with count/skip); results of the wallet's methods nest 4 levels at most.
MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_RESULT_DEPTH = 32
#: Error messages include a method's help (RPC_MISC_ERROR for a wrong argument count).
MAX_ERROR_CHARS = 32 * 1024

#: Methods after whose success the set of loaded wallets may have changed.
WALLET_SET_METHODS: frozenset[str] = frozenset({"createwallet", "loadwallet", "unloadwallet", "restorewallet"})

NO_WALLET_PROCESS = "No wallet process is connected"


@dataclass
class RemoteMethod(Method):
    """A method served by a wallet process: its help comes from there, its calls go there."""

    remote_signature: str = ""
    remote_help: str = ""

    def signature(self) -> str:
        return self.remote_signature

    def help_text(self) -> str:
        return self.remote_help


@dataclass(eq=False)
class _Registration:
    """One register_rpc call; `disconnect` is the Handler the wallet gets back."""

    router: "WalletRpcRouter"
    names: tuple[str, ...]
    handler: RpcHandler
    live: bool = True

    async def disconnect(self) -> None:
        self.router.unregister(self, "the registration ended (wallet process closed it, or its connection ended)")


class WalletRpcRouter:
    """See the module docstring. `after_call(name)` runs after a successful call of one of
    WALLET_SET_METHODS (the node then asks the wallet which wallets are loaded)."""

    def __init__(self, registry: Registry,
                 after_call: Callable[[str], Awaitable[None]] | None = None,
                 tip: Callable[[], bytes] = lambda: b"") -> None:
        self._registry = registry
        self._after_call = after_call
        self._tip = tip
        self._owner: dict[str, _Registration] = {}   # method name -> live registration
        self.status = NO_WALLET_PROCESS

    def register(self, methods: list[RpcMethodInfo], handler: RpcHandler) -> Handler:
        """`Chain.register_rpc` of the node's NodeChains."""
        for m in methods:
            held = self._owner.get(m.name)
            if held is not None and held.live:
                raise ChainError(f"RPC method {m.name!r} is already served by another wallet process")
            existing = self._registry.get(m.name)
            if existing is not None and not isinstance(existing, RemoteMethod):
                raise ChainError(f"RPC method {m.name!r} is the node's own")
        reg = _Registration(self, tuple(m.name for m in methods), handler)
        for m in methods:
            self._registry.unregister(m.name)
            self._registry.register(RemoteMethod(m.name, self._forwarder(m.name), (), m.category, hidden=m.hidden,
                                                 raw=True, remote_signature=m.signature, remote_help=m.help))
            self._owner[m.name] = reg
        log.info("wallet process registered %d RPC methods", len(methods))
        return reg

    def unregister(self, reg: _Registration, why: str) -> None:
        """End a registration; its methods stay listed and answer RPC_IN_WARMUP."""
        if not reg.live:
            return
        reg.live = False
        log.info("wallet RPC methods unavailable: %s", why)

    @property
    def connected(self) -> bool:
        """Whether some wallet process serves its methods now."""
        return any(reg.live for reg in self._owner.values())

    def _forwarder(self, name: str) -> Callable[[CallContext, Any], Awaitable[Any]]:
        async def forward(ctx: CallContext, params: Any) -> Any:
            reg = self._owner.get(name)
            if reg is None or not reg.live:
                raise RpcError(RPC_IN_WARMUP, self.status)
            request = RpcRequest(name, jsonfmt.dumps(jsonfmt.exact(params)), ctx.uri_wallet, ctx.user,
                                 self._tip())
            try:
                response = await reg.handler.execute(request)
            except IpcError as exc:
                self.unregister(reg, str(exc))
                raise RpcError(RPC_IN_WARMUP, f"Wallet process unavailable: {exc}") from None
            if not response.ok:
                raise RpcError(response.error_code, printable(response.error_message, MAX_ERROR_CHARS))
            try:
                result = jsonfmt.loads_untrusted(response.result, max_bytes=MAX_RESULT_BYTES,
                                                 max_depth=MAX_RESULT_DEPTH)
            except jsonfmt.UntrustedJsonError as exc:
                log.warning("wallet process answered %s with an invalid result: %s", name, exc)
                raise RpcError(RPC_INTERNAL_ERROR, f"Wallet process returned an invalid result: {exc}") from None
            if name in WALLET_SET_METHODS and self._after_call is not None:
                await self._after_call(name)
            return result

        return forward


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, each control or format character (escape sequences,
    bidi overrides) but newline and tab replaced by U+FFFD."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)
