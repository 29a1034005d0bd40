"""Errors an IPC caller sees, in place of pycapnp's KjException."""

from __future__ import annotations


class IpcError(Exception):
    """A call that failed on the other side or on the way."""


class IpcDisconnected(IpcError):
    """The connection is gone (the peer exited, crashed or closed it)."""


class IpcAuthError(IpcError):
    """Wrong or missing credentials on an authenticated listener."""
