"""The node's side of `Chain.register_rpc`: JSON-RPC methods served by a wallet process.

A wallet process registers its methods (names, help) and an `RpcHandler`; the router adds one
`RemoteMethod` per name to the node's registry, whose handler forwards the call's raw
parameters and wallet endpoint. The wallet process checks the parameters itself, with the
same registry code CleanCoind uses, so answers and errors are identical in both executables.

Who may register. Registering is a capability, not something any holder of a `Chain` can do:
the router hands out a registrar per `WalletSlot`, and a node gives one only to the `Chain`
of a connection it trusts as its wallet: the wallet process it started itself or the one the
operator named with -ipcconnect (one slot, `reserve`), or, with -ipcallowwallet=1, clients
of its IPC listeners (another slot). Every other `Chain` refuses (`refusing`). A
registration is checked first (rpc_registration.py: names `[a-z0-9_]+`, help without
control characters, bounded sizes), and a name the node serves itself is refused. Each
refusal is logged.

Reservation. The names a reserving slot registered stay its own when its registration ends
(the process died, its connection was lost): they stay listed, answer RPC_IN_WARMUP with
`status` (bitcoind answers -28 while wallets load, and clients retry on it), and only that
slot's next registration, the restarted wallet, takes them again. Nobody can register
`walletpassphrase` in the gap and catch a passphrase.

Readiness. A slot made with `gated` answers RPC_IN_WARMUP after its wallet registered until
the node calls `set_ready` (it has loaded the wallets it wants there), so a client retrying
on -28 never sees "Requested wallet does not exist" from a wallet process that is still
loading its wallets.

Answers. The wallet is less trusted than the node: its answer is parsed and checked
(`jsonfmt.loads_untrusted`: one JSON value, at most MAX_RESULT_BYTES and MAX_RESULT_DEPTH)
and the value goes into the reply, serialised by the node; a bad answer is an
RPC_INTERNAL_ERROR for that call only. An error message is cut to MAX_ERROR_CHARS and loses
its control characters (a terminal prints it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..interfaces.chain import ChainError, Handler, RpcHandler, RpcMethodInfo, RpcRequest
from ..ipc.errors import IpcError
from ..rpc import jsonfmt
from ..rpc.errors import RPC_IN_WARMUP, RPC_INTERNAL_ERROR, RpcError
from ..rpc.registry import CallContext, Method, Registry
from .chain_binding import RpcRegistrar
from .rpc_registration import RegistrationLimits, RegistrationRefused, check_methods

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


class RefusalLog:
    """Logs refused registrations: each of the first LOGGED, then every EVERY-th with the
    count, so a client that keeps trying cannot flood debug.log."""

    LOGGED = 10
    EVERY = 1000

    def __init__(self) -> None:
        self.count = 0

    def note(self, who: str, reason: str) -> None:
        self.count += 1
        if self.count <= self.LOGGED or self.count % self.EVERY == 0:
            more = " (further refusals logged every 1000th)" if self.count == self.LOGGED else ""
            log.warning("refused a wallet RPC registration from %s: %s [%d so far]%s", who, reason,
                        self.count, more)


@dataclass(eq=False)
class WalletSlot:
    """One way a wallet process may serve the wallet methods (module docstring). `label`
    names it in messages and logs."""

    label: str
    reserve: bool
    gated: bool
    names: tuple[str, ...] = ()
    current: "_Registration | None" = None
    ready: bool = False
    refusals: RefusalLog = field(default_factory=RefusalLog)

    @property
    def live(self) -> bool:
        return self.current is not None and self.current.live


@dataclass(eq=False)
class _Registration:
    """One register_rpc call; `disconnect` is the Handler the wallet gets back."""

    router: "WalletRpcRouter"
    slot: WalletSlot
    names: frozenset[str]
    handler: RpcHandler
    live: bool = True

    async def disconnect(self) -> None:
        self.router.unregister(self, "the registration ended (wallet process closed it, or its connection ended)")


class WalletRpcRouter:
    """See the module docstring. `after_call(name)` runs after a successful call of one of
    WALLET_SET_METHODS (the node then asks the wallet which wallets are loaded)."""

    def __init__(self, registry: Registry,
                 after_call: Callable[[str], Awaitable[None]] | None = None,
                 tip: Callable[[], bytes] = lambda: b"",
                 limits: RegistrationLimits = RegistrationLimits()) -> None:
        self._registry = registry
        self._after_call = after_call
        self._tip = tip
        self._limits = limits
        self._owner: dict[str, WalletSlot] = {}     # method name -> the slot that holds it
        self.status = NO_WALLET_PROCESS

    # ------------------------------------------------------------------ slots

    def slot(self, label: str, *, reserve: bool, gated: bool) -> WalletSlot:
        """A new way in for a wallet process (see WalletSlot)."""
        return WalletSlot(label, reserve, gated)

    def registrar(self, slot: WalletSlot) -> RpcRegistrar:
        """The capability to register wallet methods through `slot`, for one `Chain`."""
        return lambda methods, handler: self.register(slot, methods, handler)

    def refusing(self, who: str, reason: str) -> RpcRegistrar:
        """A registrar that refuses every registration (logged), for the `Chain` of a
        connection that is no wallet of this node (make one per connection)."""
        refusals = RefusalLog()

        def refuse(methods: list[RpcMethodInfo], handler: RpcHandler) -> Handler:
            refusals.note(who, reason)
            raise ChainError(reason)
        return refuse

    def set_ready(self, slot: WalletSlot) -> None:
        """The node has loaded its wallets in the process registered through `slot`: its
        calls go through from now on."""
        slot.ready = True

    # ------------------------------------------------------------------ registration

    def register(self, slot: WalletSlot, methods: list[RpcMethodInfo], handler: RpcHandler) -> Handler:
        """`Chain.register_rpc` through `slot`; ChainError (logged) when refused."""
        try:
            check_methods(methods, self._limits)
            self._check_names(slot, [m.name for m in methods])
        except RegistrationRefused as exc:
            slot.refusals.note(slot.label, str(exc))
            raise ChainError(str(exc)) from None
        names = frozenset(m.name for m in methods)
        reg = _Registration(self, slot, names, handler)
        for name in slot.names:
            if name not in names and self._owner.get(name) is slot:
                self._registry.unregister(name)
                del self._owner[name]
        for m in methods:
            previous = self._owner.get(m.name)
            if previous is not None and previous is not slot:
                previous.names = tuple(n for n in previous.names if n != m.name)
            self._registry.unregister(m.name)
            self._registry.register(RemoteMethod(m.name, self._forwarder(m.name), (), m.category, hidden=m.hidden,
                                                 raw=True, remote_signature=m.signature, remote_help=m.help))
            self._owner[m.name] = slot
        slot.names = tuple(m.name for m in methods)
        slot.current = reg
        slot.ready = not slot.gated
        log.info("%s registered %d wallet RPC methods", slot.label, len(methods))
        return reg

    def _check_names(self, slot: WalletSlot, names: list[str]) -> None:
        if slot.live:
            raise RegistrationRefused("the wallet RPC methods are already served by another wallet process")
        for name in names:
            existing = self._registry.get(name)
            if existing is not None and not isinstance(existing, RemoteMethod):
                raise RegistrationRefused(f"RPC method {name!r} is the node's own")
            holder = self._owner.get(name)
            if holder is None or holder is slot:
                continue
            if holder.live:
                raise RegistrationRefused(f"RPC method {name!r} is already served by another wallet process")
            if holder.reserve:
                raise RegistrationRefused(f"RPC method {name!r} is reserved for {holder.label}")

    def unregister(self, reg: _Registration, why: str) -> None:
        """End a registration; its methods stay listed and answer RPC_IN_WARMUP."""
        if not reg.live:
            return
        reg.live = False
        if reg.slot.current is reg:
            reg.slot.ready = False
        log.info("wallet RPC methods unavailable: %s", why)

    @property
    def connected(self) -> bool:
        """Whether some wallet process serves its methods now."""
        return any(slot.live and slot.ready for slot in set(self._owner.values()))

    # ------------------------------------------------------------------ calls

    def _forwarder(self, name: str) -> Callable[[CallContext, Any], Awaitable[Any]]:
        async def forward(ctx: CallContext, params: Any) -> Any:
            slot = self._owner.get(name)
            reg = slot.current if slot is not None else None
            if slot is None or reg is None or not reg.live or name not in reg.names or not slot.ready:
                raise RpcError(RPC_IN_WARMUP, self.status)
            request = RpcRequest(name, _params_text(params), ctx.uri_wallet, ctx.user, self._tip())
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


def _params_text(params: Any) -> str:
    """The JSON text of a call's parameters, numbers as they were received; the common
    no-parameter call without the encoder."""
    if type(params) is list and not params:
        return "[]"
    return jsonfmt.dumps(jsonfmt.exact(params))


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, each control or format character (escape sequences,
    bidi overrides) but newline and tab replaced by U+FFFD."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)
