"""Functional, both executables: wallet names as an RPC user's weapon.

A wallet's name is its directory's name in `<netdatadir>/wallets/`, which also holds the
start-up list (`settings.json`, written through `settings.json.tmp`) and, under
CleanCoin-node, the wallet process's `debug.log`. Names that escape the directory ("../x",
"/x", "x/y", NUL) were refused already; these tests are the names that stayed inside it and
still did harm, sent by a user the operator allowed `createwallet` and nothing else
(-rpcwhitelist): refused since 12-07 (components/wallet/store.py, RESERVED_NAMES)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from framework import WATCHER, WATCHER_PASSWORD, WATCHER_RPCAUTH, TestNode, post_json_rpc

#: What the provisioning user may call; the cookie's user (no list) may call everything.
PROVISIONER_METHODS = "createwallet,loadwallet,listwalletdir"


@dataclass
class Target:
    node: TestNode

    def provision(self, method: str, *params: object) -> dict[str, object]:
        """A call as the user who may only create, load and list wallets: its JSON-RPC reply."""
        status, body = post_json_rpc(self.node.rpc_port, {"id": 1, "method": method, "params": list(params)},
                                     WATCHER, WATCHER_PASSWORD)
        assert status in (200, 500), (status, body)
        return json.loads(body)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    node = TestNode(0, tmp_path_factory.mktemp("wallet-names"),
                    [f"-rpcauth={WATCHER_RPCAUTH}", f"-rpcwhitelist={WATCHER}:{PROVISIONER_METHODS}",
                     "-rpcwhitelistdefault=0"])
    node.start()
    try:
        yield Target(node)
        assert node.stop() == 0
    finally:
        node.cleanup()


def test_a_wallet_cannot_take_the_place_of_a_file_of_the_wallets_directory(target: Target) -> None:
    """Before 12-07 `createwallet settings.json` made a wallet directory where the start-up list
    belongs: every later `load_on_startup` answered "could not be updated" and no wallet loaded
    at the next start, for good; `settings.json.tmp` did the same to the list's next version;
    a `debug.log` wallet made by CleanCoind kept a later CleanCoin-node's wallet process from
    opening its log; and "w\\n" passed the name check (a `$` matches before a final newline),
    a second wallet that prints as "w". Each is refused now, the operator's start-up list works."""
    wallets = target.node.netdatadir / "wallets"
    for name in ("settings.json", "settings.json.tmp", "debug.log", "w\n"):
        for method in ("createwallet", "loadwallet"):
            reply = target.provision(method, name)
            error = reply["error"]
            assert isinstance(error, dict) and error["code"] == -4, (name, method, reply)
            assert "Invalid wallet name" in str(error["message"]), (name, method, reply)
        assert not (wallets / name).is_dir(), name
    # The operator (the cookie's user) still keeps a start-up list, in a regular file.
    created = target.node.rpc.createwallet("a", False, False, "", False, None, True)
    assert created == {"name": "a"}                 # no "could not be updated" warning
    assert json.loads((wallets / "settings.json").read_text()) == {"wallet": ["a"]}
    assert target.provision("listwalletdir")["result"] == {"wallets": [{"name": "a"}]}


def test_a_wallet_name_in_the_uri_is_only_compared_with_the_loaded_ones(target: Target) -> None:
    """Held (12-07): a /wallet/<name> URI that decodes to a path ("..%2F", "%2F", NUL) reaches
    no path work in either process: the name is looked up among the loaded wallets, -18,
    while the plain name answers."""
    node = target.node
    node.rpc.createwallet("u")
    cookie_user, _, cookie_password = node.cookie_path.read_text().partition(":")
    call = {"id": 1, "method": "getwalletinfo", "params": []}
    for path in ("/wallet/..%2Fwallets%2Fu", "/wallet/.%2Fu", "/wallet/%2Fu", "/wallet/u%00", "/wallet/u%2F"):
        status, body = post_json_rpc(node.rpc_port, call, cookie_user, cookie_password, path=path)
        assert status == 500 and json.loads(body)["error"]["code"] == -18, (path, status, body)
    status, body = post_json_rpc(node.rpc_port, call, cookie_user, cookie_password, path="/wallet/u")
    assert status == 200 and json.loads(body)["result"]["walletname"] == "u", body
