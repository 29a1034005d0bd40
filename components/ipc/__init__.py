"""The Cap'n Proto IPC runtime shared by every CleanCoin process.

Each interface is defined once as a Python protocol (`interfaces`). A local binding is the
implementation itself; the IPC binding is a capnp server adapter plus a client proxy built
from the same method table (`binding`), so component code cannot tell the two apart.
"""
