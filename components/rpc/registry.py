"""The RPC method table: registration, parameter binding and type checks, `help`, wallets.

A method is a name, a handler and a list of parameters:

    async def getblockhash(ctx: CallContext, height: int) -> str: ...
    registry.add("getblockhash", getblockhash, [Param("height", INT, help="The height index")],
                 category="blockchain", help="Returns hash of block in best-block-chain at height provided.")

The handler is called as `handler(ctx, **params)` with every declared parameter by name (an
omitted or null optional one takes its default); it may be a coroutine function or a plain one.
It raises `RpcError` to answer with an error code; any other exception becomes
RPC_INTERNAL_ERROR with a short message (the traceback goes to the log, never to the caller).

Parameters come positionally (a JSON array) or by name (a JSON object, bitcoind's -named style,
with an optional "args" array for leading positional values). Checks follow bitcoind's
`RPCHelpMan::HandleRequest`: a wrong number of arguments answers RPC_MISC_ERROR with the
method's help text; wrong JSON types answer RPC_TYPE_ERROR "Wrong type passed:" listing each
mismatch as "JSON value of type string is not of expected type number".

Wallet methods (`wallet=True`) are the same methods served at `/wallet/<name>`: the registry
asks its pluggable `wallet_resolver(uri_wallet)` which wallet the call is for and passes the
answer as `ctx.wallet`. `loaded_wallets_resolver(list_wallets)` gives bitcoind's rules (one
loaded wallet is the default; several and none named is RPC_WALLET_NOT_SPECIFIED).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import (
    RPC_IN_WARMUP,
    RPC_INTERNAL_ERROR,
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    RPC_WALLET_NOT_FOUND,
    RPC_WALLET_NOT_SPECIFIED,
    RpcError,
)
from ..common.diskfail import WriteFailure
from .jsonfmt import JsonFloat

LOG = logging.getLogger("cleancoin.rpc")
#: What an unexpected exception looks like to an RPC caller (the details go to the log).
INTERNAL_ERROR_MESSAGE = "Internal error (the details are in the server's log)"

# Parameter types. The JSON type each one demands is in _EXPECTED_JSON.
STR = "string"
HEX = "hex"          # a string of hex digits, even length (bitcoind's IsHex)
NUM = "number"       # int or float
INT = "integer"      # a JSON number without fraction or exponent, within int64
BOOL = "bool"
OBJ = "object"
ARR = "array"
AMOUNT = "amount"    # a number or numeric string, at most AMOUNT_DECIMALS decimals -> Decimal
ANY = "any"          # no check
TYPES = (STR, HEX, NUM, INT, BOOL, OBJ, ARR, AMOUNT, ANY)

_EXPECTED_JSON = {STR: "string", HEX: "string", NUM: "number", INT: "number", BOOL: "bool",
                  OBJ: "object", ARR: "array", AMOUNT: None, ANY: None}
# How `help` names each type, as bitcoind's RPCArg::ToDescriptionString does.
_HELP_TYPE = {STR: "string", HEX: "string", NUM: "numeric", INT: "numeric", BOOL: "boolean",
              OBJ: "json object", ARR: "json array", AMOUNT: "numeric or string", ANY: "any"}

AMOUNT_DECIMALS = 8
#: The port in help examples: the main network's default RPC port (conf.DEFAULT_RPC_PORTS), as
#: bitcoind's examples show 8332.
EXAMPLE_RPC_PORT = 27490
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The `default` of a parameter that must be given."""


def json_type_name(value: Any) -> str:
    """The JSON type name of a decoded value, as UniValue's uvTypeName spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def parse_amount(value: Any, decimals: int = AMOUNT_DECIMALS) -> Decimal:
    """An amount given as a JSON number or numeric string, exactly, as a Decimal of coins.

    bitcoind's AmountFromValue: RPC_TYPE_ERROR "Amount is not a number or string", "Invalid
    amount" (not a plain decimal, or more than `decimals` decimals) and "Amount out of range"
    (negative). An upper bound (the chain's money supply) is for the caller to check.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise RpcError(RPC_TYPE_ERROR, "Amount is not a number or string")
    if isinstance(value, JsonFloat):
        text = value.text
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|-?\.[0-9]+([eE][-+]?[0-9]+)?", text):
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from None
    # copy_abs, not abs(): abs() rounds to the context and raises Overflow for 1E+1000000.
    if not amount.is_finite() or amount.copy_abs() >= Decimal(10) ** 18:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    if amount != amount.quantize(Decimal(1).scaleb(-decimals)):
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    if amount < 0:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return amount


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type (one of TYPES), default (REQUIRED if it must be given)."""

    name: str
    type: str = ANY
    default: Any = REQUIRED
    help: str = ""
    hidden: bool = False      # left out of the help (bitcoind's RPCArgOptions.hidden: stop's wait)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name!r}: unknown type {self.type!r} (one of {', '.join(TYPES)})")
        if not self.name or self.name == "args":
            raise ValueError(f"parameter name {self.name!r} is reserved or empty")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def signature_text(self) -> str:
        if self.type in (STR, HEX):
            return f'"{self.name}"'
        if self.type == ARR:
            return f"[{self.name},...]"
        if self.type == OBJ:
            return f"{{{self.name}}}"
        return self.name

    def description(self) -> str:
        if self.required:
            status = "required"
        elif self.default is None:
            status = "optional"
        else:
            shown = json.dumps(self.default) if not isinstance(self.default, Decimal) else str(self.default)
            status = f"optional, default={shown}"
        text = f"({_HELP_TYPE[self.type]}, {status})"
        return f"{text} {self.help}" if self.help else text


def _as_param(spec: Param | Sequence[Any]) -> Param:
    if isinstance(spec, Param):
        return spec
    if isinstance(spec, str):
        return Param(spec)
    return Param(*spec)


Handler = Callable[..., Any]


@dataclass
class Method:
    """A registered method. `params` takes `Param`s or tuples `(name, type[, default[, help]])`."""

    name: str
    handler: Handler
    params: Sequence[Param | Sequence[Any]] = ()
    category: str = "misc"
    help: str = ""
    result: str = ""          # the "Result:" section of the method's help, free text
    examples: str = ""        # the "Examples:" section, free text
    wallet: bool = False      # served per wallet: the handler gets ctx.wallet
    hidden: bool = False      # left out of the `help` listing (still callable, still has help)
    warmup_ok: bool = False   # callable while the registry is in warmup
    raw: bool = False         # handler(ctx, params) with the request's params unchecked:
                              # a method served elsewhere (a wallet process) checks them there

    def __post_init__(self) -> None:
        params = tuple(_as_param(p) for p in self.params)
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name}: duplicate parameter names in {names}")
        seen_optional = False
        for p in params:
            if p.required and seen_optional:
                raise ValueError(f"method {self.name}: required parameter {p.name!r} after an optional one")
            seen_optional = seen_optional or not p.required
        self.params = params
        self._check_handler()

    def _check_handler(self) -> None:
        if self.raw:
            return
        try:
            sig = inspect.signature(self.handler)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(None, **{p.name: None for p in self.params})
        except TypeError as exc:
            raise ValueError(f"method {self.name}: handler cannot be called as handler(ctx, "
                             f"{', '.join(p.name + '=...' for p in self.params)}): {exc}") from None

    @property
    def num_required(self) -> int:
        return sum(1 for p in self.params if p.required)

    def signature(self) -> str:
        """The first line of the help: `getblock "blockhash" ( verbosity )`."""
        required = [p.signature_text() for p in self.params if p.required]
        optional = [p.signature_text() for p in self.params if not p.required and not p.hidden]
        parts = [self.name, *required]
        if optional:
            parts.append("( " + " ".join(optional) + " )")
        return " ".join(parts)

    def help_text(self) -> str:
        """The full help, as `help <method>` shows it."""
        lines = [self.signature(), ""]
        if self.help:
            lines += [self.help.strip("\n"), ""]
        shown = [p for p in self.params if not p.hidden]
        if shown:
            width = max(len(p.name) for p in shown)
            lines.append("Arguments:")
            for i, p in enumerate(shown, 1):
                lines.append(f"{i}. {p.name.ljust(width)}    {p.description()}")
            lines.append("")
        if self.result:
            lines += ["Result:", self.result.strip("\n"), ""]
        lines += ["Examples:", (self.examples or self.default_examples()).strip("\n"), ""]
        return "\n".join(lines)

    def default_examples(self) -> str:
        """bitcoind's HelpExampleCli and HelpExampleRpc lines for a call with the required
        parameters, their names standing for the values."""
        required = [p for p in self.params if p.required]
        cli_args = " ".join(f'"{p.name}"' if p.type in (STR, HEX) else p.name for p in required)
        rpc_args = ", ".join(f'"{p.name}"' if p.type in (STR, HEX) else p.name for p in required)
        return (f"> CleanCoin-cli {self.name} {cli_args}".rstrip() + "\n"
                f"> curl --user myusername --data-binary '{{\"jsonrpc\": \"2.0\", \"id\": \"curltest\", "
                f"\"method\": \"{self.name}\", \"params\": [{rpc_args}]}}' -H 'content-type: application/json' "
                f"http://127.0.0.1:{EXAMPLE_RPC_PORT}/")


@dataclass
class CallContext:
    """What a handler knows about its call, besides its parameters."""

    method: str
    registry: "Registry"
    uri_wallet: str | None = None  # the name in /wallet/<name> (URL-decoded); None at "/"
    wallet: Any = None             # for wallet methods: what the wallet resolver answered
    user: str = ""                 # the authenticated user ("__cookie__" for cookie auth)
    peer: str = ""                 # "ip:port" of the caller
    server: Any = None             # the RpcServer the call came through, if any
    version: str = "1.0"           # the caller's JSON-RPC version: "1.0" or "2.0"
    extra: dict[str, Any] = field(default_factory=dict)


WalletResolver = Callable[[str | None], Any]
"""`resolver(uri_wallet) -> wallet` (or an awaitable of it); raises RpcError to refuse."""

NO_WALLET_LOADED = ("No wallet is loaded. Load a wallet using loadwallet or create a new one with "
                    "createwallet. (Note: A default wallet is no longer automatically created)")
WALLET_NOT_LOADED = "Requested wallet does not exist or is not loaded"
WALLET_NOT_SPECIFIED = ("Multiple wallets are loaded. Please select which wallet to use by requesting "
                        "the RPC through the /wallet/<walletname> URI path.")


def loaded_wallets_resolver(list_wallets: Callable[[], Iterable[str] | Awaitable[Iterable[str]]]) -> WalletResolver:
    """bitcoind's rules over the names `list_wallets()` returns; the answer is the wallet name.

    A name in the URI must be loaded (RPC_WALLET_NOT_FOUND otherwise). Without one: the only
    loaded wallet; none loaded is RPC_WALLET_NOT_FOUND, several is RPC_WALLET_NOT_SPECIFIED.
    """

    async def resolve(uri_wallet: str | None) -> str:
        names = list_wallets()
        if inspect.isawaitable(names):
            names = await names
        loaded = list(names)
        if uri_wallet is not None:
            if uri_wallet not in loaded:
                raise RpcError(RPC_WALLET_NOT_FOUND, WALLET_NOT_LOADED)
            return uri_wallet
        if len(loaded) == 1:
            return loaded[0]
        if not loaded:
            raise RpcError(RPC_WALLET_NOT_FOUND, NO_WALLET_LOADED)
        raise RpcError(RPC_WALLET_NOT_SPECIFIED, WALLET_NOT_SPECIFIED)

    return resolve


def internal_error(exc: BaseException | None = None) -> RpcError:
    """The RPC_INTERNAL_ERROR a caller sees for an unexpected exception: no exception text
    (it can hold paths, parameters or other callers' data); the caller logs the exception."""
    return RpcError(RPC_INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


class Registry:
    """The method table. `help` is built in; `add_stop` adds bitcoind's `stop`."""

    def __init__(self, *, wallet_resolver: WalletResolver | None = None, with_help: bool = True,
                 amount_decimals: int = AMOUNT_DECIMALS) -> None:
        self._methods: dict[str, Method] = {}
        self.wallet_resolver: WalletResolver = wallet_resolver or loaded_wallets_resolver(lambda: ())
        self.amount_decimals = amount_decimals
        self._warmup: str | None = None
        # Calls being executed (getrpcinfo's active_commands): call number -> (method, start).
        self._active: dict[int, tuple[str, float]] = {}
        self._call_numbers = itertools.count()
        #: Awaited before a call (outside warm-up) with the method's name and whether the
        #: table has it; True: look the name up again (the hook registered methods, as
        #: CleanCoin-node's wallet process started on first use does). None: no hook.
        self.on_demand: Callable[[str, bool], Awaitable[bool]] | None = None
        if with_help:
            self.add("help", self._help_handler, [Param("command", STR, None, "The command to get help on")],
                     category="control", help="List all commands, or get help for a specified command.",
                     result='"text"    (string) The help text', warmup_ok=False)

    # -- the table ---------------------------------------------------------------------------

    def register(self, method: Method) -> Method:
        if method.name in self._methods:
            raise ValueError(f"RPC method {method.name!r} is already registered")
        self._methods[method.name] = method
        return method

    def add(self, name: str, handler: Handler, params: Sequence[Param | Sequence[Any]] = (), *,
            category: str = "misc", help: str = "", result: str = "", examples: str = "",
            wallet: bool = False, hidden: bool = False, warmup_ok: bool = False) -> Method:
        return self.register(Method(name, handler, params, category, help, result, examples,
                                    wallet, hidden, warmup_ok))

    def method(self, name: str | None = None, params: Sequence[Param | Sequence[Any]] = (),
               **options: Any) -> Callable[[Handler], Handler]:
        """Decorator form of `add`; the name defaults to the function's name."""

        def decorate(handler: Handler) -> Handler:
            self.add(name or handler.__name__, handler, params, **options)
            return handler

        return decorate

    def unregister(self, name: str) -> None:
        self._methods.pop(name, None)

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[Method]:
        return iter(list(self._methods.values()))

    def add_stop(self, message: str = "CleanCoin server stopping",
                 on_stop: Callable[[], Any] | None = None) -> Method:
        """bitcoind's `stop`: asks the server to stop, then answers `message`.

        The server's `stop_requested` event is set (the owner awaits it and shuts down after
        the reply is on its way); `on_stop()` is called as well, if given. The hidden `wait`
        (milliseconds) delays the answer after the shutdown was requested, as bitcoind's test
        framework uses it (the server lets a call in flight finish, within its shutdown timeout).
        """

        async def stop(ctx: CallContext, wait: int | None) -> str:
            if ctx.server is not None:
                ctx.server.request_stop()
            if on_stop is not None:
                outcome = on_stop()
                if inspect.isawaitable(outcome):
                    await outcome
            if wait is not None and wait > 0:
                await asyncio.sleep(wait / 1000)
            return message

        return self.add("stop", stop, [Param("wait", INT, None, "how long to wait in ms", hidden=True)],
                        category="control", help="Request a graceful shutdown of the server.",
                        result=f'"str"    (string) A string with the content \'{message}\'', warmup_ok=True)

    def active_commands(self) -> list[dict[str, Any]]:
        """getrpcinfo's active_commands: each call being executed, with its running time (us)."""
        now = time.monotonic()
        return [{"method": name, "duration": int((now - start) * 1_000_000)}
                for name, start in list(self._active.values())]

    # -- warmup ------------------------------------------------------------------------------

    def set_warmup(self, status: str | None) -> None:
        """While a status is set, every call (but `warmup_ok` methods) answers RPC_IN_WARMUP with it."""
        self._warmup = status

    @property
    def in_warmup(self) -> bool:
        return self._warmup is not None

    # -- calls -------------------------------------------------------------------------------

    async def execute(self, name: str, params: Any = None, *, uri_wallet: str | None = None,
                      **context: Any) -> Any:
        """Run one call; raises RpcError. `context` sets CallContext fields (user, peer, server, ...)."""
        method = self._methods.get(name)
        if self.on_demand is not None and self._warmup is None and await self.on_demand(name, method is not None):
            method = self._methods.get(name)
        if self._warmup is not None and not (method is not None and method.warmup_ok):
            raise RpcError(RPC_IN_WARMUP, self._warmup)
        if method is None:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        ctx = CallContext(method=name, registry=self, uri_wallet=uri_wallet, **context)
        # A raw method (served elsewhere) gets the parameters as they came; the others get
        # them bound and checked here, and wallet methods their wallet.
        kwargs = None if method.raw else self.bind(method, params)
        number = next(self._call_numbers)
        self._active[number] = (name, time.monotonic())
        try:
            if method.wallet:
                wallet = self.wallet_resolver(uri_wallet)
                ctx.wallet = await wallet if inspect.isawaitable(wallet) else wallet
            result = method.handler(ctx, params) if kwargs is None else method.handler(ctx, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except RpcError:
            raise
        except WriteFailure as exc:   # the disk, not a bug: say so, with the file, no traceback
            LOG.error("RPC method %s: %s", name, exc)
            raise RpcError(exc.rpc_code, exc.rpc_message) from None
        except Exception as exc:  # noqa: BLE001 - a handler's bug must not reach the server
            LOG.error("RPC method %s raised %s", name, type(exc).__name__, exc_info=True)
            raise internal_error(exc) from None
        finally:
            del self._active[number]
        return result

    def bind(self, method: Method, params: Any) -> dict[str, Any]:
        """Positional or named parameters -> the handler's keyword arguments, checked."""
        if params is None:
            values: list[Any] = []
        elif isinstance(params, dict):
            values = self._named_to_positional(method, params)
        elif isinstance(params, (list, tuple)):
            values = list(params)
        else:
            raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {json_type_name(params)} is not of expected type array")
        if not method.num_required <= len(values) <= len(method.params):
            raise RpcError(RPC_MISC_ERROR, method.help_text())
        mismatches: dict[str, str] = {}
        for i, p in enumerate(method.params):
            value = values[i] if i < len(values) else None
            expected = _EXPECTED_JSON[p.type]
            if expected is None or (value is None and not p.required):
                continue
            got = json_type_name(value)
            if got != expected:
                mismatches[f"Position {i + 1} ({p.name})"] = f"JSON value of type {got} is not of expected type {expected}"
        if mismatches:
            raise RpcError(RPC_TYPE_ERROR, "Wrong type passed:\n" + json.dumps(mismatches, indent=4))
        kwargs: dict[str, Any] = {}
        for i, p in enumerate(method.params):
            value = values[i] if i < len(values) else None
            if value is None and not p.required:
                kwargs[p.name] = p.default
            else:
                kwargs[p.name] = self._convert(p, value)
        return kwargs

    @staticmethod
    def _named_to_positional(method: Method, named: dict[str, Any]) -> list[Any]:
        """bitcoind's transformNamedArguments, with its "args" array of leading positional values."""
        named = dict(named)
        positional = named.pop("args", [])
        if not isinstance(positional, list):
            raise RpcError(RPC_TYPE_ERROR,
                           f"JSON value of type {json_type_name(positional)} is not of expected type array")
        known = {p.name for p in method.params}
        for key in named:
            if key not in known:
                raise RpcError(RPC_INVALID_PARAMETER, f"Unknown named parameter {key}")
        values = list(positional)
        for i, p in enumerate(method.params):
            if p.name not in named:
                continue
            if i < len(positional):
                raise RpcError(RPC_INVALID_PARAMETER,
                               f"Parameter {p.name} specified twice both as positional and named argument")
            while len(values) < i:
                values.append(None)
            values.append(named[p.name])
        return values

    def _convert(self, p: Param, value: Any) -> Any:
        if p.type == INT:
            if not isinstance(value, int):
                raise RpcError(RPC_TYPE_ERROR, f"JSON value is not an integer as expected ({p.name})")
            if not INT64_MIN <= value <= INT64_MAX:
                raise RpcError(RPC_TYPE_ERROR, f"JSON integer out of range ({p.name})")
            return value
        if p.type == AMOUNT:
            return parse_amount(value, self.amount_decimals)
        if p.type == HEX:
            if not value or len(value) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", value):
                raise RpcError(RPC_INVALID_PARAMETER, f"{p.name} must be hexadecimal string (not '{value}')")
        return value

    # -- help --------------------------------------------------------------------------------

    def help(self, command: str | None = None) -> str:
        """bitcoind's help: the listing grouped by category, or one method's full help."""
        if command:
            method = self._methods.get(command)
            if method is None:
                return f"help: unknown command: {command}\n"
            return method.help_text()
        listing = sorted((m.category, m.name) for m in self._methods.values() if not m.hidden)
        lines: list[str] = []
        category = None
        for cat, name in listing:
            if cat != category:
                if category is not None:
                    lines.append("")
                lines.append(f"== {cat[:1].upper() + cat[1:]} ==")
                category = cat
            lines.append(self._methods[name].signature())
        return "\n".join(lines)

    async def _help_handler(self, ctx: CallContext, command: str | None) -> str:
        return self.help(command)
