"""Functional: CleanCoin behaves like bitcoind where it says it does (issue 15, items 1-11).

The same tests for CleanCoind and CleanCoin-node (framework.NODE_EXECUTABLE). To stay fast,
one pair of nodes serves most items in file order (pytest runs a module's tests in the order
written): `net.node` holds the funded wallet "w" (and "other"), `net.peer` has no wallet and
a conf file with bitcoind-only settings. Item 1 and `stop`'s hidden wait use a node of their
own; bad command lines are single short runs that fail before anything starts.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from framework import OTHER_ADDRESS, TestNode, node_command, resolve_executable, wait_until
from cleancoin.components.rpc.errors import RpcError

NODE_ARGS = ("-norest=0",                  # the double negative: -rest (item 8)
             "-addnode=", "-addnode= ",      # empty values are skipped (item 7)
             "-uacomment=functional test")   # item 11


@dataclass
class Net:
    node: TestNode
    peer: TestNode
    address: str          # where the node's blocks paid (wallet "w")

    def w(self, method: str, *args: Any, **named: Any) -> Any:
        return self.node.client.call(method, *args, wallet="w", **named)

    def other(self, method: str, *args: Any, **named: Any) -> Any:
        return self.node.client.call(method, *args, wallet="other", **named)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("compat")
    node = TestNode(0, base, NODE_ARGS)
    peer = TestNode(1, base, ("-disablewallet",))
    # bitcoind-only settings and a negation in the conf file: warnings, not errors (item 8).
    (peer.datadir / "CleanCoin.conf").write_text("fallbackfee=0.0002\nrpcworkqueue=64\n[regtest]\nnolisten=1\n")
    try:
        node.start()
        peer.start()
        node.rpc.createwallet("w")
        node.rpc.createwallet("other")
        address = node.client.call("getnewaddress", wallet="w")
        node.rpc.generatetoaddress(103, address)
        node.rpc.syncwithvalidationinterfacequeue()
        yield Net(node, peer, address)
    finally:
        node.cleanup()
        peer.cleanup()


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def run(*args: str, executable: str | None = None) -> subprocess.CompletedProcess[str]:
    command = node_command(*args) if executable is None else [resolve_executable(executable), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


# -- item 1 ----------------------------------------------------------------------------------

def test_nowallet_loads_no_wallet_not_even_the_startup_list(tmp_path: Path) -> None:
    """-nowallet is "no -wallet" (it used to load a wallet named "0" and fail), and as in
    bitcoind it also skips the load_on_startup list; without it the list loads again. The
    end uses `stop`'s hidden wait (item 11): the answer comes after the wait."""
    node = TestNode(2, tmp_path)
    try:
        node.start()
        node.client.call("createwallet", wallet_name="a", load_on_startup=True)
        assert node.stop() == 0
        node.start(["-nowallet"])
        assert node.rpc.listwallets() == []
        assert node.rpc.loadwallet("a")["name"] == "a"     # the wallet is enabled, just not loaded
        assert node.stop() == 0
        node.start()
        assert node.rpc.listwallets() == ["a"]
        started = time.monotonic()
        assert node.client.call("stop", 300) == "CleanCoin server stopping"
        assert time.monotonic() - started >= 0.3
        assert node.process is not None and node.process.wait(20) == 0
        node.process = None
    finally:
        node.cleanup()


def test_stop_answers_and_the_node_shuts_down_cleanly(tmp_path: Path) -> None:
    """`stop` answers before the node goes, with no pause for the reply (the RPC server's
    graceful stop waits for it), and the process ends without the interpreter's teardown
    (cli/process_exit.py) yet with everything done: status 0, the last log line written, the
    pid file and the cookie removed. Three rounds: a reply lost to a race would show."""
    node = TestNode(3, tmp_path)
    try:
        for _ in range(3):
            node.start()
            assert node.client.call("stop") == "CleanCoin server stopping"
            assert node.process is not None and node.process.wait(20) == 0
            node.process = None
            assert node.debug_log().rstrip().endswith("Shutdown: done")
            assert not (node.netdatadir / ".cookie").exists()
            assert not list(node.netdatadir.glob("*.pid"))
    finally:
        node.cleanup()


# -- items 4 and 2 ---------------------------------------------------------------------------

def test_unconfirmed_transactions_say_whether_they_are_trusted(net: Net) -> None:
    """listtransactions and gettransaction carry bitcoind's `trusted` while a transaction is
    unconfirmed (our own send: trusted; a payment from elsewhere: not), and blockhash,
    blockheight, blockindex once it is confirmed."""
    to = net.other("getnewaddress")
    txid = net.w("sendtoaddress", to, 1)
    net.node.rpc.syncwithvalidationinterfacequeue()      # item 11: "other" has seen it now
    sent = [e for e in net.w("listtransactions") if e["txid"] == txid]
    received = [e for e in net.other("listtransactions") if e["txid"] == txid]
    assert sent and all(e["trusted"] is True and e["confirmations"] == 0 for e in sent)
    assert received and all(e["trusted"] is False for e in received)
    assert net.w("gettransaction", txid)["trusted"] is True
    assert net.other("gettransaction", txid)["trusted"] is False
    block = net.node.rpc.generatetoaddress(1, net.address)[0]
    net.node.rpc.syncwithvalidationinterfacequeue()
    confirmed = [e for e in net.other("listtransactions") if e["txid"] == txid][0]
    assert "trusted" not in confirmed
    assert confirmed["blockhash"] == block and confirmed["blockindex"] == 1
    assert confirmed["blockheight"] == net.node.rpc.getblockcount()


def test_abandoning_an_ineligible_transaction_is_minus_5(net: Net) -> None:
    """bitcoind answers RPC_INVALID_ADDRESS_OR_KEY (-5) for a transaction that cannot be
    abandoned (here: confirmed), not -4."""
    confirmed = [e for e in net.w("listtransactions") if e["category"] == "send"][0]["txid"]
    error = rpc_error(net.w, "abandontransaction", confirmed)
    assert (error.code, error.message) == (-5, "Transaction not eligible for abandonment")
    error = rpc_error(net.w, "abandontransaction", "00" * 32)
    assert (error.code, error.message) == (-5, "Invalid or non-wallet transaction id")


# -- item 3 ----------------------------------------------------------------------------------

def test_restoring_a_file_that_is_not_a_wallet(net: Net) -> None:
    """-18 "Wallet file verification failed ... Data is not in recognized format." (it was
    -32603 with SQLite's text) for a non-SQLite file and for a SQLite file that is not a
    wallet; nothing is left behind (the .lock was), so the name restores a real backup next."""
    wallets = net.node.netdatadir / "wallets"
    garbage = wallets / "garbage.bak"
    garbage.write_bytes(b"this is not a wallet\n" * 200)
    other_db = wallets / "other.sqlite"
    with sqlite3.connect(other_db) as db:
        db.execute("CREATE TABLE t (x)")
    for source in (garbage, other_db):
        error = rpc_error(net.node.rpc.restorewallet, "restored", str(source))
        assert error.code == -18
        assert error.message == (f"Wallet file verification failed. Failed to load database path "
                                 f"'{wallets / 'restored'}'. Data is not in recognized format.")
        assert not (wallets / "restored").exists()
    backup = wallets / "w.bak"
    net.w("backupwallet", str(backup))
    assert net.node.rpc.restorewallet("restored", str(backup)) == {"name": "restored"}
    assert net.node.client.call("getwalletinfo", wallet="restored")["walletname"] == "restored"
    net.node.rpc.unloadwallet("restored")


# -- item 5 ----------------------------------------------------------------------------------

def test_lockunspent_locks_in_memory_unless_persistent(net: Net) -> None:
    """bitcoind's default is a lock for this session only; `persistent` stores it. An unload
    (or a restart) forgets the first and keeps the second; unlocking removes either."""
    coins = sorted(net.w("listunspent"), key=lambda u: (u["txid"], u["vout"]))[:2]
    temporary, lasting = ({"txid": c["txid"], "vout": c["vout"]} for c in coins)
    assert net.w("lockunspent", False, [temporary]) is True
    assert net.w("lockunspent", False, [lasting], True) is True
    assert sorted(net.w("listlockunspent"), key=lambda u: (u["txid"], u["vout"])) == \
        sorted([temporary, lasting], key=lambda u: (u["txid"], u["vout"]))
    error = rpc_error(net.w, "lockunspent", False, [temporary])
    assert (error.code, error.message) == (-8, "Invalid parameter, output already locked")
    net.node.rpc.unloadwallet("w")
    net.node.rpc.loadwallet("w")
    assert net.w("listlockunspent") == [lasting]
    assert net.w("lockunspent", True) is True
    assert net.w("listlockunspent") == []


# -- item 6 and 11 (uacomment, setban) -------------------------------------------------------

def test_peer_permissions_manual_onetry_user_agent_and_bans(net: Net) -> None:
    """getpeerinfo has `permissions` (none granted here); `addnode onetry` makes a "manual"
    connection, as bitcoind's; -uacomment shows in the user agent; setban/listbanned/
    clearbanned ban an address and drop its connections."""
    net.peer.rpc.addnode(net.node.p2p_addr, "onetry")
    wait_until(lambda: net.node.rpc.getconnectioncount() == 1 and net.peer.rpc.getconnectioncount() == 1,
               what="connection")
    wait_until(lambda: net.peer.rpc.getpeerinfo()[0]["subver"], what="version handshake")
    outbound = net.peer.rpc.getpeerinfo()[0]
    inbound = net.node.rpc.getpeerinfo()[0]
    assert (outbound["connection_type"], outbound["inbound"], outbound["permissions"]) == ("manual", False, [])
    assert (inbound["connection_type"], inbound["inbound"], inbound["permissions"]) == ("inbound", True, [])
    assert outbound["subver"] == "/CleanCoin:0.1.0(functional test)/"
    assert net.node.rpc.getnetworkinfo()["subversion"] == outbound["subver"]

    assert net.node.rpc.setban("127.0.0.1", "add") is None
    banned = net.node.rpc.listbanned()
    assert [b["address"] for b in banned] == ["127.0.0.1/32"] and banned[0]["ban_duration"] == 86400
    wait_until(lambda: net.node.rpc.getconnectioncount() == 0, what="the banned peer dropped")
    error = rpc_error(net.node.rpc.setban, "127.0.0.1", "add")
    assert (error.code, error.message) == (-23, "Error: IP/Subnet already banned")
    net.node.rpc.setban("127.0.0.1", "remove")
    assert net.node.rpc.listbanned() == []
    net.node.rpc.setban("127.0.0.2", "add", 60)
    assert net.node.rpc.listbanned()[0]["ban_duration"] == 60
    net.node.rpc.clearbanned()
    assert net.node.rpc.listbanned() == []


# -- item 7 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arg, option", [("-addnode=1.2.3.4:notaport", "-addnode"),
                                         ("-connect=garbage:x", "-connect"),
                                         ("-addnode=[::1", "-addnode")])
def test_bad_peer_addresses_are_init_errors(tmp_path: Path, arg: str, option: str) -> None:
    """A bad -addnode/-connect stops start-up with one "Error: ..." line (it was a 20-line
    traceback); empty ones are skipped (the shared node was started with two)."""
    out = run("-regtest", f"-datadir={tmp_path}", arg)
    value = arg.partition("=")[2]
    expected = (f"Error: Invalid port specified in {option}: '{value}'" if "]" not in value and "[" not in value
                else f"Error: Invalid {option} address: '{value}'")
    assert (out.returncode, out.stderr) == (1, expected + "\n")


def test_empty_peer_addresses_are_skipped(net: Net) -> None:
    assert net.node.process is not None and net.node.process.poll() is None
    assert net.node.rpc.getaddednodeinfo() == []           # the node was given -addnode= and "-addnode= "
    assert "Traceback" not in net.node.debug_log()


# -- item 8 ----------------------------------------------------------------------------------

def test_negations_and_unknown_conf_settings_as_bitcoind(net: Net, tmp_path: Path) -> None:
    """`-norest=0` (the shared node's) is -rest; `nolisten=1` in the peer's conf file is
    -nolisten; bitcoind-only conf settings are logged and ignored; -bind needs an address."""
    with urllib.request.urlopen(f"http://127.0.0.1:{net.node.rpc_port}/rest/chaininfo.json", timeout=10) as r:
        assert r.status == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", net.peer.p2p_port), timeout=5).close()
    log = net.peer.debug_log()
    assert "Ignoring unknown configuration value fallbackfee" in log
    assert "Ignoring unknown configuration value rpcworkqueue" in log
    bad = run("-regtest", f"-datadir={tmp_path}", "-bind=notanip")
    assert (bad.returncode, bad.stderr) == (1, "Error: Cannot resolve -bind address: 'notanip'\n")
    unknown = run("-regtest", f"-datadir={tmp_path}", "-fallbackfee=0.1")     # the command line stays strict
    assert unknown.returncode == 1 and "Invalid parameter -fallbackfee" in unknown.stderr


# -- item 9 ----------------------------------------------------------------------------------

def test_version_and_the_cli_helpers(net: Net) -> None:
    """-version of the node and of CleanCoin-wallet; CleanCoin-cli -getinfo, -netinfo and
    -generate, as bitcoin-cli's."""
    for out in (run("-version"), run("-version", executable="CleanCoin-wallet")):
        assert out.returncode == 0 and " version v" in out.stdout.splitlines()[0], out
    cli = ["-regtest", f"-datadir={net.node.datadir}", f"-rpcport={net.node.rpc_port}"]
    info = run(*cli, "-rpcwallet=w", "-getinfo", executable="CleanCoin-cli")
    assert info.returncode == 0, info.stderr
    assert "Chain: regtest" in info.stdout and f"Blocks: {net.node.rpc.getblockcount()}" in info.stdout
    assert 'Wallet: "w"' in info.stdout and "Balance: " in info.stdout
    several = run(*cli, "-getinfo", executable="CleanCoin-cli")
    assert "Balances" in several.stdout and " w\n" in several.stdout and " other\n" in several.stdout
    netinfo = run(*cli, "-netinfo", "1", executable="CleanCoin-cli")
    assert netinfo.returncode == 0 and "ipv4    ipv6   total" in netinfo.stdout
    before = net.node.rpc.getblockcount()
    generated = run(*cli, "-rpcwallet=w", "-generate", "2", executable="CleanCoin-cli")
    assert generated.returncode == 0, generated.stderr
    assert net.node.rpc.getblockcount() == before + 2 and '"blocks": [' in generated.stdout


# -- item 10 ---------------------------------------------------------------------------------

def test_warnings_help_and_validateaddress(net: Net) -> None:
    """`warnings` is a list (bitcoind >= 28); every method's help has Result and Examples;
    validateaddress judges a Base58 string as bitcoind does (it said "mixed case")."""
    assert net.node.rpc.getblockchaininfo()["warnings"] == []
    assert net.node.rpc.getnetworkinfo()["warnings"] == []
    listing = net.node.rpc.help()
    names = [line.split()[0] for line in listing.splitlines() if line and not line.startswith("==")]
    assert "sendtoaddress" in names and "getblock" in names
    for name in [*names, "setmocktime", "syncwithvalidationinterfacequeue"]:
        text = net.node.rpc.help(name)
        assert "\nResult:\n" in text and f"\nExamples:\n> CleanCoin-cli {name}" in text, name
    assert "wait" not in net.node.rpc.help("stop")                   # stop's wait is hidden
    cases = {
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2": "Invalid or unsupported Base58-encoded address.",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3": "Invalid checksum or length of Base58 address (P2PKH or P2SH)",
        "not an address": "Invalid or unsupported Segwit (Bech32) or Base58 encoding.",
        net.address[:-1] + ("q" if net.address[-1] != "q" else "p"): "Invalid Bech32 checksum",
        net.address[:6] + net.address[6:].upper(): "Invalid character or mixed case",
    }
    for address, message in cases.items():
        answer = net.node.rpc.validateaddress(address)
        assert answer["isvalid"] is False and answer["error"] == message, (address, answer)


# -- item 11 ---------------------------------------------------------------------------------

def test_getrpcinfo_and_setmocktime(net: Net) -> None:
    info = net.node.rpc.getrpcinfo()
    assert [c["method"] for c in info["active_commands"]] == ["getrpcinfo"]
    assert info["logpath"] == str(net.node.netdatadir / "debug.log")
    tip_time = net.node.rpc.getblockheader(net.node.rpc.getbestblockhash())["time"]
    mock = tip_time + 1000
    assert net.node.rpc.setmocktime(mock) is None
    block = net.node.rpc.generatetoaddress(1, net.address)[0]
    assert net.node.rpc.getblockheader(block)["time"] == mock
    error = rpc_error(net.node.rpc.setmocktime, -1)
    assert (error.code, error.message) == (-8, "Mocktime cannot be negative: -1.")
    net.node.rpc.setmocktime(0)


def test_scantxoutset_and_descriptors(net: Net) -> None:
    """scantxoutset in CleanCoin's descriptor forms, addr() and pkh(), with bitcoind's checksum."""
    by_address = net.node.rpc.scantxoutset("start", [f"addr({net.address})"])
    assert by_address["success"] is True and len(by_address["unspents"]) >= 100
    assert by_address["total_amount"] == sum(u["amount"] for u in by_address["unspents"])
    first = by_address["unspents"][0]
    assert net.node.rpc.gettxout(first["txid"], first["vout"])["scriptPubKey"]["address"] == net.address
    described = net.node.rpc.getdescriptorinfo(f"addr({net.address})")
    assert first["desc"] == described["descriptor"] == f"addr({net.address})#{described['checksum']}"
    pubkey = net.w("getaddressinfo", net.address)["pubkey"]
    by_key = net.node.rpc.scantxoutset("start", [{"desc": f"pkh({pubkey})"}])
    assert {(u["txid"], u["vout"]) for u in by_key["unspents"]} == \
        {(u["txid"], u["vout"]) for u in by_address["unspents"]}
    assert net.node.rpc.scantxoutset("status") is None and net.node.rpc.scantxoutset("abort") is False
    # A wrong checksum: its last character changed (to one it is not: 1 in 32 ends in "x").
    wrong = described["descriptor"][:-1] + ("x" if described["descriptor"][-1] != "x" else "q")
    for bad in (f"wpkh({pubkey})", wrong):
        assert rpc_error(net.node.rpc.scantxoutset, "start", [bad]).code == -5


def test_signrawtransactionwithwallet(net: Net) -> None:
    coin = net.w("listunspent")[0]
    outputs = {OTHER_ADDRESS: coin["amount"] - Decimal("0.001")}
    raw = net.node.rpc.createrawtransaction([{"txid": coin["txid"], "vout": coin["vout"]}], outputs)
    signed = net.w("signrawtransactionwithwallet", raw)
    assert signed["complete"] is True and "errors" not in signed
    assert net.node.rpc.sendrawtransaction(signed["hex"]) == net.node.rpc.decoderawtransaction(signed["hex"])["txid"]
    foreign = net.node.rpc.createrawtransaction([{"txid": "11" * 32, "vout": 0}], {OTHER_ADDRESS: 1})
    unsigned = net.w("signrawtransactionwithwallet", foreign)
    assert unsigned["complete"] is False
    assert [e["error"] for e in unsigned["errors"]] == ["Input not found or already spent"]


def test_submitheader(net: Net) -> None:
    tip = net.node.rpc.getblockcount()
    block = net.node.rpc.generateblock(net.address, [], False)["hex"]
    header = block[:160]
    assert net.node.rpc.submitheader(header) is None
    tips = {t["status"]: t for t in net.node.rpc.getchaintips()}
    assert tips["headers-only"]["height"] == tip + 1
    assert rpc_error(net.node.rpc.submitheader, "00" * 10).code == -22
    orphan = header[:8] + "11" * 32 + header[72:]
    error = rpc_error(net.node.rpc.submitheader, orphan)
    assert error.code == -25 and error.message.startswith("Must submit previous header (")
    net.node.rpc.generatetoaddress(2, net.address)      # past the header: out of IBD again


def test_rest_interface(net: Net) -> None:
    """-rest: bitcoind's paths, formats and errors, no credentials; absent without -rest."""
    base = f"http://127.0.0.1:{net.node.rpc_port}/rest"

    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()

    best = net.node.rpc.getbestblockhash()
    status, kind, body = get(f"/block/{best}.hex")
    assert (status, kind, body.decode().strip()) == (200, "text/plain; charset=utf-8", net.node.rpc.getblock(best, 0))
    status, _, body = get(f"/block/{best}.bin")
    assert status == 200 and body.hex() == net.node.rpc.getblock(best, 0)
    height = net.node.rpc.getblockcount()
    status, _, body = get(f"/blockhashbyheight/{height}.json")
    assert status == 200 and best in body.decode()
    status, _, body = get(f"/headers/{net.node.rpc.getblockhash(1)}.json?count=3")
    assert status == 200 and body.decode().count('"hash"') == 3
    # A count of 5000 digits is a clean 400 that does not echo it, not a 500.
    status, _, body = get(f"/headers/{net.node.rpc.getblockhash(1)}.json?count={'9' * 5000}")
    assert status == 400 and len(body) < 200, (status, body[:200])
    status, _, body = get(f"/blockhashbyheight/{'9' * 5000}.json")
    assert status == 400 and len(body) < 200, (status, body[:200])
    assert get("/block/xyz.json")[0] == 400
    status, _, body = get(f"/block/{best}.txt")
    assert (status, body) == (404, b"output format not found (available: .bin, .hex, .json)\r\n")
    assert get(f"/block/{'00' * 32}.json")[0] == 404
    peer_rest = f"http://127.0.0.1:{net.peer.rpc_port}/rest/chaininfo.json"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(peer_rest, timeout=10)
    assert info.value.code == 404


def test_importdescriptors_is_absent(net: Net) -> None:
    """Deliberately absent (docs/node.md: HD-only wallets); the error is bitcoind's for an
    unknown method."""
    error = rpc_error(net.w, "importdescriptors", [{"desc": f"addr({net.address})", "timestamp": "now"}])
    assert (error.code, error.message) == (-32601, "Method not found")
