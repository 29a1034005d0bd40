"""A compromised node against a wallet process: chain events with a kind the interface does
not have. Over a real Cap'n Proto connection, the node's side is a rogue `Chain` whose
`handle_notifications` sends `chainEvents` with the kind `__init__` to the wallet's real
notification receiver (wallet._Notifications).

Before 12-06 the decoder passed any kind through and the receiver ran `getattr(self, kind)`:
`__init__` re-initialised it with the node's bytes as its wallet, and every later
notification failed (the wallet stopped following the chain until it reconnected). Now the
decoder refuses an unknown kind (the call fails at the node's end) and the receiver
dispatches only the four event kinds.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import capnp
import pytest
from ipc_pair import use_over_socketpair

from cleancoin.components.interfaces.chain import ChainEvent
from cleancoin.components.interfaces.init import IpcPeer

WALLET = IpcPeer("test-wallet", os.getpid())
NODE = IpcPeer("rogue-node", os.getpid())


class _Synced:
    """What _Notifications calls on its wallet: counts the syncs the events ask for."""

    def __init__(self) -> None:
        self.syncs = 0

    async def sync(self) -> None:
        self.syncs += 1


class RogueChain:
    """The node's side: on subscription, a hostile batch, then an honest one."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.done = asyncio.Event()

    async def handle_notifications(self, notifications: Any) -> Any:
        async def attack() -> None:
            for kind in ("__init__", "_wallet", "sync", "blockConnected"):
                try:
                    await notifications.chain_events([ChainEvent(kind, b"rogue", 1)])
                    self.outcomes.append(f"{kind}: accepted")
                except Exception as exc:  # noqa: BLE001 - what the rogue node sees
                    self.outcomes.append(f"{kind}: refused ({type(exc).__name__})")
            await notifications.chain_events([ChainEvent("block_connected", b"", 1)])
            self.outcomes.append("honest: accepted")
            self.done.set()
        self._task = asyncio.ensure_future(attack())
        return _NoHandler()


class _NoHandler:
    async def disconnect(self) -> None:
        return None


def test_a_rogue_node_cannot_send_events_the_interface_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    from cleancoin.components.ipc import specs
    from cleancoin.components.wallet.wallet import _Notifications
    # The rogue node writes what it likes on the wire: its encoder learns the hostile kinds
    # (both ends share this process, and the wallet's decoder is a separate table).
    for kind in ("__init__", "_wallet", "sync", "blockConnected"):
        monkeypatch.setitem(specs._EVENT_WIRE, kind, kind)  # noqa: SLF001
    rogue = RogueChain()
    wallet = _Synced()

    async def use(init: Any) -> None:
        chain = await init.make_chain()
        await chain.handle_notifications(_Notifications(wallet))  # type: ignore[arg-type]
        await asyncio.wait_for(rogue.done.wait(), 20)

    asyncio.run(capnp.run(use_over_socketpair(lambda: rogue, use, NODE, WALLET)))
    # The rogue node sees each hostile call fail; the wallet's receiver is intact, and the
    # honest event after them still reaches the wallet (one sync, from it alone: the wire's
    # "blockConnected" is the honest spelling and is taken as the kind it names).
    assert rogue.outcomes == ["__init__: refused (IpcError)", "_wallet: refused (IpcError)",
                              "sync: refused (IpcError)", "blockConnected: accepted",
                              "honest: accepted"], rogue.outcomes
    assert wallet.syncs == 2, wallet.syncs


def test_the_receiver_runs_only_the_four_event_kinds() -> None:
    """Defence in depth for a binding that does not decode (in-process, or a future one)."""
    from cleancoin.components.wallet.wallet import _Notifications
    wallet = _Synced()
    receiver = _Notifications(wallet)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown chain event kind"):
        asyncio.run(receiver.chain_events([ChainEvent("__init__", b"rogue")]))
    assert receiver._wallet is wallet      # noqa: SLF001 - what the old code replaced
