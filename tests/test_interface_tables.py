"""Every IPC method table (components/ipc/specs.py) agrees with its schema and its protocol:
the same methods, by camelCase wire name and by Python name, parameters in the same order."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("capnp")

from cleancoin.components.interfaces import chain, init, node, wallet  # noqa: E402
from cleancoin.components.ipc import specs  # noqa: E402
from cleancoin.components.ipc.binding import InterfaceSpec  # noqa: E402

PROTOCOLS = {"Echo": init.Echo, "Init": init.Init, "Handler": chain.Handler,
             "ChainNotifications": chain.ChainNotifications, "RpcHandler": chain.RpcHandler,
             "Chain": chain.Chain, "Node": node.Node, "NodeNotifications": node.NodeNotifications,
             "WalletLoader": wallet.WalletLoader, "WalletNotifications": wallet.WalletNotifications}
TABLES = [v for v in vars(specs).values() if isinstance(v, InterfaceSpec)]


def test_every_table_has_a_protocol() -> None:
    assert sorted(t.name for t in TABLES) == sorted(PROTOCOLS)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_table_matches_schema_and_protocol(table: InterfaceSpec) -> None:
    schema_methods = table.schema().schema.method_names_inherited
    assert sorted(m.wire for m in table.methods) == sorted(schema_methods)
    protocol = PROTOCOLS[table.name]
    py_methods = {n for n, v in vars(protocol).items() if inspect.iscoroutinefunction(v)}
    assert {m.name for m in table.methods} == py_methods
    for method in table.methods:
        wire_params = list(table.schema().schema.methods[method.wire].param_type.fieldnames)
        assert [p for p, _ in method.params] == wire_params, method.wire
        sig = inspect.signature(getattr(protocol, method.name))
        assert len(sig.parameters) - 1 == len(method.params), method.name
