"""Fuzz: JSON-RPC request bodies against a real node's RPC server (hypothesis).

One node per module (CleanCoind, or CleanCoin-node whose wallet methods are carried to the
wallet process), with a wallet loaded. Each example POSTs one body, authenticated with the
cookie, to "/" or "/wallet/w": arbitrary bytes, arbitrary JSON, or JSON-RPC 1.0/2.0 requests
and batches naming real methods with arbitrary parameters. The property:

- the server answers (no reset, no hang) with a status bitcoind uses;
- the body is never a traceback, and a JSON-RPC error is never RPC_INTERNAL_ERROR (-32603),
  which is what an exception a handler did not expect turns into;
- the node keeps serving: the next good request (getblockcount) is answered, and the node
  (and its wallet process) is still the same process.

Methods whose side effects reach outside the node or whose work is unbounded by design are
left out (see SKIPPED): they would write files where a random path says, open connections to
random hosts, mine for a random number of blocks or stop the node.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import event, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from framework import TEST_ADDRESS, TestNode, is_multiprocess

EXAMPLES = settings.default.max_examples
SKIPPED = {"stop", "generateblock", "generatetoaddress", "backupwallet", "restorewallet",
           "keypoolrefill", "addnode", "unloadwallet", "encryptwallet", "walletpassphrase",
           "walletpassphrasechange", "walletlock", "help"}
HTTP_STATUSES = {200, 204, 400, 401, 403, 404, 405, 413, 500}
RPC_INTERNAL_ERROR = -32603


class Target:
    """The node under test and a raw HTTP poster with its cookie."""

    def __init__(self, node: TestNode, methods: list[str], pids: list[int]) -> None:
        self.node = node
        self.methods = methods
        self.pids = pids
        cookie = node.cookie_path.read_text().strip()
        self.auth = "Basic " + base64.b64encode(cookie.encode()).decode()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.rpc_port, timeout=60)
        try:
            conn.request("POST", path, body=body, headers={
                "Authorization": self.auth, "Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def process_pids(node: TestNode) -> list[int]:
    return [int(p["pid"]) for p in node.rpc.getprocessinfo()["processes"]] if is_multiprocess() \
        else [node.process.pid]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    node = TestNode(0, tmp_path_factory.mktemp("fuzz-rpc"))
    node.start()
    try:
        node.rpc.createwallet("w")
        node.rpc.generatetoaddress(3, TEST_ADDRESS)
        methods = sorted({line.split()[0] for line in node.rpc.help().splitlines()
                          if line and not line.startswith("==")} - SKIPPED)
        assert "getblockcount" in methods and "getbalance" in methods
        yield Target(node, methods, process_pids(node))
        assert node.stop() == 0
    finally:
        node.cleanup()


# --------------------------------------------------------------------------------- bodies

EDGE_NUMBERS = [0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, -(10**30), 0.5, 1e308,
                -1e-308, 21_000_000, 21_000_001]
EDGE_STRINGS = ["", "w", "0" * 64, "f" * 64, "00" * 33, TEST_ADDRESS, TEST_ADDRESS[:-1] + "x",
                "bcrt1qxxxx", "1.0", "-1", "1e400", "nan", "unset", "economical", "ALL", "\u0000",
                "\u202e", "x" * 1000, "../../etc/passwd", "%ff", "/wallet/w"]
PARAM_NAMES = ["address", "amount", "blockhash", "verbosity", "verbose", "height", "txid",
               "minconf", "maxconf", "include_watchonly", "wallet_name", "filename", "label",
               "comment", "count", "skip", "hexstring", "inputs", "outputs", "conf_target",
               "estimate_mode", "fee_rate", "subtractfeefromamount", "n", "include_mempool",
               "start_height", "stop_height", "message", "signature", "unlock", "transactions"]
json_scalars = (st.none() | st.booleans() | st.sampled_from(EDGE_NUMBERS) | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.sampled_from(EDGE_STRINGS) | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@st.composite
def requests(draw: st.DrawFn, methods: list[str]) -> dict[str, Any]:
    """Mostly well-formed requests of real methods with odd parameters (those reach the
    handlers); sometimes a malformed envelope."""
    request: dict[str, Any] = {}
    malformed = draw(st.integers(0, 4)) == 0
    if draw(st.booleans()):
        request["jsonrpc"] = draw(json_scalars if malformed else st.sampled_from(["1.0", "2.0"]))
    if not malformed:
        request["method"] = draw(st.sampled_from(methods))
        request["params"] = draw(st.lists(json_values, max_size=5)
                                 | st.dictionaries(st.sampled_from(PARAM_NAMES), json_values,
                                                   max_size=4))
        request["id"] = draw(st.integers(0, 1000) | st.text(max_size=5))
        return request
    if draw(st.integers(0, 9)):
        request["method"] = draw(st.sampled_from(methods) | json_scalars)
    if draw(st.integers(0, 3)):
        request["params"] = draw(st.lists(json_values, max_size=5)
                                 | st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=8),
                                                   json_values, max_size=4)
                                 | json_scalars)
    if draw(st.integers(0, 4)):
        request["id"] = draw(json_values)
    return request


def bodies(methods: list[str]) -> st.SearchStrategy[bytes]:
    one = requests(methods)
    single = one.map(lambda r: json.dumps(r).encode())
    return st.one_of(                       # well-formed requests reach the handlers: weigh them
        single, single, single, single,
        st.lists(one, max_size=5).map(lambda rs: json.dumps(rs).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        one.map(lambda r: json.dumps(r).encode()).flatmap(
            lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),          # cut short
    )


def check_reply(status: int, body: bytes) -> None:
    assert status in HTTP_STATUSES, (status, body[:300])
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    if not body.strip():
        return
    try:
        reply = json.loads(body)
    except ValueError:
        return                                  # a plain HTTP error page
    for item in reply if isinstance(reply, list) else [reply]:
        if isinstance(item, dict) and isinstance(item.get("error"), dict):
            note(f"RPC error {item['error'].get('code')}")
            assert item["error"].get("code") != RPC_INTERNAL_ERROR, item
        elif isinstance(item, dict) and "result" in item:
            note("RPC result")


def note(what: str) -> None:
    """Count an outcome for `pytest --hypothesis-show-statistics` (how deep the bodies get)."""
    if currently_in_test_context():
        event(what)


# ------------------------------------------------------------------------------ the tests

@pytest.fixture(scope="module")
def body_strategy(target: Target) -> st.SearchStrategy[bytes]:
    return bodies(target.methods)


@settings(max_examples=EXAMPLES)
@given(data=st.data(), path=st.sampled_from(["/", "/wallet/w", "/wallet/nope"])
       | st.text(max_size=10).map(lambda t: "/wallet/" + quote(t))
       | st.binary(max_size=6).map(lambda b: "/wallet/" + "".join(f"%{x:02x}" for x in b)))
def test_fuzz_json_rpc_bodies(target: Target, data: st.DataObject, path: str) -> None:
    body = data.draw(bodies(target.methods))
    status, reply = target.post(path, body)
    check_reply(status, reply)
    good_status, good = target.post("/", b'{"method": "getblockcount", "params": [], "id": 1}')
    assert good_status == 200 and json.loads(good)["result"] >= 3, good
    assert process_pids(target.node) == target.pids          # nothing died or was restarted


def test_the_property_can_fail(target: Target) -> None:
    """check_reply refuses an internal error and a traceback; a good batch passes."""
    with pytest.raises(AssertionError):
        check_reply(500, b'{"result": null, "error": {"code": -32603, "message": "x"}, "id": 1}')
    with pytest.raises(AssertionError):
        check_reply(500, b"Traceback (most recent call last):\n")
    status, body = target.post("/wallet/w", json.dumps(
        [{"method": "getbalance", "id": 1}, {"method": "getblockhash", "params": [0], "id": 2}]
    ).encode())
    check_reply(status, body)
    assert status == 200 and [r["error"] for r in json.loads(body)] == [None, None]
    assert Path(target.node.cookie_path).exists()


def test_an_undecodable_wallet_path_is_not_an_internal_error(target: Target) -> None:
    """Found by the fuzzer: /wallet/%ff raised UnicodeDecodeError, and its text went to any
    client as an internal error (issue #11 item 6). Now it is a clean refusal."""
    for path in ("/wallet/%ff", "/wallet/%C0%80", "/wallet/w%80"):
        status, body = target.post(path, b'{"method": "getbalance", "params": [], "id": 1}')
        check_reply(status, body)
        assert json.loads(body)["error"]["code"] in (-18, -32600), body
        assert b"Unicode" not in body and b"codec" not in body
    conn = http.client.HTTPConnection("127.0.0.1", target.node.rpc_port, timeout=10)
    try:
        conn.request("POST", "/wallet/%ff", body=b"{}")           # no credentials
        response = conn.getresponse()
        assert b"Unicode" not in response.read() and response.status != 500
    finally:
        conn.close()
