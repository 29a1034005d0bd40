"""IPC bindings built from one method table per interface.

An `InterfaceSpec` lists an interface's methods with their parameter and result codecs. From
it come the capnp server adapter (wrapping any implementation of the Python protocol) and
the client proxy (a Python object with the same coroutine methods), so that adding a method
is one table entry, and -debug=ipc logging and error translation live in one place.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .debug_log import CallLog
from .errors import IpcAuthError, IpcDisconnected, IpcError


@dataclass(frozen=True)
class Codec:
    """Turns a Python value into what pycapnp takes, and what pycapnp gives back into Python.

    A struct's codec also has `fill(builder, value, log)`, which writes the value's fields
    into the struct builder pycapnp made for it. `put` uses it: handed a dict instead,
    pycapnp's `from_dict` rebuilds the struct's field table for every Text value it sets
    (to look for a Data field given as base64 text), 125k instructions for one RpcRequest
    (issue #16: 10 % of a forwarded RPC call in the node)."""

    encode: Callable[[Any, CallLog], Any]
    decode: Callable[[Any, CallLog], Any]
    fill: Callable[[Any, Any, CallLog], None] | None = None

    def put(self, builder: Any, field: str, value: Any, log: CallLog) -> None:
        """Set field `field` of the capnp struct builder `builder` to `value`."""
        if self.fill is not None:
            self.fill(builder.init(field), value, log)
        else:
            builder._set(field, self.encode(value, log))  # noqa: SLF001 - what pycapnp's __setattr__ calls


@dataclass(frozen=True)
class StructListCodec(Codec):
    """A capnp List of structs, each written by `item_fill` (see Codec)."""

    item_fill: Callable[[Any, Any, CallLog], None] = lambda b, v, log: None

    def put(self, builder: Any, field: str, value: Any, log: CallLog) -> None:
        items = builder.init(field, len(value))
        for i, item in enumerate(value):
            self.item_fill(items[i], item, log)


def fields_filler(pairs: tuple[tuple[str, str], ...]) -> Callable[[Any, Any, CallLog], None]:
    """`fill` for a dataclass whose fields (Python name, capnp name) are copied as they are."""
    def fill(builder: Any, value: Any, _: CallLog) -> None:
        put = builder._set  # noqa: SLF001 - what pycapnp's __setattr__ calls
        for name, wire in pairs:
            put(wire, getattr(value, name))
    return fill


PLAIN = Codec(lambda v, _: v, lambda v, _: v)


def field_reader(r: Any) -> Callable[[str], Any]:
    """How to read the fields of the capnp struct `r` by name: `r._get(name)`.

    The attribute form (`r.name`) costs a formatted AttributeError per field: pycapnp's
    readers answer fields from `__getattr__`, which Python calls only after the ordinary
    lookup has failed (measured: 12k instructions of a forwarded RPC call's 1.2M in the
    node, issue #16). `_get` is the method `__getattr__` calls."""
    return r._get  # noqa: SLF001 - pycapnp's field accessor (what __getattr__ calls)


def struct_codec(cls: type) -> Codec:
    """A dataclass carried as a capnp struct with the same field names."""
    names = [f.name for f in dataclasses.fields(cls)]

    def decode(r: Any, _: CallLog) -> Any:
        get = field_reader(r)
        return cls(**{n: get(n) for n in names})

    return Codec(lambda v, _: {n: getattr(v, n) for n in names}, decode,
                 fields_filler(tuple((n, n) for n in names)))


@dataclass(frozen=True)
class CapabilityCodec(Codec):
    """A Codec for a capability, which knows the interface it carries (for the call log)."""

    interface: Callable[[], "InterfaceSpec"] = lambda: None  # type: ignore[assignment,return-value]


def capability_codec(spec_getter: Callable[[], "InterfaceSpec"]) -> Codec:
    """A capability: an implementation goes out as a server, a capability comes back as a proxy."""
    return CapabilityCodec(lambda impl, log: spec_getter().server(impl, log),
                           lambda cap, log: spec_getter().client(cap, log), interface=spec_getter)


def _shown(method: IpcMethod, value: Any) -> Any:
    """A result as the call log shows it: capabilities by interface, not by object address."""
    if method.result is not None and isinstance(method.result[1], CapabilityCodec):
        return _Shown(f"<{method.result[1].interface().name} capability>")
    return value


class _Shown(str):
    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class IpcMethod:
    """One method of an interface as it crosses the wire: names, codecs, secrets, fallback."""

    name: str                                   # Python name
    wire: str                                   # capnp name
    params: tuple[tuple[str, Codec], ...] = ()  # capnp parameter names, in Python argument order
    result: tuple[str, Codec] | None = None     # capnp result field
    secret: frozenset[str] = frozenset()        # parameters -debug=ipc must not print
    # For an implementation without the method: fallback(impl, *args) serves it (a batch
    # method falls back to the single calls, so older implementations keep working).
    fallback: Callable[..., Any] | None = None

    def loggable(self, args: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """The parameters as the call log shows them, secrets masked."""
        return {wire: ("***" if wire in self.secret else arg) for (wire, _), arg in zip(self.params, args)}


class RemoteError(Exception):
    """What a server raises to its peer: a type name and a message, nothing else.

    pycapnp sends the formatted traceback of a server exception to the caller; raising this
    from one small frame keeps the server's code out of it, and the last line,
    "Kind: message", is what `translate` reads back on the caller's side.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


def _remote_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


_KINDS: dict[str, type[IpcError]] = {"IpcAuthError": IpcAuthError, "IpcError": IpcError}


def translate(exc: BaseException, interface: str, method: str, log: CallLog) -> IpcError:
    """A pycapnp exception as the IpcError a caller should see."""
    text = getattr(exc, "description", None) or str(exc)
    if getattr(exc, "type", None) == "DISCONNECTED":
        return IpcDisconnected(f"{interface}.{method}: connection to {log.peer_text()} lost")
    line = _remote_line(text)
    name, sep, message = line.partition(": ")
    if sep and name.rsplit(".", 1)[-1] == "RemoteError":
        name, sep, message = message.partition(": ")   # "...RemoteError: Kind: message"
    cls = _KINDS.get(name, IpcError) if sep else IpcError
    return cls(f"{interface}.{method} failed in {log.peer_text()}: {message if sep else line}")


@dataclass(frozen=True)
class InterfaceSpec:
    """One interface: its capnp schema and its method table."""

    name: str
    schema: Callable[[], Any]      # returns the pycapnp interface type
    methods: tuple[IpcMethod, ...]

    def server(self, impl: Any, log: CallLog) -> Any:
        """A capnp server object that forwards every method to `impl`."""
        return _server_class(self)(impl, log)

    def client(self, cap: Any, log: CallLog) -> Any:
        """A proxy with the interface's Python methods that calls `cap`."""
        return _client_class(self)(cap.cast_as(self.schema()), log)


def _server_method(spec: InterfaceSpec, method: IpcMethod) -> Callable[..., Any]:
    # pycapnp's `<name>_context` form: the handler reads parameters and writes results on the
    # call context itself. The plain form costs a wrapper task per call and builds the
    # parameter dict through failed attribute lookups (measured: 10-20 % of a round trip).
    async def handler(self: Any, context: Any) -> None:
        log: CallLog = self._log
        params = context.params
        args = [codec.decode(params._get(wire), log) for wire, codec in method.params]
        logged = None
        if log.enabled:
            logged = log.request("in", spec.name, method.wire, method.loggable(args))
        try:
            impl_method = getattr(self._impl, method.name, None)
            if impl_method is None and method.fallback is not None:
                value = await method.fallback(self._impl, *args)
            elif impl_method is None:
                raise IpcError(f"{spec.name}.{method.wire} is not implemented by this process")
            else:
                value = await impl_method(*args)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            if logged:
                log.response("in", *logged, spec.name, method.wire, None, exc)
            kind = type(exc).__name__ if isinstance(exc, IpcError) else "IpcError"
            raise RemoteError(kind, str(exc)) from None
        if logged:
            log.response("in", *logged, spec.name, method.wire, _shown(method, value))
        if method.result is not None:
            name, codec = method.result
            codec.put(context.results, name, value, log)

    handler.__name__ = f"{method.wire}_context"
    return handler


#: The code of every server handler above (one closure per method, one code object): the
#: coroutines `dispatch.answer_in_turn` may run in the turn their call arrived.
SERVER_HANDLER_CODE = _server_method(None, IpcMethod("x", "x")).__code__  # type: ignore[arg-type]


@functools.cache
def _server_class(spec: InterfaceSpec) -> type:
    # Built once per interface (the class is the same for every connection), not per object.
    body: dict[str, Any] = {f"{m.wire}_context": _server_method(spec, m) for m in spec.methods}

    def __init__(self: Any, impl: Any, log: CallLog) -> None:
        self._impl, self._log = impl, log

    body["__init__"] = __init__
    return type(f"{spec.name}Server", (spec.schema().Server,), body)


def _client_method(spec: InterfaceSpec, method: IpcMethod) -> Callable[..., Any]:
    async def call(self: Any, *args: Any) -> Any:
        log: CallLog = self._log
        # `_request` by name: the attribute form builds (and drops) an AttributeError first.
        request = self._cap._request(method.wire)
        for (wire, codec), arg in zip(method.params, args):
            codec.put(request, wire, arg, log)
        logged = log.request("out", spec.name, method.wire, method.loggable(args)) if log.enabled else None
        try:
            response = await request.send()
        except Exception as exc:
            error = translate(exc, spec.name, method.wire, log)
            if logged:
                log.response("out", *logged, spec.name, method.wire, None, error)
            raise error from None
        value = method.result[1].decode(field_reader(response)(method.result[0]), log) if method.result else None
        if logged:
            log.response("out", *logged, spec.name, method.wire, _shown(method, value))
        return value

    call.__name__ = method.name
    return call


@functools.cache
def _client_class(spec: InterfaceSpec) -> type:
    body: dict[str, Any] = {m.name: _client_method(spec, m) for m in spec.methods}

    def __init__(self: Any, cap: Any, log: CallLog) -> None:
        self._cap, self._log = cap, log

    body["__init__"] = __init__
    return type(f"{spec.name}Client", (), body)
