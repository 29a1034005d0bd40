"""The interfaces between CleanCoin processes, each defined once as a Python protocol.

Implementations (local bindings) and IPC client proxies both satisfy these protocols; all
methods are coroutines so that the two are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .chain import Chain
from .node import Node
from .wallet import WalletLoader, WalletOptions


@dataclass(frozen=True)
class IpcPeer:
    """One end of a connection: a process name and its pid."""

    name: str
    pid: int

    def __str__(self) -> str:
        return f"{self.name}({self.pid})"


class Echo(Protocol):
    async def echo(self, echo: str) -> str:
        """Return `echo`."""
        ...

    async def destroy(self) -> None:
        """Release the object."""
        ...


class Init(Protocol):
    async def hello(self, client: IpcPeer, debug: list[str]) -> IpcPeer:
        """Introduce the client and pass on its -debug categories; returns who the server is."""
        ...

    async def make_echo(self) -> Echo:
        """A new Echo object."""
        ...

    async def make_chain(self) -> Chain:
        """The node's Chain; fails (IpcError) in a process that is no node."""
        ...

    async def make_node(self) -> "Node":
        """The node as a front end drives it; fails in a process that is no node."""
        ...

    async def make_wallet_loader(self, chain: Chain, options: WalletOptions) -> WalletLoader:
        """A wallet process's wallets over `chain`; fails in a process that is no wallet."""
        ...


class Auth(Protocol):
    """What a TCP listener offers before anything else (components/ipc/auth.py): a login."""

    async def login(self, user: str, password: str) -> Init:
        """The listener's Init once `user` and `password` match; fails (IpcAuthError)
        otherwise, and the connection closes after too many failures."""
        ...
