"""The node's wallet RPC router in process: who may register wallet methods, reservation of
a dead wallet's names, readiness (-28 until the node has loaded the wallets), and checks of
what is registered. The functional tests (tests/functional/test_ipc_trust.py) perform the same
attacks over real IPC against a real CleanCoin-node."""

from __future__ import annotations

import asyncio

import pytest

from cleancoin.components.interfaces.chain import ChainError, RpcMethodInfo, RpcRequest, RpcResponse
from cleancoin.components.node.rpc_registration import RegistrationLimits, RegistrationRefused, check_methods
from cleancoin.components.node.wallet_router import WalletRpcRouter, printable
from cleancoin.components.rpc.errors import RpcError
from cleancoin.components.rpc.registry import Registry


class Answer:
    """An RpcHandler that answers every call with its own name (a JSON string)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[RpcRequest] = []

    async def execute(self, request: RpcRequest) -> RpcResponse:
        self.calls.append(request)
        return RpcResponse(True, f'"{self.name}"')


def methods(*names: str) -> list[RpcMethodInfo]:
    return [RpcMethodInfo(n, "wallet", n, f"{n}\n\nHelp.") for n in names]


def call(registry: Registry, name: str) -> object:
    try:
        return asyncio.run(registry.execute(name, []))
    except RpcError as exc:
        return exc.code


def node_registry() -> Registry:
    registry = Registry()
    registry.add("getblockcount", lambda ctx: 0)
    registry.add_stop()
    return registry


def test_a_dead_wallets_names_stay_reserved_for_its_own_restart() -> None:
    registry = node_registry()
    router = WalletRpcRouter(registry)
    own = router.slot("the node's wallet process", reserve=True, gated=True)
    other = router.slot("an IPC client", reserve=False, gated=False)
    first = Answer("first")
    reg = router.register(own, methods("walletpassphrase", "getbalance"), first)
    assert call(registry, "getbalance") == -28            # registered, wallets not loaded yet
    router.set_ready(own)
    assert call(registry, "getbalance") == "first"
    asyncio.run(reg.disconnect())                          # the process died
    assert call(registry, "walletpassphrase") == -28
    thief = Answer("thief")
    with pytest.raises(ChainError, match="reserved for the node's wallet process"):
        router.register(other, methods("walletpassphrase"), thief)
    router.register(own, methods("walletpassphrase", "getbalance"), Answer("restarted"))
    assert call(registry, "walletpassphrase") == -28       # until the node loaded its wallets
    router.set_ready(own)
    assert call(registry, "walletpassphrase") == "restarted" and thief.calls == []


def test_a_live_registration_cannot_be_doubled_and_node_methods_are_refused() -> None:
    registry = node_registry()
    router = WalletRpcRouter(registry)
    clients = router.slot("an IPC client", reserve=False, gated=False)
    reg = router.register(clients, methods("getbalance"), Answer("one"))
    with pytest.raises(ChainError, match="already served"):
        router.register(clients, methods("getbalance"), Answer("two"))
    asyncio.run(reg.disconnect())
    # Not reserving: the next client of the same kind takes the names.
    router.register(clients, methods("getbalance", "listwallets"), Answer("two"))
    assert call(registry, "getbalance") == "two"
    for name in ("getblockcount", "stop", "help"):
        with pytest.raises(ChainError, match="the node's own"):
            router.register(router.slot("x", reserve=False, gated=False), methods(name), Answer("x"))
    assert call(registry, "getblockcount") == 0


def test_refusing_registrar_refuses() -> None:
    router = WalletRpcRouter(node_registry())
    with pytest.raises(ChainError, match="no wallet RPC registrations"):
        router.refusing("an IPC client", "this node takes no wallet RPC registrations")(methods("a"), Answer("a"))


@pytest.mark.parametrize("bad, reason", [
    (methods("Stop"), "[a-z0-9_]+"),
    (methods("stop "), "[a-z0-9_]+"),
    (methods(""), "[a-z0-9_]+"),
    (methods("a" * 65), "at most 64"),
    ([], "no methods"),
    (methods("a", "a"), "listed twice"),
    (methods(*[f"m{i}" for i in range(257)]), "at most 256"),
    ([RpcMethodInfo("a", "wallet", "a", "a\n\x1b[31m")], "U+001B"),
    ([RpcMethodInfo("a", "wallet", "a", "a\u202e")], "U+202E"),
    ([RpcMethodInfo("a", "wallet", "a\nb", "a")], "does not start with its name"),
    ([RpcMethodInfo("a", "wallet", "a \x07", "a")], "U+0007"),
    ([RpcMethodInfo("a", "Wallet", "a", "a")], "categories"),
    ([RpcMethodInfo("a", "wallet", "b", "a")], "does not start with its name"),
    ([RpcMethodInfo("a", "wallet", "a", "h" * 16385)], "at most 16384"),
    ([RpcMethodInfo(f"m{i}", "wallet", f"m{i}", "h" * 16384) for i in range(65)], "in all"),
])
def test_malformed_registrations_are_refused(bad: list[RpcMethodInfo], reason: str) -> None:
    with pytest.raises(RegistrationRefused) as info:
        check_methods(bad, RegistrationLimits())
    assert reason in str(info.value)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)


def test_printable() -> None:
    assert printable("ok\nline\ttab", 100) == "ok\nline\ttab"
    assert printable("a\x1b[2Jb\u202e", 100) == "a\ufffd[2Jb\ufffd"
    assert printable("x" * 50, 10) == "xxxxxxx..."


def test_refusals_are_logged_without_flooding(caplog: pytest.LogCaptureFixture) -> None:
    """Each of the first 10 refusals of a connection is logged, then every 1000th."""
    import logging
    router = WalletRpcRouter(node_registry())
    refuse = router.refusing("an IPC client", "this node takes no wallet RPC registrations")
    with caplog.at_level(logging.WARNING, "cleancoin.rpc"):
        for _ in range(2000):
            with pytest.raises(ChainError):
                refuse(methods("a"), Answer("a"))
    lines = [r.getMessage() for r in caplog.records if "refused a wallet RPC registration" in r.getMessage()]
    assert len(lines) == 12 and lines[-1].endswith("[2000 so far]")
