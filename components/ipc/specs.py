"""The IPC method tables, generated from the schemas in components/interfaces/.

The schema is the one source of truth for what travels: an interface method's Python name is
the snake_case of its capnp name, its parameters are its parameter struct's fields in order,
its result is its result struct's single field (or nothing). Codecs follow from the capnp
types; only the structs' Python classes and a few per-method extras (a parameter -debug=ipc
must mask, a fallback for older implementations) are named here. tests/test_interfaces.py
checks that the Python protocols beside the schemas say the same.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

from . import schema
from .binding import (
    PLAIN, Codec, InterfaceSpec, IpcMethod, StructListCodec, capability_codec, field_reader, fields_filler,
    struct_codec,
)
from .errors import IpcError
from ..interfaces.chain import (
    EVENT_KINDS, BlockInfo, BroadcastResult, ChainEvent, RpcMethodInfo, RpcRequest, RpcResponse,
)
from ..interfaces.init import IpcPeer
from ..interfaces.node import ProcessEvent, TipInfo
from ..interfaces.wallet import WalletEvent, WalletOptions

#: Every schema file of components/interfaces/, by name.
SCHEMA_FILES = ("init", "chain", "wallet", "node", "echo", "auth")

LIST = Codec(lambda v, _: list(v), lambda v, _: [str(x) for x in v])
# Data: pycapnp may hand back a view into the message; copy it out (the message goes away).
BYTES = Codec(lambda v, _: bytes(v), lambda v, _: bytes(v))
BYTES_LIST = Codec(lambda v, _: [bytes(x) for x in v], lambda v, _: [bytes(x) for x in v])
# capnp scalar kinds that pycapnp hands over as Python values already.
_SCALARS = frozenset({"text", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                      "uint32", "uint64", "float32", "float64"})


def camel(name: str) -> str:
    """snake_case → camelCase, as capnp spells names (it forbids underscores)."""
    first, *rest = name.split("_")
    return first + "".join(w.title() for w in rest)


def snake(name: str) -> str:
    """camelCase → snake_case: a capnp name as Python spells it."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel_struct_codec(cls: type) -> Codec:
    """A dataclass carried as a capnp struct whose field names are the camelCase of the
    Python ones: prev_hash <-> prevHash. Data fields are copied to bytes on the way in."""
    names = [f.name for f in dataclasses.fields(cls)]
    wire = {n: camel(n) for n in names}
    fields = tuple(wire.items())

    def decode(r: Any, _: Any) -> Any:
        get = field_reader(r)
        values = {n: get(w) for n, w in fields}
        return cls(**{n: bytes(v) if isinstance(v, memoryview) else v for n, v in values.items()})

    return Codec(lambda v, _: {wire[n]: getattr(v, n) for n in names}, decode, fields_filler(fields))


def list_codec(item: Codec) -> Codec:
    """A capnp List of what `item` carries."""
    encode: Callable[[Any, Any], Any] = lambda v, log: [item.encode(x, log) for x in v]
    decode: Callable[[Any, Any], Any] = lambda r, log: [item.decode(x, log) for x in r]
    if item.fill is not None:
        return StructListCodec(encode, decode, item_fill=item.fill)
    return Codec(encode, decode)


# Event kinds travel in the schema's camelCase spelling.
_EVENT_WIRE = {kind: camel(kind) for kind in EVENT_KINDS}
_EVENT_PY = {wire: kind for kind, wire in _EVENT_WIRE.items()}


def _event_kind(wire: str) -> str:
    """An event kind off the wire: one of the four, or the call fails. The peer writes what it
    likes, and the receiver must never be asked to run anything else."""
    kind = _EVENT_PY.get(wire)
    if kind is None:
        raise IpcError(f"unknown chain event kind {wire[:40]!r}")
    return kind


def _decode_chain_event(get: Any) -> ChainEvent:
    return ChainEvent(_event_kind(get("kind")), bytes(get("data")), get("height"), get("reason"))


def _decode_rpc_request(get: Any) -> RpcRequest:
    return RpcRequest(get("method"), get("params"), get("uriWallet") if get("hasUriWallet") else None,
                      get("user"), bytes(get("tipHash")))


def _chain_event_fields(e: ChainEvent) -> dict[str, Any]:
    return {"kind": _EVENT_WIRE[e.kind], "data": e.data, "height": e.height, "reason": e.reason}


def _rpc_request_fields(q: RpcRequest) -> dict[str, Any]:
    # uri_wallet may be None (a call to "/"): capnp Text cannot be null, hence hasUriWallet.
    return {"method": q.method, "params": q.params, "uriWallet": q.uri_wallet or "",
            "hasUriWallet": q.uri_wallet is not None, "user": q.user, "tipHash": q.tip}


def _dict_filler(fields: Callable[[Any], dict[str, Any]]) -> Callable[[Any, Any, Any], None]:
    """`fill` (binding.Codec) from a function that lists a value's capnp fields."""
    def fill(builder: Any, value: Any, _: Any) -> None:
        put = builder._set  # noqa: SLF001 - what pycapnp's __setattr__ calls
        for wire, item in fields(value).items():
            put(wire, item)
    return fill


_CHAIN_EVENT = Codec(lambda e, _: _chain_event_fields(e), lambda r, _: _decode_chain_event(field_reader(r)),
                     _dict_filler(_chain_event_fields))
_RPC_REQUEST = Codec(lambda q, _: _rpc_request_fields(q), lambda r, _: _decode_rpc_request(field_reader(r)),
                     _dict_filler(_rpc_request_fields))

#: The Python side of each capnp struct that travels: the only thing a new struct needs here.
STRUCTS: dict[str, Codec] = {
    "IpcPeer": struct_codec(IpcPeer),
    "BlockInfo": camel_struct_codec(BlockInfo),
    "BroadcastResult": camel_struct_codec(BroadcastResult),
    "RpcMethodInfo": camel_struct_codec(RpcMethodInfo),
    "RpcResponse": camel_struct_codec(RpcResponse),
    "WalletOptions": camel_struct_codec(WalletOptions),
    "WalletEvent": camel_struct_codec(WalletEvent),
    "TipInfo": camel_struct_codec(TipInfo),
    "ProcessEvent": camel_struct_codec(ProcessEvent),
    "ChainEvent": _CHAIN_EVENT,
    "RpcRequest": _RPC_REQUEST,
}


async def _each_event(impl: Any, events: list[ChainEvent]) -> None:
    """chainEvents for a receiver that implements only the single-event methods."""
    for event in events:
        if event.kind not in EVENT_KINDS:       # decoded ones are; a local caller's might not be
            raise IpcError(f"unknown chain event kind {event.kind[:40]!r}")
        await getattr(impl, event.kind)(*event.args())


#: What the schema cannot say about a method: (interface, capnp method) → IpcMethod fields.
EXTRAS: dict[tuple[str, str], dict[str, Any]] = {
    ("Auth", "login"): {"secret": frozenset({"password"})},
    ("ChainNotifications", "chainEvents"): {"fallback": _each_event},
}


@dataclasses.dataclass(frozen=True)
class _Declaration:
    """A struct or interface declared in one of the schema files."""

    name: str
    file: str        # the schema file, without .capnp
    kind: str        # "struct" or "interface"

    def type(self) -> Any:
        """The pycapnp type."""
        return getattr(schema.load(self.file), self.name)


@functools.cache
def _declarations() -> dict[int, _Declaration]:
    """Every struct and interface of the schema files, by capnp type id."""
    found: dict[int, _Declaration] = {}
    for file in SCHEMA_FILES:
        module = schema.load(file)
        for name in dir(module):
            node = getattr(getattr(getattr(module, name), "schema", None), "node", None)
            if node is not None and node.which() in ("struct", "interface"):
                found[node.id] = _Declaration(name, file, node.which())
    return found


def _declared_name(type_id: int) -> str:
    try:
        return _declarations()[type_id].name
    except KeyError:
        raise IpcError(f"type {type_id:#x} is not declared in components/interfaces/") from None


def _codec(capnp_type: Any, where: str) -> Codec:
    """The codec for a capnp type (a schema `Type` node)."""
    kind = capnp_type.which()
    if kind == "data":
        return BYTES
    if kind in _SCALARS:
        return PLAIN
    if kind == "list":
        element = capnp_type.list.elementType
        if element.which() == "text":
            return LIST
        if element.which() == "data":
            return BYTES_LIST
        return list_codec(_codec(element, where))
    if kind == "struct":
        name = _declared_name(capnp_type.struct.typeId)
        if name not in STRUCTS:
            raise IpcError(f"{where}: struct {name} has no codec in components/ipc/specs.py STRUCTS")
        return STRUCTS[name]
    if kind == "interface":
        name = _declared_name(capnp_type.interface.typeId)
        return capability_codec(lambda: spec(name))
    raise IpcError(f"{where}: capnp type {kind} cannot travel (no codec)")


def _fields(struct_schema: Any, where: str) -> tuple[tuple[str, Codec], ...]:
    return tuple((field.name, _codec(field.slot.type, f"{where}.{field.name}"))
                 for field in struct_schema.node.struct.fields)


def _method(interface: str, wire: str, capnp_method: Any) -> IpcMethod:
    where = f"{interface}.{wire}"
    results = _fields(capnp_method.result_type, where)
    if len(results) > 1:
        raise IpcError(f"{where}: a method returns one value (the result struct has {len(results)})")
    return IpcMethod(snake(wire), wire, _fields(capnp_method.param_type, where),
                     results[0] if results else None, **EXTRAS.get((interface, wire), {}))


@functools.cache
def spec(name: str) -> InterfaceSpec:
    """The method table of interface `name` ("Chain", "Init", ...), built from its schema."""
    for declaration in _declarations().values():
        if declaration.name == name and declaration.kind == "interface":
            capnp_schema = declaration.type().schema
            return InterfaceSpec(name, declaration.type, tuple(
                _method(name, wire, capnp_schema.methods[wire]) for wire in capnp_schema.method_names))
    raise IpcError(f"no interface {name} in components/interfaces/")


def all_specs() -> list[InterfaceSpec]:
    """Every interface's table, by name: built once before a process confines itself, and
    what tests/test_interfaces.py compares with the protocols."""
    return [spec(d.name) for d in sorted(_declarations().values(), key=lambda d: d.name)
            if d.kind == "interface"]
