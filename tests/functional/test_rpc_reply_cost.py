"""Functional, both executables: what the replies to one RPC user's requests make the node
hold. The attacker holds credentials, but -rpcwhitelist lets it call only getblock (a block
explorer's read-only account); its requests are small, the replies are not.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable

from framework import (TestNode, WATCHER, WATCHER_PASSWORD as PASSWORD, WATCHER_RPCAUTH as RPCAUTH,
                       mine_big_block, peak_rss_growth, post_json_rpc, wait_until)

MIB = 1 << 20
#: Outputs of the big block's transaction: 672 KB serialized, getblock verbosity 0 a 1.3 MB reply.
OUTPUTS = 24_000
#: Calls in the batch: 1.3 MB of reply each, 49 fit the user's 64 MiB.
BATCH = 100
#: -rpcservertimeout for the test's node (seconds): how long an unread reply is kept.
TIMEOUT = 2.0



def test_a_batch_of_big_replies_is_charged_to_its_user(node: Callable[..., TestNode]) -> None:
    """One batch of BATCH `getblock <big block> 0` calls, 13 KB of request: each reply is the
    block's 1.3 MB of hex. Measured with 200 on the code before: the node built all 200 replies, then
    joined them, and aiohttp and the transport copied the join: RSS +771 MiB at the peak (a
    batch of the 1000 allowed: five times that), though the user's requests in flight may
    hold 64 MiB. Now replies are charged to the user's budget as they are built, as bodies
    are, and stay charged until the transport has taken them: 49 calls are answered with the
    block, the ones after them RPC_OUT_OF_MEMORY (-7) "Reply too large ..." without being run;
    peak +67 to +70 MiB (for 200 as for 100). The bound: the budget and as much again (128
    MiB); the code before: +384 MiB for 100 calls. A smaller batch is answered whole."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblock", "-rpcwhitelistdefault=0",
             f"-rpcservertimeout={TIMEOUT:g}")
    n.start()
    assert n.process is not None
    block = mine_big_block(n, OUTPUTS)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "getblock", "params": [block, 0]} for i in range(BATCH)]
    t0 = time.monotonic()
    with peak_rss_growth(n.process.pid) as peak:
        status, reply = post_json_rpc(n.rpc_port, batch, WATCHER, PASSWORD)
    spent = time.monotonic() - t0
    answers = json.loads(reply) if status == 200 else []
    served = sum("result" in a for a in answers)
    refused = [a["error"] for a in answers if "error" in a]
    print(f"HTTP {status}; peak RSS +{peak[0] / MIB:.0f} MiB; {served} served, {len(refused)} refused; {spent:.1f} s")
    assert status == 200
    assert peak[0] < 128 * MIB, f"one 13 KB request made the node grow by {peak[0] / MIB:.0f} MiB"
    assert 10 <= served < BATCH and served + len(refused) == BATCH
    assert all(a["result"] == answers[0]["result"] for a in answers[:served])      # the block, in order
    assert refused[0]["code"] == -7 and "Reply too large" in refused[0]["message"], refused[0]
    assert "replies" in n.debug_log()
    # A batch whose replies fit is answered whole, and a single call as ever.
    status, reply = post_json_rpc(n.rpc_port, batch[:10], WATCHER, PASSWORD)
    assert status == 200 and all("result" in a for a in json.loads(reply))
    status, reply = post_json_rpc(n.rpc_port, {"id": 1, "method": "getblock", "params": [block, 2]}, WATCHER, PASSWORD)
    assert status == 200 and len(json.loads(reply)["result"]["tx"][1]["vout"]) == OUTPUTS
    # A reply stays charged while it is written, so a client that does not read it is given
    # -rpcservertimeout, as for its request's body, then the connection is closed (its
    # 7 MB do not fit the kernel's buffers).
    auth = base64.b64encode(f"{WATCHER}:{PASSWORD}".encode()).decode()
    call = json.dumps({"id": 1, "method": "getblock", "params": [block, 2]}).encode()
    with socket.create_connection(("127.0.0.1", n.rpc_port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                  f"Content-Length: {len(call)}\r\n\r\n".encode() + call)
        wait_until(lambda: "not read within -rpcservertimeout" in n.debug_log(), TIMEOUT + 10,
                   what="the unread reply's deadline")
    assert n.stop() == 0
