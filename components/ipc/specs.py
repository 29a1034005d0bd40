"""The method tables of the IPC interfaces (see `binding`)."""

from __future__ import annotations

from . import schema
from .binding import PLAIN, Codec, InterfaceSpec, Method, capability_codec, struct_codec
from .interfaces import Peer

PEER = struct_codec(Peer)
LIST = Codec(lambda v, _: list(v), lambda v, _: [str(x) for x in v])

ECHO = InterfaceSpec("Echo", lambda: schema.load("echo").Echo, (
    Method("echo", "echo", (("echo", PLAIN),), ("result", PLAIN)),
    Method("destroy", "destroy"),
))

INIT = InterfaceSpec("Init", lambda: schema.load("init").Init, (
    Method("hello", "hello", (("client", PEER), ("debug", LIST)), ("server", PEER)),
    Method("make_echo", "makeEcho", (), ("echo", capability_codec(lambda: ECHO))),
))
