"""Fuzz: Cap'n Proto frames on a real CleanCoin-node's node.sock (hypothesis).

The frames to start from are real: a recording relay sits between a real IPC client
(transport.connect, Init.makeNode, one JSON-RPC call) and node.sock and keeps the bytes the
client sent, split into Cap'n Proto messages (segment table, then segments). Each example
sends, on a fresh connection: raw garbage; a segment table with absurd counts and sizes; or
the recorded messages cut short, with words flipped, segment sizes changed, messages dropped,
repeated or reordered. It then half-closes and reads until the node ends the connection (or
a deadline passes, which fails the test: a connection must not hang the node). The property:

- the node and its wallet process are the same processes as before;
- RPC answers, and a new real IPC client gets through Init.makeNode to an answered call:
  garbage ends only the connection that carried it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from framework import TestNode, is_multiprocess

pytestmark = pytest.mark.skipif(not is_multiprocess(),
                                reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

EXAMPLES = settings.default.max_examples
READ_TIMEOUT = 15.0
#: A full IPC client session (connect, makeNode, a call) costs tens of milliseconds: run it
#: after every this many examples and at the end, and after each example check the cheaper
#: signs (same processes, RPC answers).
CLIENT_EVERY = 10


def client_session(sock_path: str) -> int:
    """A real IPC client: connect, Init.makeNode, getblockcount; returns the count."""
    import capnp

    from cleancoin.components.interfaces.chain import RpcRequest
    from cleancoin.components.ipc.address import parse
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import connect

    async def drive() -> int:
        connection = await connect(parse(f"unix:{sock_path}", ""), IpcPeer("fuzz-client", os.getpid()),
                                   False)
        try:
            front = await connection.init.make_node()
            answer = await front.execute_rpc(RpcRequest("getblockcount", "[]", None))
            assert answer.ok, answer
            return int(json.loads(answer.result))
        finally:
            connection.close()

    return int(asyncio.run(capnp.run(drive())))


def split_messages(stream: bytes) -> list[bytes]:
    """Cap'n Proto stream framing: u32 (segments - 1), u32 size (words) per segment, padding
    to 8 bytes, then the segments."""
    out, i = [], 0
    while i + 4 <= len(stream):
        count = struct.unpack_from("<I", stream, i)[0] + 1
        table = 4 + 4 * count
        table += table % 8
        sizes = struct.unpack_from(f"<{count}I", stream, i + 4)
        end = i + table + 8 * sum(sizes)
        out.append(stream[i:end])
        i = end
    return out


def record_client_messages(sock_path: str, relay_path: str) -> list[bytes]:
    """Run a real client through a relay to node.sock; the messages the client sent."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(relay_path)
    listener.listen(1)
    sent = bytearray()

    def pump(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while chunk := src.recv(65536):
                if keep is not None:
                    keep += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def relay() -> None:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(sock_path)
        back = threading.Thread(target=pump, args=(upstream, client, None), daemon=True)
        back.start()
        pump(client, upstream, sent)
        back.join(10)
        client.close()
        upstream.close()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    assert client_session(relay_path) >= 0
    thread.join(20)
    listener.close()
    messages = split_messages(bytes(sent))
    assert len(messages) >= 3 and b"".join(messages) == bytes(sent), len(messages)
    return messages


@dataclass
class Target:
    node: TestNode
    sock_path: str
    messages: list[bytes]
    pids: list[int]
    examples: int = 0
    log_mark: int = 0          # debug.log's length when the node last started

    def current_pids(self) -> list[int]:
        return [int(p["pid"]) for p in self.node.rpc.getprocessinfo()["processes"]]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("fuzz-ipc")
    node = TestNode(0, base, ["-ipcbind=unix"])
    node.start()
    try:
        node.rpc.createwallet("w")
        sock_path = str(node.netdatadir / "node.sock")
        messages = record_client_messages(sock_path, str(base / "relay.sock"))
        target = Target(node, sock_path, messages, [])
        target.pids = target.current_pids()
        yield target
        assert client_session(sock_path) == 0
        assert target.current_pids() == target.pids
        assert node.stop() == 0
    finally:
        node.cleanup()


# -------------------------------------------------------------------------------- frames

def segment_table(counts: int, sizes: list[int]) -> bytes:
    table = struct.pack("<I", counts) + b"".join(struct.pack("<I", s) for s in sizes)
    return table + b"\0" * (len(table) % 8)


@st.composite
def mutated_session(draw: st.DrawFn, messages: list[bytes]) -> bytes:
    msgs = [bytearray(m) for m in messages]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "word", "cut", "drop", "repeat", "swap", "size"]))
        i = draw(st.integers(0, len(msgs) - 1)) if msgs else 0
        if not msgs:
            break
        m = msgs[i]
        if op == "flip" and m:
            at = draw(st.integers(0, len(m) - 1))
            m[at] ^= draw(st.integers(1, 255))
        elif op == "word" and len(m) >= 8:
            at = draw(st.integers(0, len(m) // 8 - 1)) * 8
            m[at:at + 8] = draw(st.sampled_from([b"\xff" * 8, b"\0" * 8, b"\xfc\xff\xff\xff\x01\0\0\0",
                                                 struct.pack("<Q", 2**63 - 1)]) | st.binary(min_size=8, max_size=8))
        elif op == "cut":
            del m[draw(st.integers(0, len(m))):]
        elif op == "drop":
            del msgs[i]
        elif op == "repeat":
            msgs.insert(i, bytearray(m))
        elif op == "swap" and len(msgs) > 1:
            j = draw(st.integers(0, len(msgs) - 1))
            msgs[i], msgs[j] = msgs[j], msgs[i]
        elif op == "size" and len(m) >= 8:
            m[4:8] = struct.pack("<I", draw(st.sampled_from([0, 1, 2**16, 2**28, 2**32 - 1])))
    return b"".join(bytes(m) for m in msgs)


def frames(messages: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=600),
        st.builds(lambda c, sizes, body: segment_table(c, sizes) + body,
                  st.sampled_from([0, 1, 2, 511, 512, 2**16, 2**32 - 1]),
                  st.lists(st.sampled_from([0, 1, 2, 1000, 2**20, 2**29, 2**32 - 1]), max_size=4),
                  st.binary(max_size=256)),
        mutated_session(messages), mutated_session(messages), mutated_session(messages),
    )


def send_and_drain(sock_path: str, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(READ_TIMEOUT)
        s.connect(sock_path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            return "closed"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except TimeoutError:
            return "hung"


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_fuzz_capnp_frames_on_node_sock(target: Target, data: st.DataObject) -> None:
    outcome = send_and_drain(target.sock_path, data.draw(frames(target.messages)))
    event(outcome)
    assert outcome != "hung", "the node neither answered nor closed the connection"
    assert target.node.process is not None
    if _shut_down_cleanly(target.node, target.log_mark):
        # A mutation can make a well-formed Node.shutdown call (method 1 is one bit away
        # from executeRpc, method 0), which any node.sock client may make: the node honoured
        # it and exited 0, as it must. Not a failure: start it again and go on.
        event("a valid shutdown call")
        target.node.process = None
        target.log_mark = len(target.node.debug_log())
        target.node.start()
        target.pids = target.current_pids()
        return
    assert target.node.process.poll() is None
    assert target.current_pids() == target.pids
    assert target.node.rpc.getblockcount() == 0
    target.examples += 1
    if target.examples % CLIENT_EVERY == 0:
        assert client_session(target.sock_path) == 0


def _shut_down_cleanly(node: TestNode, log_mark: int) -> bool:
    """Whether the node ended with status 0 after logging a shutdown request since its start
    (its debug.log from `log_mark` on; a crash ends otherwise). Waits a little: the exit
    follows the request."""
    assert node.process is not None
    try:
        requested = "Shutdown requested" in node.debug_log()[log_mark:]
        code = node.process.wait(5) if requested else node.process.poll()
    except subprocess.TimeoutExpired:
        return False
    return code == 0


def test_the_recorded_session_replays(target: Target) -> None:
    """The recording is a real session: replayed unchanged, the node answers it (and the
    fuzzer's starting point is not garbage already)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(READ_TIMEOUT)
        s.connect(target.sock_path)
        s.sendall(b"".join(target.messages))
        reply = s.recv(65536)
    assert len(reply) >= 8 and split_messages(reply), reply[:64]
    assert Path(target.sock_path).exists()
