"""Each interface is defined once: the Python protocols of components/interfaces/, the Cap'n
Proto schemas beside them and the IPC method tables (generated from the schemas) must agree.

A method added to a protocol and forgotten in the schema, a parameter renamed on one side only,
a method that returns something in one view and nothing in the other: each fails here, before
it fails as an IpcError between two processes.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

pytest.importorskip("capnp")

from cleancoin.components.interfaces import chain, init, node, wallet  # noqa: E402
from cleancoin.components.ipc import specs  # noqa: E402
from cleancoin.components.ipc.binding import CapabilityCodec  # noqa: E402

PROTOCOL_MODULES = (chain, init, node, wallet)


def _protocols() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in PROTOCOL_MODULES:
        for name, value in vars(module).items():
            if inspect.isclass(value) and getattr(value, "_is_protocol", False) \
                    and value.__module__ == module.__name__:
                found[name] = value
    return found


def _methods(protocol: type) -> dict[str, Any]:
    return {name: fn for name, fn in vars(protocol).items()
            if inspect.iscoroutinefunction(fn) and not name.startswith("_")}


def test_every_schema_interface_has_a_protocol_and_every_protocol_a_schema() -> None:
    in_schemas = {s.name for s in specs.all_specs()}
    assert in_schemas == set(_protocols())
    assert {"Chain", "ChainNotifications", "Handler", "RpcHandler", "Node", "WalletLoader",
            "Init", "Echo", "Auth"} <= in_schemas


@pytest.mark.parametrize("spec", specs.all_specs(), ids=lambda s: s.name)
def test_protocol_schema_and_table_agree(spec: Any) -> None:
    protocol = _protocols()[spec.name]
    methods = _methods(protocol)
    assert set(methods) == {m.name for m in spec.methods}, f"{spec.name}: methods differ"
    capnp_schema = spec.schema().schema
    assert [m.wire for m in spec.methods] == list(capnp_schema.method_names)
    hints_of = {name: typing.get_type_hints(fn, vars(__import__(protocol.__module__, fromlist=["*"])))
                for name, fn in methods.items()}
    for method in spec.methods:
        fn = methods[method.name]
        python_params = list(inspect.signature(fn).parameters)[1:]          # without self
        assert python_params == [specs.snake(wire) for wire, _ in method.params], \
            f"{spec.name}.{method.name}: parameters differ from {spec.name}.{method.wire} in the schema"
        returns = hints_of[method.name].get("return")
        if method.result is None:
            assert returns is type(None), f"{spec.name}.{method.name} returns a value the schema drops"
        else:
            assert returns is not type(None), f"{spec.name}.{method.name}: the schema returns {method.result[0]}"
            codec = method.result[1]
            if isinstance(codec, CapabilityCodec):
                # A capability result is the protocol of the interface it names.
                assert getattr(returns, "__name__", None) == codec.interface().name
        assert fn.__doc__, f"{spec.name}.{method.name} has no docstring"


def test_capability_parameters_name_the_interface_the_protocol_expects() -> None:
    protocols = _protocols()
    for spec in specs.all_specs():
        protocol = protocols[spec.name]
        module = __import__(protocol.__module__, fromlist=["*"])
        for method in spec.methods:
            hints = typing.get_type_hints(getattr(protocol, method.name), vars(module))
            for wire, codec in method.params:
                if isinstance(codec, CapabilityCodec):
                    assert hints[specs.snake(wire)].__name__ == codec.interface().name


def test_a_struct_without_a_codec_is_named_in_the_error() -> None:
    from cleancoin.components.ipc.errors import IpcError

    saved = specs.STRUCTS.pop("BlockInfo")
    specs.spec.cache_clear()
    try:
        with pytest.raises(IpcError, match=r"Chain\.getBlockHeaderInfo\.info: struct BlockInfo has no codec"):
            specs.spec("Chain")
    finally:
        specs.STRUCTS["BlockInfo"] = saved
        specs.spec.cache_clear()
    assert specs.spec("Chain").name == "Chain"


@pytest.mark.parametrize("camel, snake", [("getBlockHeaderInfo", "get_block_header_info"),
                                          ("isInMempool", "is_in_mempool"), ("hello", "hello")])
def test_names_convert_both_ways(camel: str, snake: str) -> None:
    assert specs.snake(camel) == snake
    assert specs.camel(snake) == camel
